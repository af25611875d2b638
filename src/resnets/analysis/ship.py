"""Ship a finished run's weights inside the package: a weights-only file (fp32; fp16 for the ImageNet-family nets)
and a JSON of what it measured and how it was made, so that the numbers travel with the weights. A run ships as
`MODEL.TAG`, the tag being its recipe's name unless given (`create_model("resnet20.paper")`,
`create_model("resnet20.fast")`), in the files `models.pretrained.weight_file` names.

The JSON also holds the error on a fixed 1,000-image test subset (100 per class, see `spread_indices`) measured at
shipping time: a check on 1,000 images cannot be held to the 10,000-image number within 1 point (its standard
error alone is ~0.9 points at 10% error), but it must reproduce the subset's own number. A CIFAR net also gets
`check_all`, its fp32 error on every test image measured on the stored weights: the run's own test error was taken
in its training precision (bf16 for most runs here), so the two may differ by a few images.

`ship_recalibrated` ships shipped Imagenette weights again under a new tag with only their BN statistics
re-estimated over the input sizes users feed (issue #36: a net trained on 112 px crops, fed whole photos at 128-192).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.paths import datasets_root
from ..data.preprocess import preprocessing_of
from ..evaluate.metrics import evaluate_batches
from ..evaluate.recalibrate import recalibrate_batchnorm, training_photos
from ..evaluate.run import cifar_test_batches, evaluate_imagenet
from ..io import atomic_torch_save, atomic_write_text
from ..models import create_model, model_config
from ..models.pretrained import WHERE_TO_LOOK, list_pretrained, split_name, weight_file, write_manifest
from ..models.weights import model_from_weight_data, read_weight_file
from ..runs import load_run, require_test_error
from ..runtime import resolve_device
from .describe import data_copy, training_command
from .time_to_accuracy import median_rate

CHECK_IMAGES = 1000


def subset_error(model: torch.nn.Module, data: str | Path | None = None, images: int | None = CHECK_IMAGES,
                 device: str = "auto") -> dict[str, Any]:
    """Top-1 error (fp32) on `images` test images spread evenly over the test set (the same ones every time; None:
    all of them), preprocessed by the record in `model.meta`."""
    target = resolve_device(device)
    batches, source = cifar_test_batches(model.to(target), data, images, target)
    result = evaluate_batches(model.to(target), batches, target, "fp32")
    selection = ("every test image" if images is None
                 else f"resnets.data.decoded.spread_indices(test images, {images}): evenly spread")
    return {"images": result["images"], "top1_error": result["top1_error"], "source": source,
            "selection": selection}


def center_error(model: torch.nn.Module, weights: Path, data: str | Path | None = None,
                 device: str = "auto") -> dict[str, Any]:
    """Top-1 error (fp32) of the `center` protocol on every Imagenette validation photo."""
    model = model.to(resolve_device(device)).eval()
    result = evaluate_imagenet(model, weights, data or datasets_root() / "imagenette", "center", "fp32",
                               num_workers=2, progress=False)
    return {"images": result["images"], "top1_error": result["top1_error"], "source": result["source"],
            "selection": "every validation photo, center protocol"}


def _check_tag(tag: str) -> None:
    if not tag.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"tag {tag!r} names a file: use letters, digits, '-' and '_'")


def ship_weights(run_dir: str | Path, name: str | None = None, weights_dir: str | Path | None = None,
                 data: str | Path | None = None, device: str = "auto", tag: str | None = None) -> Path:
    """Copy RUN_DIR/model.pt to WEIGHTS_DIR (default: the package's) as `name.tag` (weights-only; fp32, fp16 for
    Imagenette nets) with its .json; returns the .pt path. tag: default the recipe's name (paper, fast, ...).

    Only a complete CIFAR or Imagenette run is shipped: a shipped file claims the accuracy of a finished recipe.
    Imagenette weights are checked on every validation photo with the `center` protocol (what `preprocess` does).
    """
    run = load_run(run_dir)
    if not run.summary["complete"]:
        raise ValueError(f"{run.path} stopped at {run.summary['iterations']} of {run.summary['scheduled_iterations']} "
                         f"iterations; only a complete run is shipped (finish it with --resume)")
    if run.summary["dataset"] not in ("cifar10", "cifar100", "imagenette"):
        raise ValueError(f"{run.path} is a {run.summary['dataset']} run; shipped weights are CIFAR or Imagenette "
                         "networks")
    require_test_error(run, "ship a run of the chosen recipe on the whole training set")
    name = name or run.summary["model"]
    recipe_name = run.config["recipe"]["name"]
    tag = tag if tag is not None else recipe_name
    _check_tag(tag)
    stored = read_weight_file(run.paths.weights)
    with torch.device("meta"):  # only the architecture is compared
        named = model_config(create_model(name, num_classes=stored["model_config"]["num_classes"],
                                          shortcut=stored["model_config"]["shortcut"]))
    if named != stored["model_config"]:
        raise ValueError(f"--name {name!r} does not build the architecture of {run.path} ({run.summary['model']}); "
                         "shipped weights load with create_model('MODEL.TAG'): use the run's model name")
    model = model_from_weight_data(stored, source=f"weights in {run.paths.weights}")
    model = model.float()  # fp32 whatever the training precision: eval/predict/export expect it
    # ImageNet-family nets are stored in fp16 (ResNet-18: 22 MB instead of 45 MB in the package) and loaded back
    # into fp32; the error shipped with them is measured on these rounded weights, so it is the file's own error.
    storage = torch.float16 if run.summary["dataset"] == "imagenette" else torch.float32
    model = model.to(storage).float()
    checks: dict[str, dict[str, Any]] = {}
    if run.summary["dataset"] == "imagenette":
        checks["check_subset"] = center_error(model, run.paths.weights, data, device)
    else:
        checks["check_subset"] = subset_error(model, data, device=device)
        checks["check_all"] = subset_error(model, data, images=None, device=device)
    summary = run.summary
    description = {
        "model": name, "pretrained": tag, "dataset": summary["dataset"],
        "test_top1_error": summary["test_top1_error"], "test_images": summary["test_images"], **checks,
        "recipe": run.config["recipe"],
        "epochs": summary["epochs"], "iterations": summary["iterations"], "data": data_copy(summary["data"]),
        "train_images": summary["data"].get("train_images"), "data_source": summary["data"].get("source"),
        "precision": summary["precision"],
        "hardware": summary["hardware"], "wall_seconds": summary["wall_seconds"],
        "train_minutes": round(summary["wall_seconds"] / 60, 1), "images_per_s": round(median_rate(run), 1),
        "command": training_command(run.config), "shipped_from": str(run.path),
        # trained on from other weights: those, so that the time and epochs above read as this run's alone
        **({"started_from": model.meta["started_from"]} if model.meta.get("started_from") else {}),
    }
    return _store(model, stored["model_config"], storage, weight_file(name, tag, weights_dir), description,
                  weights_dir is None)


def _store(model: torch.nn.Module, config: dict[str, Any], storage: torch.dtype, weights_path: Path,
           description: dict[str, Any], package: bool) -> Path:
    """Write the weights (floating tensors in `storage`) and their .json (`description` + the file's SHA-256, class
    names and preprocessing record); in the package's folder, the manifest too."""
    state = {k: v.detach().cpu().to(storage) if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    atomic_torch_save({"model_config": config, "model": state, "meta": model.meta}, weights_path)
    description = {
        **description, "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        # `resnets predict --pretrained MODEL.TAG` reads its preprocessing and class names from this JSON.
        "classes": model.meta.get("classes"), "preprocess": preprocessing_of(model).to_json(),
    }
    atomic_write_text(weights_path.with_suffix(".json"), json.dumps(description, indent=2))
    if package:  # the package's weights: models/manifest.json lists them for installs without the files
        write_manifest()
    return weights_path


def ship_recalibrated(source: str, photos: int, sides: Sequence[int], tag: str, *, seed: int = 0,
                      weights_dir: str | Path | None = None, data: str | Path | None = None,
                      device: str = "auto") -> Path:
    """Ship the shipped Imagenette weights `source` (MODEL.TAG) again as MODEL.`tag`, with their BatchNorm running
    statistics re-estimated once on `photos` training photos (a seeded draw from imagenette/train), each fed whole
    at every side in `sides`, pooled into one set of statistics (`evaluate.recalibrate.recalibrate_batchnorm`);
    every weight is untouched. A net trained on 112 px crops then meets the whole photo at 128-192 px with
    statistics of those sizes, and a user needs no recalibration of their own. The .json is the source's, with the
    error measured again on every validation photo (`center`, fp32, on the stored fp16 weights) and a
    `batchnorm` entry saying how the statistics were made."""
    model_name, source_tag = split_name(source)
    if source_tag is None or tag == source_tag:
        raise ValueError(f"ship_recalibrated takes shipped weights MODEL.TAG and a new tag, got {source!r} -> "
                         f"{tag!r}")
    _check_tag(tag)
    meta = list_pretrained().get(source)
    if meta is None or meta["dataset"] != "imagenette":
        raise ValueError(f"{source} is not shipped Imagenette weights; {WHERE_TO_LOOK}")
    model = create_model(source).float().eval()
    root = Path(data) if data else datasets_root() / "imagenette"
    train = root / "train"
    recalibrate_batchnorm(model, training_photos(train, photos, seed), sides,
                          normalize=preprocessing_of(model).normalize_any_size)
    storage = torch.float16  # as every Imagenette net here; the error below is the rounded file's own
    model = model.to(storage).float()
    check = center_error(model, Path(f"{model_name}.{tag}"), root, device)
    description = {
        **{key: value for key, value in meta.items() if key not in ("tag", "sha256", "classes", "preprocess")},
        "pretrained": tag, "test_top1_error": check["top1_error"], "test_images": check["images"],
        "check_subset": check,
        "batchnorm": {"recalibrated_from": source, "source_test_top1_error": meta["test_top1_error"],
                      "training_photos": photos, "seed": seed, "sides": list(sides), "source": str(train),
                      "views": "each photo resized whole to SxS at every side S, statistics pooled over all views",
                      "command": f"resnets analyze ship {source} --recalibrate-bn {photos} --bn-sides "
                                 f"{' '.join(map(str, sides))} --tag {tag}" + (f" (seed {seed})" if seed else "")},
    }
    path = weight_file(model_name, tag, weights_dir)
    return _store(model, model_config(model), storage, path, description, weights_dir is None)
