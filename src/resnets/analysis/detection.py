"""The detection transfer experiment (Sec. 4.3 in miniature) read back from its committed records: one row per
backbone (mAP mean +- std over its runs), the curves, and the verdict "residual backbone transfers better".

Reads only the run files (summary.json, config.json, metrics.jsonl under <backbone>-s<seed>/), so REPRODUCTION.md
regenerates from the repository alone. Paper: Faster R-CNN on COCO, VGG-16 -> ResNet-101: mAP@.5 41.5 -> 48.4,
mAP@[.5:.95] 21.2 -> 27.2 (Table 8); VOC 2007 73.2 -> 76.4 (Table 7).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import read_json
from ..runs import RunDirectoryError, RunPaths, read_metrics

PAPER_COCO = {"vgg16": {"map_50": 41.5, "map": 21.2}, "resnet101": {"map_50": 48.4, "map": 27.2}}
_RUN = re.compile(r"^(?P<backbone>[a-z_]+\d+)-s(?P<seed>\d+)$")


def load_detection_runs(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
    """backbone -> its complete runs ({"name", "summary", "config", "metrics"}), in folder order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirectoryError(f"{folder} does not exist; run `resnets experiment detection --records {folder}`")
    runs: dict[str, list[dict[str, Any]]] = {}
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _RUN.match(p.name)):
        paths = RunPaths(run_dir)
        summary = read_json(paths.summary, "detection run summary")
        if not summary.get("complete"):
            raise RunDirectoryError(f"{run_dir} is not complete; finish it before reporting")
        runs.setdefault(str(_RUN.match(run_dir.name)["backbone"]), []).append(  # type: ignore[index]
            {"name": run_dir.name, "summary": summary, "config": read_json(paths.config, "detection run config"),
             "metrics": read_metrics(paths.metrics)})
    if not runs:
        raise RunDirectoryError(f"{folder} holds no <backbone>-s<seed> detection runs")
    return runs


def scores_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """A run's AP on its held-out split (`eval_split`: Penn-Fudan "test", a COCO folder "val"), without the prefix:
    map, map_50, ... and mask_map, mask_map_50, ... for a Mask R-CNN."""
    prefix = f"{summary.get('eval_split', 'val')}_"
    return {key[len(prefix):]: value for key, value in summary.items() if key.startswith(prefix) and "map" in key}


def detection_rows(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for backbone, members in runs.items():
        summaries = [m["summary"] for m in members]
        scores = [scores_of(s) for s in summaries]
        rows.append({"backbone": backbone, "runs": len(members), "pretrained": summaries[0]["backbone_source"],
                     "seeds": [s.get("seed") for s in summaries],
                     **{key: [score[key] for score in scores] for key in scores[0]},
                     "minutes": statistics.fmean(s["train_seconds"] for s in summaries) / 60,
                     "iterations": summaries[0]["iterations"], "form": summaries[0]["form"],
                     "kind": summaries[0].get("kind", "faster_rcnn"), "split": summaries[0].get("eval_split", "val"),
                     "images": summaries[0].get(f"{summaries[0].get('eval_split', 'val')}_images")})
    return rows


def detection_verdict(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each residual backbone against the plain one of the same depth, on mean mAP@[.5:.95] (and mAP@.5)."""
    by_name = {row["backbone"]: row for row in rows}
    lines = []
    for name, row in by_name.items():
        plain = by_name.get(name.replace("resnet", "plain")) if name.startswith("resnet") else None
        if plain is None:
            continue
        ours, theirs = statistics.fmean(row["map"]), statistics.fmean(plain["map"])
        ours50, theirs50 = statistics.fmean(row["map_50"]), statistics.fmean(plain["map_50"])
        masks = ""
        if "mask_map" in row and "mask_map" in plain:
            mine, other = statistics.fmean(row["mask_map"]), statistics.fmean(plain["mask_map"])
            masks = f", mask mAP@[.5:.95] {mine:.2f} vs {other:.2f}"
        lines.append(f"residual backbone transfers better ({name} vs {plain['backbone']}): "
                     f"{'yes' if ours > theirs else 'no'} (mAP@[.5:.95] {ours:.2f} vs {theirs:.2f}, mAP@.5 "
                     f"{ours50:.2f} vs {theirs50:.2f}{masks}; {row['runs']} and {plain['runs']} run(s))")
    return lines or ["no residual/plain pair of the same depth to compare"]
