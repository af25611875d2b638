"""The detection transfer experiments (Sec. 4.3 in miniature) read back from their committed records: one row per
backbone (AP mean +- std over its runs), the curves, and the verdict "residual backbone transfers better"; the
report's two sections: the synthetic composition (Faster R-CNN, `--detection`) and Penn-Fudan's real photos (Mask
R-CNN, box and mask AP, `--pennfudan`).

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
from ..models import list_pretrained
from ..plots import plot_detection_curves
from ..runs import RunDirectoryError, RunPaths, read_metrics
from .depth import plus_minus
from .describe import duration, hardware_brief, table
from .time_to_accuracy import Plot

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


# torchvision's detection fine-tuning tutorial (Mask R-CNN R50-FPN pre-trained on COCO train2017, fine-tuned on
# Penn-Fudan, tested on 50 held-out photos), as printed in the tutorial, AP in % (its 0.799 is 79.9 here).
TUTORIAL_ANCHORS = (
    {"where": "https://github.com/pytorch/tutorials/blob/064d0b9b5591f942f8ff84a4618c03b154ad3afa/intermediate_source/"
              "torchvision_tutorial.rst", "version": "its torchvision <= 0.15 version, the metrics its author got",
     "epochs": 10, "map": 79.9, "map_50": 96.9, "mask_map": 76.1, "mask_map_50": 96.9},
    {"where": "https://docs.pytorch.org/tutorials/intermediate/torchvision_tutorial.html",
     "version": "the current version, its executed output", "epochs": 2, "map": 80.9, "map_50": 99.0,
     "mask_map": 77.8, "mask_map_50": 99.0},
)


def _ap_cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(plus_minus(row[key]) if key in row else "-" for key in ("map", "map_50", "mask_map", "mask_map_50"))


def detection_section(folder: Path, runs: dict[str, list[dict[str, Any]]], plot: Plot,
                      real_photos: bool = False) -> list[str]:
    """The synthetic-composition experiment (Faster R-CNN, `--detection`); `real_photos`: the report also has the
    Penn-Fudan section, which the first sentence points to."""
    rows = detection_rows(runs)
    if any(row["split"] != "val" for row in rows):
        raise RunDirectoryError(f"{folder} holds Penn-Fudan runs (evaluated on their test photos); give it to "
                                "`resnets report --pennfudan`, and the synthetic-composition runs to --detection")
    first = next(iter(runs.values()))[0]
    recipe = first["config"]["options"]["recipe"]
    curves = {m["name"]: m["metrics"] for members in runs.values() for m in members}
    figure = plot(plot_detection_curves, curves, "detection-curves.png",
                  "detection: training loss and validation mAP per backbone")
    body = [(row["backbone"], row["pretrained"], row["runs"], plus_minus(row["map_50"]), plus_minus(row["map"]),
             f"{row['minutes']:.0f} min") for row in rows]
    paper = PAPER_COCO
    pointer = ("the real-photo experiment is the next section (Mask R-CNN on Penn-Fudan)" if real_photos else
               "the real-photo experiment, Mask R-CNN on Penn-Fudan, is not in this report (`resnets report "
               "--pennfudan DIR`)")
    return ["## Sec. 4.3 in miniature: plain vs residual backbones for detection",
            f"This section is the synthetic composition; {pointer}. "
            f"Every run under `{folder}`: torchvision's Faster R-CNN, {recipe['form'].upper()} form, on our backbone "
            f"pre-trained on Imagenette; {recipe['iterations']:,} iterations of batch {recipe['batch_size']} at "
            f"{recipe['image_size']}px (lr {recipe['lr']}, /10 at {recipe['milestones']} of the run, frozen BN, "
            f"top {recipe['trainable_layers']} stages trained), on a synthetic composition (CIFAR-10 objects pasted "
            "on Imagenette photos, `resnets detect make-data`; not COCO or VOC). COCO mAP by pycocotools on the "
            f"{first['summary']['val_images']:,} validation images"
            + (f"; {hardware_brief(first['summary']['hardware'])}." if "hardware" in first["summary"] else "."),
            table(("backbone", "pre-training", "runs", "mAP@.5 (%)", "mAP@[.5:.95] (%)", "train time"), body),
            f"Paper (COCO, Faster R-CNN): VGG-16 {paper['vgg16']['map_50']} / {paper['vgg16']['map']}, ResNet-101 "
            f"{paper['resnet101']['map_50']} / {paper['resnet101']['map']} (mAP@.5 / mAP@[.5:.95]).",
            figure, "Left: training loss; right: validation mAP@.5 (solid) and mAP@[.5:.95] (dashed).",
            "Verdict (computed from the data):\n\n" + "\n".join(f"- {line}" for line in detection_verdict(rows))]


def pennfudan_section(folder: Path, runs: dict[str, list[dict[str, Any]]], plot: Plot) -> list[str]:
    """The real-photo experiment (`--pennfudan`): Mask R-CNN on Penn-Fudan, one row per backbone (box and mask AP,
    mean ± std over its seeds), the setting read from the runs' records, the tutorial's anchor, curves, verdicts."""
    from ..detection.pennfudan import SPLIT_SEED  # here: the detection package loads torchvision

    rows = detection_rows(runs)
    members = [member for group in runs.values() for member in group]
    first = members[0]
    for member in members:
        if member["summary"].get("eval_split") != "test":
            raise RunDirectoryError(f"{folder}/{member['name']} is not a Penn-Fudan run (evaluated on "
                                    f"{member['summary'].get('eval_split', 'val')!r}, not its test photos); give "
                                    "--pennfudan the records of `resnets experiment detection` on Penn-Fudan")
        if member["config"].get("split") != first["config"].get("split"):
            raise RunDirectoryError(f"{folder}/{member['name']} trained or tested on other photos than "
                                    f"{first['name']} (config.json, split); rerun it on the recorded split")
    recipe, split = first["config"]["options"]["recipe"], first["config"]["split"]
    photos = len(split["train"]) + len(split["test"])
    sizes = "/".join(map(str, recipe["train_sizes"])) if recipe["train_sizes"] else str(recipe["image_size"])
    hardware = hardware_brief(*(member["summary"]["hardware"] for member in members))
    kind = {"mask_rcnn": "Mask R-CNN", "faster_rcnn": "Faster R-CNN"}.get(recipe["kind"], recipe["kind"])
    body = [(row["backbone"], row["pretrained"], f"{row['runs']} ({', '.join(map(str, row['seeds']))})",
             *_ap_cells(row), duration(60 * row["minutes"])) for row in rows]
    curves = {member["name"]: member["metrics"] for member in members}
    figure = plot(plot_detection_curves, curves, "pennfudan-curves.png",
                  "Penn-Fudan: training loss, box and mask AP on the test photos, per run")
    anchors = "; ".join(
        f"{a['version']} ({a['where']}), after {a['epochs']} epochs: box AP@[.5:.95] {a['map']} (AP@.5 "
        f"{a['map_50']}), mask AP@[.5:.95] {a['mask_map']} (AP@.5 {a['mask_map_50']})" for a in TUTORIAL_ANCHORS)
    return ["## Sec. 4.3 on real photos: Mask R-CNN on Penn-Fudan, plain vs residual backbones",
            f"Every run under `{folder}` (one directory per backbone and seed): torchvision's {kind}, "
            f"{recipe['form'].upper()} form, on our backbone pre-trained as the second column says, recipe "
            f"`{recipe['name']}`: {recipe['iterations']:,} iterations of batch {recipe['batch_size']} (SGD, lr "
            f"{recipe['lr']} after a {recipe['warmup_iterations']}-iteration warm-up, /10 at {recipe['milestones']} "
            f"of the run, momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}), "
            f"{'frozen BN' if recipe['frozen_bn'] else 'BN trained'}, top {recipe['trainable_layers']} stages "
            f"trained; photos at shorter side {recipe['image_size']} px (longer side at most "
            f"{recipe['max_size'] or recipe['image_size']} px) for testing, in training at a shorter side drawn from "
            f"{sizes} px (scale jitter) and flipped at random. Data: Penn-Fudan ({photos} photos of pedestrians, "
            f"each person with a box and a pixel mask; not COCO or VOC): {len(split['train'])} photos to train, "
            f"{len(split['test'])} held out to test, one split for every run (seed {SPLIT_SEED}; the names are in "
            "each run's config.json). Box and mask AP (COCO AP@[.5:.95] and AP@.5, %, pycocotools) on the "
            f"{first['summary']['test_images']} test photos after the last iteration, mean ± sample std over a "
            f"backbone's runs; {hardware}.",
            table(("backbone", "pre-training", "runs (seeds)", "box AP@[.5:.95] (%)", "box AP@.5 (%)",
                   "mask AP@[.5:.95] (%)", "mask AP@.5 (%)", "train time (mean per run)"), body),
            "Anchor, quoted, not run here: torchvision's detection fine-tuning tutorial fine-tunes Mask R-CNN "
            "R50-FPN, pre-trained on COCO, on Penn-Fudan and tests it on 50 held-out photos (its own draw, not our "
            f"50). As printed in the tutorial: {anchors}. What differs: its detector, FPN and heads included, was "
            "trained on COCO train2017 (118k photos, people among its 80 classes) on an ImageNet-trained backbone; "
            f"{_pretraining(rows)}, with no detection pre-training, then trained on {len(split['train'])} "
            f"Penn-Fudan photos for {recipe['iterations']:,} iterations of batch {recipe['batch_size']} at shorter "
            f"side {recipe['image_size']} px (the tutorial's 800) on {hardware}.",
            figure, "Left: training loss; middle: box AP, right: mask AP on the test photos, AP@.5 solid and "
            "AP@[.5:.95] dashed; one colour per backbone, one line per run.",
            "Verdict per depth (computed from the means over runs):\n\n"
            + "\n".join(f"- {line}" for line in detection_verdict(rows))]


def _pretraining(rows: Sequence[Mapping[str, Any]]) -> str:
    """What our backbones saw before detection, from the shipped weights' metadata (all alike, or named apart)."""
    shipped = list_pretrained()
    seen = set()
    for row in rows:
        meta = shipped.get(f"{row['backbone']}.{row['pretrained']}")
        seen.add(None if meta is None else (meta["train_images"], len(meta.get("classes", ())), meta["dataset"]))
    if len(seen) == 1 and None not in seen:
        images, classes, dataset = seen.pop()
        return f"ours saw {images:,} {dataset.capitalize()} photos of {classes} classes"
    return "ours started from " + ", ".join(sorted({f"`{row['pretrained']}`" for row in rows}))
