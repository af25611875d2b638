"""Training checkpoints, of every task (classification, detection): everything needed to continue a run bit-exactly,
written atomically and verified (see `io.verify_torch_file`), read weights-only. Before `last.pt` is replaced, the
intact one it replaces is kept as `previous.pt`, so a checkpoint damaged later on disk still leaves a good one to
resume from. Only `train.loop` writes them (tests/test_layers.py checks it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import UnreadableFileError, atomic_torch_save, load_torch_file
from ..models import import_state_dict
from ..runtime import rng_state, set_rng_state

CHECKPOINT_FORMAT = "resnets-train-checkpoint"
# 2: the task's own state (data position, EMA) under "task", the identity of any model under "model_config", the
# run's config.json under "config". Version 1 (classification only) is still read.
CHECKPOINT_VERSION = 2


def save_training_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             schedule: Any, scaler: Any, task_state: dict[str, Any], iteration: int,
                             best_error: float, elapsed_seconds: float, identity: dict[str, Any],
                             meta: dict[str, Any], config: dict[str, Any], keep_previous: Path | None = None) -> Path:
    """Everything needed to continue bit-exactly: weights, optimizer, schedule, the task's data position, RNG.
    `identity`: what a resumed run must match (for a classifier, its model_config, so that predict/eval read the
    checkpoint as weights with `meta`). With `keep_previous`, the file now at `path` is kept there (a hard link, else
    a copy) before it is replaced."""
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": identity,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "task": task_state, "scaler": scaler.state_dict(), "iteration": iteration, "best_error": best_error,
        "elapsed_seconds": elapsed_seconds, "rng": rng_state(), "config": config, "meta": meta,
    }
    if keep_previous is not None and Path(path).is_file():
        keep_copy(Path(path), keep_previous)
    return atomic_torch_save(state, path)


def keep_copy(source: Path, target: Path) -> None:
    staged = target.with_name(f".{target.name}.staged")
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:  # a file system without hard links
        shutil.copy2(source, staged)
    os.replace(staged, target)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    state = load_torch_file(path, "checkpoint", "it may be truncated; an earlier one is checkpoints/previous.pt")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a resnets training checkpoint (for weight files use resnets.load_model)")
    if state.get("version") == 1:  # classification checkpoints written before detection shared the loop
        state["task"] = {"loader": state.pop("loader"), "ema": state.pop("ema")}
    elif state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}, this resnets reads 1 and "
                         f"{CHECKPOINT_VERSION}")
    return state


def read_intact_checkpoint(candidates: Sequence[Path], log: Callable[[str], Any] = print
                           ) -> tuple[Path, dict[str, Any]]:
    """The first of `candidates` (newest first) that exists and verifies; a damaged one is reported and skipped.
    One error naming every candidate and what was wrong with it when none is intact."""
    problems = []
    for path in candidates:
        if not path.is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            state = read_training_checkpoint(path)
        except (UnreadableFileError, ValueError) as error:
            problems.append(str(error))
            log(f"warning: {error}")
            continue
        if problems:
            log(f"resuming from the intact checkpoint {path} (iteration {state['iteration']}) instead")
        return path, state
    raise UnreadableFileError(f"no intact checkpoint to resume from: {'; '.join(problems)}; start the run again "
                              "without --resume in a new --out")


def load_training_checkpoint(state: dict[str, Any], path: Path, *, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, schedule: Any, scaler: Any,
                             identity: dict[str, Any]) -> dict[str, Any]:
    """Restore the loop's part of a run in place from a checkpoint read by `read_intact_checkpoint` (the task
    restores `state["task"]`); refuses a checkpoint of another architecture with one clear error."""
    theirs = state["model_config"]
    if theirs != identity:
        diff = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs run {identity.get(k)!r}"
                         for k in identity if theirs.get(k) != identity.get(k))
        raise ValueError(f"{path} was made by another architecture ({diff}); resume with the same options or choose "
                         "another --out")
    import_state_dict(model, state["model"], source=f"checkpoint {path}")
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state
