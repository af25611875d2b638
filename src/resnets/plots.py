"""Training curves in the style of the paper's Fig. 4 / Fig. 6: train error dashed, test error solid."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .io import atomic_write_bytes


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_error_curves(panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], path: str | Path,
                      eval_key: str = "test_error") -> Path:
    """One panel per group (e.g. "plain", "ResNet"), one colour per run; x in iterations (1e4), y error %."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (title, runs) in zip(axes[0], panels.items(), strict=True):
        for index, (label, records) in enumerate(runs.items()):
            colour = f"C{index}"
            x, y = _series(records, "train_error")
            ax.plot([i / 1e4 for i in x], y, "--", color=colour, linewidth=1)
            x, y = _series(records, eval_key)
            ax.plot([i / 1e4 for i in x], y, "-", color=colour, linewidth=2, label=label)
        ax.set_title(title)
        ax.set_xlabel("iter. (1e4)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("error (%)")
    fig.text(0.5, 0.005, "dashed: training error, solid: " + eval_key.replace("_", " "), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_layer_responses(responses: Mapping[str, Sequence[float]], path: str | Path, sort: bool = False) -> Path:
    """Fig. 7: std of each 3x3 layer's response, one line per model; in layer order, or sorted (descending)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for index, (label, stds) in enumerate(responses.items()):
        values = sorted(stds, reverse=True) if sort else list(stds)
        ax.plot(range(1, len(values) + 1), values, "-", color=f"C{index}", linewidth=1.2, label=label)
    ax.set_xlabel("layer index (sorted by magnitude)" if sort else "layer index (original)")
    ax.set_ylabel("std")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


_AP_KEY = re.compile(r"^(?P<split>[a-z]+)_map_50$")  # box AP@.5 on the held-out split: val_map_50, test_map_50
_SEEDED = re.compile(r"^(?P<name>.+)-s\d+$")  # runs <name>-s<seed> of one backbone share a colour
_COUNTS = {3: "three", 4: "four", 5: "five"}


def plot_detection_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Training loss (left) and box AP@.5 (solid) and AP@[.5:.95] (dashed) on the held-out split (right), and mask
    AP beside it when the records have it (Mask R-CNN). The split comes from the keys: `val_map` (a COCO folder's
    validation images), `test_map` (Penn-Fudan's test photos). One colour per backbone: runs named <name>-s<seed>
    share it and one legend entry."""
    split = next((found["split"] for records in runs.values() for record in records for key in record
                  if (found := _AP_KEY.match(key))), "val")
    masks = any(f"{split}_mask_map" in record for records in runs.values() for record in records)
    groups: dict[str, list[str]] = {}
    for label in runs:
        seeded = _SEEDED.match(label)
        groups.setdefault(seeded["name"] if seeded else label, []).append(label)
    colour = {label: f"C{index}" for index, members in enumerate(groups.values()) for label in members}
    legend = {members[0]: members[0] if len(members) == 1 else f"{name} ({len(members)} runs)"
              for name, members in groups.items()}
    panels = (("", "box "), ("mask_", "mask ")) if masks else (("", ""),)
    fig, (left, *right) = plt.subplots(1, 1 + len(panels), figsize=(5.5 * (1 + len(panels)), 4.2))
    for label, records in runs.items():
        losses = [(r["iteration"], r["loss"]) for r in records if "loss" in r]
        left.plot(*zip(*losses, strict=True), color=colour[label], linewidth=1, label=legend.get(label))
        for ax, (kind, _) in zip(right, panels, strict=True):
            for suffix, style, name in (("_50", "-", "mAP@.5"), ("", "--", "mAP@[.5:.95]")):
                key = f"{split}_{kind}map{suffix}"
                points = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=colour[label], marker="o", markersize=3,
                            label=f"{legend[label]} {name}" if label in legend else None)
    terms = len({key for records in runs.values() for r in records for key in r if key.startswith("loss_")})
    left.set(xlabel="iteration", ylabel=f"training loss (sum of the {_COUNTS.get(terms, terms)})", yscale="log")
    where = {"val": "validation", "test": "test-photo"}.get(split, split)
    for ax, (_, kind) in zip(right, panels, strict=True):
        ax.set(xlabel="iteration", ylabel=f"{where} {kind}mAP (%)")
    for ax in (left, *right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_time_to_accuracy(data: Mapping[str, Any], path: str | Path) -> Path:
    """Test error against wall-clock minutes (left) and epochs (right): `data["recipes"]` recipe -> run -> points
    (epoch, minutes, test_error), one line per run and one colour per recipe; `data["reference"]`, a recipe known by
    its final error only, as a dotted line (and a star at its minutes); `data["thresholds"]` as thin grey lines;
    `data["ylabel"]` names the error (test error by default). y from 10% (lower if the curves or a threshold need it)
    to `data["ymax"]` (40% by default): the early epochs above it are cut, the part that decides the comparison is
    not."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    lowest = min((p["test_error"] for runs in data["recipes"].values() for points in runs.values() for p in points),
                 default=10.0)
    for ax, key, xlabel in zip(axes, ("minutes", "epoch"), ("wall-clock minutes (as recorded)", "epoch"),
                               strict=True):
        for index, (recipe, runs) in enumerate(data["recipes"].items()):
            for number, points in enumerate(runs.values()):
                ax.plot([p[key] for p in points], [p["test_error"] for p in points], "-", color=f"C{index}",
                        linewidth=1.2, marker="o", markersize=2.5,
                        label=f"{recipe} ({len(runs)} run{'s' if len(runs) > 1 else ''})" if number == 0 else None)
        reference = data.get("reference")
        if reference is not None:  # its one point where the axis reaches it (minutes, not 164 epochs), and a line
            ax.axhline(reference["test_error"], color="k", linestyle=":", linewidth=1.2, label=reference["label"])
            if key == "minutes":
                ax.plot(reference["minutes"], reference["test_error"], "k*", markersize=9)
        for threshold in data["thresholds"]:
            ax.axhline(threshold, color="0.6", linewidth=0.6)
        ax.set_xlabel(xlabel)
        ax.set_ylim(min(10.0, lowest - 1.0, min(data["thresholds"], default=10.0) - 1.0), data.get("ymax", 40.0))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(data.get("ylabel", "test error (%)"))
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # beside the panels, off the curves
    fig.tight_layout()
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path
