"""The `resnets` command: parse arguments, call the library, print. One module per subcommand group;
each defines `register(subparsers)` and sets `handler` on its parser. No logic lives here that the
Python API lacks."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..runtime import Preempted

# Each module registers its subcommands; order is the order of `resnets --help`.
COMMAND_MODULES = ("models", "train", "predict", "export", "bench", "detect", "analyze")


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnets", description="Deep Residual Learning (He et al. 2016)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("resnets: interrupted", file=sys.stderr)
        return 130
    except Preempted as stopped:  # SIGTERM/SIGUSR1: a checkpoint was written; the same command continues
        print(f"resnets {args.command}: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except BrokenPipeError:  # `resnets models | head`: the reader left; say nothing more
        sys.stdout = None  # type: ignore[assignment]  # keeps the interpreter from flushing into the closed pipe
        return 0
    except (CommandError, ValueError, ArithmeticError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"resnets {args.command}: error: {exc}", file=sys.stderr)
        return 2
