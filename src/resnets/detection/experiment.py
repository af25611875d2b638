"""Sec. 4.3 in miniature, "features matter": one detector and one schedule on backbones pre-trained the same way
(Imagenette), plain against residual, on real street photos (Penn-Fudan, Mask R-CNN: boxes and masks) or on the
synthetic composition dataset (Faster R-CNN; made on first use). Run directories are
`<backbone>-s<seed>` under `out`: complete runs are skipped, interrupted ones resumed, so the command can be
repeated until the series is done, one sitting at a time; each finished run's small records are copied to `records`
(e.g. results/detection) for `resnets report --detection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..runs import RunPaths, copy_records, decide_resume
from .pennfudan import is_pennfudan
from .synthetic import make_synthetic_detection
from .train import DetectionOptions, DetectionRecipe, default_recipe, load_backbone, train_detector

DETECTION_BACKBONES = ("plain18", "resnet18")


def run_detection_series(out: str | Path, data: str | Path, backbones: Sequence[str] = DETECTION_BACKBONES,
                         seeds: Sequence[int] = (0,), pretrained: str | None = "imagenette",
                         records: str | Path | None = None, precision: str = "fp32", device: str = "auto",
                         recipe: DetectionRecipe | None = None, train_images: int = 2000, val_images: int = 500,
                         progress: bool = True, log: Callable[[str], Any] = print) -> list[Path]:
    """Make the synthetic dataset if `data` is neither Penn-Fudan nor a finished synthetic folder, then train every
    backbone x seed with `recipe` (default: the data's, `train.default_recipe`); returns the run dirs.
    pretrained: a shipped tag (e.g. "imagenette"), a folder of classification runs named <backbone>-s0 (e.g. the
    Imagenette series' run directories: each backbone starts from its own run's weights), or None (He init)."""
    data = Path(data)
    sources = {backbone: backbone_weights(pretrained, backbone) for backbone in backbones}
    for backbone, source in sources.items():
        load_backbone(backbone, source)  # a missing tag or file fails now, not after the dataset is made
    if not is_pennfudan(data) and not (data / "annotations" / "val.json").is_file():
        make_synthetic_detection(data, train_images=train_images, val_images=val_images, seed=0, progress=progress)
    recipe = recipe or default_recipe(data)
    done = []
    for seed in seeds:  # seed by seed, so that a series cut short still compares every backbone
        for backbone in backbones:
            run_dir = Path(out) / f"{backbone}-s{seed}"
            if RunPaths(run_dir).is_complete():
                log(f"{run_dir.name}: complete in {run_dir}, skipped")
            else:
                resume = decide_resume("auto", run_dir)
                log(f"{run_dir.name}: {'resuming' if resume else 'training'} in {run_dir}")
                train_detector(DetectionOptions(data=str(data), out=str(run_dir), backbone=backbone,
                                                pretrained=sources[backbone], precision=precision, device=device,
                                                seed=seed, resume=resume, progress=progress, recipe=recipe))
            if records is not None:
                copy_records(run_dir, Path(records))
            done.append(run_dir)
    return done


def backbone_weights(pretrained: str | None, backbone: str) -> str | None:
    """A folder of classification runs means its <backbone>-s0 run; anything else is passed on as given."""
    if pretrained is not None and Path(pretrained).is_dir():
        run = Path(pretrained) / f"{backbone}-s0"
        if not (run / "model.pt").is_file():
            raise FileNotFoundError(f"{run}/model.pt does not exist: train {backbone} in {pretrained} first "
                                    "(resnets experiment imagenette) or give a shipped tag")
        return str(run)
    return pretrained
