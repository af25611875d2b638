"""How a run is described in reports and shipped metadata: its data copy (with the JPEG quality measured from the
files), recipe, hardware, duration and the `resnets train` command that reproduces it; plus the markdown table."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import UnreadableFileError, read_json
from ..models import model_from_config
from ..runs import RunDirectoryError
from ..train.recipes import Recipe, RunOptions, get_recipe
from ..train.schedule import milestone_iterations

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
# IJG (libjpeg) standard luminance quantisation table, natural order: encoders scale it by the quality setting.
IJG_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def read_run_json(path: Path) -> Any:
    try:
        return read_json(path)
    except UnreadableFileError as error:
        raise RunDirectoryError(f"{error}; regenerate it with the command that wrote {path.parent}") from None


def parameter_count(config: dict[str, Any]) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in model_from_config(config).parameters())


def jpeg_quality(folder: Path) -> int | None:
    """The IJG quality setting whose scaled luminance table equals that of the first JPEG in `folder`, if any."""
    try:
        from PIL import Image

        first = next(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        with Image.open(first) as image:
            table = tuple(image.quantization[0])  # type: ignore[attr-defined]
    except (StopIteration, OSError, AttributeError, KeyError):
        return None
    for quality in range(1, 101):
        scale = 5000 // quality if quality < 50 else 200 - 2 * quality
        if tuple(min(255, max(1, (b * scale + 50) // 100)) for b in IJG_LUMINANCE) == table:
            return quality
    return None


def data_copy(data: dict[str, Any]) -> str:
    """E.g. "CIFAR-10 (JPEG q75 copy)" for an image-folder copy, "CIFAR-10 (official binaries)"."""
    name = DATASET_NAMES.get(data.get("dataset", ""), data.get("dataset", "?"))
    source = data.get("source", "")
    folder = re.match(r"image folder (.+?) \((\w+)\)", source)
    if folder:
        quality = jpeg_quality(Path(folder[1])) if folder[2] == "JPEG" else None
        return f"{name} ({folder[2]}{f' q{quality}' if quality else ''} copy)"
    if source.startswith("official binary"):
        return f"{name} (official binaries)"
    return f"{name} ({source or 'source not recorded'})"


def recipe_brief(recipe: dict[str, Any], iterations: int) -> str:
    text = f"{recipe['name']}: lr {recipe['lr']:g}"
    if recipe["schedule"] == "step":
        steps = milestone_iterations(Recipe(milestones=tuple(recipe["milestones"])), iterations)
        text += f" /10 at {', '.join(f'{m:,}' for m in steps)} of {iterations:,} it." if steps else " constant"
    else:
        text += f" {recipe['schedule']}"
    return text + f", batch {recipe['batch_size']}, wd {recipe['weight_decay']:g}"


def training_command(config: dict[str, Any]) -> str:
    """A `resnets train` command line that reproduces the run of config.json (options and recipe)."""
    options, recipe = config["options"], config["recipe"]
    words = ["resnets", "train", "--model", options["model"], "--recipe", recipe["name"]]
    defaults = RunOptions()
    for key in ("pretrained", "dataset", "data", "precision", "seed", "shortcut", "num_classes", "subset",
                "eval_subset", "max_iterations"):
        if options.get(key) is not None and options.get(key) != getattr(defaults, key):
            words += [f"--{key.replace('_', '-')}", str(options[key])]
    for flag in ("deterministic", "compile"):
        if options.get(flag):
            words.append(f"--{flag}")
    try:
        base = get_recipe(recipe["name"], depth=config["model_config"]["depth"]).to_dict()
    except ValueError:  # a recipe name this version does not know: state every field
        base = {}
    for key, value in recipe.items():
        if key not in ("name", "notes", "dataset") and base.get(key) != value:  # dataset: older runs' recipes
            shown = ",".join(f"{v:g}" for v in value) if isinstance(value, list) else value
            words += ["--set", f"{key}={shown}"]
    return shlex.join([*words, "--out", options["out"]])


def thread_counts(*hardware: dict[str, Any]) -> list[int]:
    """The distinct torch thread counts of runs' hardware records, ascending (unrecorded ones left out)."""
    return sorted({record["threads"] for record in hardware if record.get("threads")})


def cpu_name(hardware: Mapping[str, Any]) -> str | None:
    """A hardware record's CPU model, with its family and model numbers where recorded ("AMD EPYC (family 25 model
    17)"); None for a record that names no model."""
    name, generation = hardware.get("cpu_model"), hardware.get("cpu_generation")
    return f"{name} ({generation})" if name and generation else name


def hardware_brief(hardware: dict[str, Any], *others: dict[str, Any]) -> str:
    """The machine a run used; given several runs' records, thread counts that differ read as a range (1-2)."""
    counts = thread_counts(hardware, *others)
    threads = "?" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    device = hardware.get("gpu") or f"CPU {cpu_name(hardware) or hardware.get('cpu', '?')}, {threads} threads"
    count = hardware.get("world_size", 1)
    return f"{f'{count} x ' if count > 1 else ''}{device}, torch {hardware.get('torch', '?')}"


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
