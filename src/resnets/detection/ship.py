"""Ship a finished detection run as a tagged pretrained detector (`maskrcnn_resnet18.pennfudan`), under the one
naming scheme of `models.pretrained`: an fp16 detector file beside the classification weights and a JSON of what it
measured (its box and mask AP on the recorded held-out split, measured on the rounded fp16 weights, so the number is
the file's own), how it was trained, and its SHA-256; `models/manifest.json` lists it for installs without the file.

    resnets detect ship ~/resnets-runs/pennfudan/resnet18-s0          # -> maskrcnn_resnet18.pennfudan
    resnets detect predict street.jpg --pretrained maskrcnn_resnet18.pennfudan
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..io import atomic_write_text, read_json
from ..models.pretrained import weight_file, write_manifest
from ..runs import RunPaths
from .inference import evaluate_detector, load_detector, save_detector
from .train import open_detection_data


def detector_name(kind: str, backbone: str) -> str:
    """`maskrcnn_resnet18`, `fasterrcnn_plain18`, ...: the detector kind and its backbone, as torchvision names them."""
    return f"{kind.replace('_', '')}_{backbone}"


def ship_detector(run_dir: str | Path, tag: str | None = None, data: str | Path | None = None,
                  weights_dir: str | Path | None = None, device: str = "cpu") -> Path:
    """Store RUN_DIR's detector in fp16 as `<kind>_<backbone>.<tag>` (tag default: the run's recipe name) with its
    JSON; returns the detector file's path. Only a complete run ships: the file claims the AP of a finished recipe."""
    paths = RunPaths(Path(run_dir))
    summary = read_json(paths.summary, "detection run summary")
    config = read_json(paths.config, "detection run config")
    if not summary.get("complete"):
        raise ValueError(f"{run_dir} stopped at iteration {summary.get('iterations')}; only a complete run is "
                         "shipped (finish it with --resume)")
    tag = tag or summary.get("recipe", "synthetic")
    detector, detector_config = load_detector(paths.weights, device)
    detector.load_state_dict({k: v.half() if v.is_floating_point() else v  # rounded to fp16 and back: the AP
                              for k, v in detector.state_dict().items()})  # below is the shipped file's
    split = summary["eval_split"]
    data = data or config["options"]["data"]
    scores = evaluate_detector(detector, open_detection_data(data, split), precision="fp32")
    name = detector_name(detector_config["kind"], summary["backbone"])
    path = weight_file(name, tag, weights_dir)
    save_detector(detector, detector_config, path, {"split": split, **scores}, storage=torch.float16)
    description = {
        "model": name, "pretrained": tag, "task": "detection", "dataset": Path(str(data)).name,
        "eval_split": split, "eval_images": summary[f"{split}_images"],
        "split": config.get("split"), "scores": scores, "scores_at_training": {
            key: value for key, value in summary.items() if key.startswith(f"{split}_") and "map" in key},
        "backbone": summary["backbone"], "backbone_source": summary["backbone_source"],
        "recipe": config["options"]["recipe"], "iterations": summary["iterations"], "seed": summary.get("seed"),
        "precision": summary["precision"], "train_seconds": summary["train_seconds"],
        "hardware": summary["hardware"], "shipped_from": str(Path(run_dir)), "storage": "fp16",
        "categories": detector_config["categories"], "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(description, indent=2, default=str))
    if weights_dir is None:
        write_manifest()
    return path
