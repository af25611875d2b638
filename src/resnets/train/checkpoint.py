"""Checkpoints: atomic writes (temporary file + rename) and weights-only reads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Any) -> Path:
    """Call write(file_object) on a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    return atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


CHECKPOINT_FORMAT = "resnets-train-checkpoint"
CHECKPOINT_VERSION = 1


def save_training_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             schedule: Any, loader: Any, ema: Any, scaler: Any, iteration: int, epoch: int,
                             best_error: float, elapsed_seconds: float, recipe: Any, options: Any,
                             meta: dict[str, Any] | None = None) -> Path:
    """Everything needed to continue bit-exactly: weights, optimizer, schedule, data position, RNG."""
    from dataclasses import asdict

    from ..models import model_config
    from .runtime import rng_state

    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": model_config(model),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "loader": loader.state_dict(), "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict(), "iteration": iteration, "epoch": epoch, "best_error": best_error,
        "elapsed_seconds": elapsed_seconds, "rng": rng_state(), "recipe": recipe.to_dict(),
        "options": asdict(options),
        "meta": meta or {},  # classes and preprocessing, so that predict/eval work from any checkpoint
    }
    return atomic_torch_save(state, path)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files raise several types
        raise ValueError(f"{path}: cannot read this checkpoint ({str(exc).strip().splitlines()[0][:200]}); "
                         "it may be truncated; an earlier one is checkpoints/best.pt") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a resnets training checkpoint (for weight files use resnets.load_model)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}, this resnets reads "
                         f"{CHECKPOINT_VERSION}")
    return state


def load_training_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                             loader: Any, ema: Any, scaler: Any) -> dict[str, Any]:
    """Restore a run in place; refuses a checkpoint of another architecture with one clear error."""
    from ..models import model_config
    from ..models.weights import import_state_dict
    from .runtime import set_rng_state

    state = read_training_checkpoint(path)
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
