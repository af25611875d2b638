"""Training checkpoints: everything needed to continue a run bit-exactly, written atomically and verified (see
`io.verify_torch_file`), read weights-only. Before `last.pt` is replaced, the intact one it replaces is kept as
`previous.pt`, so a checkpoint damaged later on disk still leaves a good one to resume from."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..io import UnreadableFileError, atomic_torch_save, load_torch_file
from ..models import import_state_dict, model_config
from ..runtime import rng_state, set_rng_state

CHECKPOINT_FORMAT = "resnets-train-checkpoint"
CHECKPOINT_VERSION = 1


def save_training_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             schedule: Any, loader: Any, ema: Any, scaler: Any, iteration: int, epoch: int,
                             best_error: float, elapsed_seconds: float, recipe: Any, options: Any,
                             meta: dict[str, Any] | None = None, keep_previous: Path | None = None) -> Path:
    """Everything needed to continue bit-exactly: weights, optimizer, schedule, data position, RNG. With
    `keep_previous`, the file now at `path` is kept there (a hard link, else a copy) before it is replaced."""
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": model_config(model),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "loader": loader.state_dict(), "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict(), "iteration": iteration, "epoch": epoch, "best_error": best_error,
        "elapsed_seconds": elapsed_seconds, "rng": rng_state(), "recipe": recipe.to_dict(),
        "options": asdict(options),
        "meta": meta or {},  # classes and preprocessing, so that predict/eval work from any checkpoint
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
    state = load_torch_file(path, "checkpoint", "it may be truncated; an earlier one is checkpoints/best.pt")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a resnets training checkpoint (for weight files use resnets.load_model)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}, this resnets reads "
                         f"{CHECKPOINT_VERSION}")
    return state


def read_intact_checkpoint(candidates: Sequence[Path], log: Callable[[str], Any] = print,
                           read: Callable[[Path], dict[str, Any]] = read_training_checkpoint
                           ) -> tuple[Path, dict[str, Any]]:
    """The first of `candidates` (newest first) that exists and verifies; a damaged one is reported and skipped.
    One error naming every candidate and what was wrong with it when none is intact. `read`: the reader of one
    checkpoint kind (classification by default; detection runs pass theirs)."""
    problems = []
    for path in candidates:
        if not path.is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            state = read(path)
        except (UnreadableFileError, ValueError) as error:
            problems.append(str(error))
            log(f"warning: {error}")
            continue
        if problems:
            log(f"resuming from the intact checkpoint {path} (iteration {state['iteration']}) instead")
        return path, state
    raise UnreadableFileError(f"no intact checkpoint to resume from: {'; '.join(problems)}; start the run again "
                              "without --resume in a new --out")


def load_training_checkpoint(state: dict[str, Any], path: Path, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, schedule: Any, loader: Any, ema: Any,
                             scaler: Any) -> dict[str, Any]:
    """Restore a run in place from a checkpoint read by `read_intact_checkpoint`; refuses a checkpoint of another
    architecture with one clear error."""
    if state["model_config"] != model_config(model):
        theirs, ours = state["model_config"], model_config(model)
        diff = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs run {ours.get(k)!r}"
                         for k in ours if theirs.get(k) != ours.get(k))
        raise ValueError(f"{path} was made by another architecture ({diff}); resume with the same options")
    import_state_dict(model, state["model"], source=f"checkpoint {path}")
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    loader.load_state_dict(state["loader"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state
