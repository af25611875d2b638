"""`resnets eval`: the test error of a run directory, training checkpoint or weight file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..data.cifar import load_cifar, per_pixel_mean
from ..data.loader import TensorBatchLoader
from ..models.weights import model_from_weight_data, read_weight_file
from ..train.runtime import setup_runtime
from .metrics import evaluate_batches


def resolve_weights(path: Path) -> Path:
    """A run directory means its final model.pt, or its last checkpoint while the run is unfinished."""
    if path.is_dir():
        for candidate in (path / "model.pt", path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path} holds neither model.pt nor checkpoints/last.pt; is it a run directory?")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a run directory, checkpoint or weight file")
    return path


def weights_metadata(path: Path, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """meta stored in a weight file (`data`: the file, if already read), else what the run's config.json says."""
    data = read_weight_file(path) if data is None else data
    meta = dict(data.get("meta") or {})
    if "dataset" not in meta and isinstance(data.get("options"), dict):
        meta["dataset"] = data["options"].get("dataset")
    config = path.parent.parent / "config.json" if path.parent.name == "checkpoints" else path.parent / "config.json"
    if "dataset" not in meta and config.is_file():
        meta["dataset"] = json.loads(config.read_text())["options"]["dataset"]
    return meta


def evaluate_checkpoint(path: Path, data: str | None = None, dataset: str | None = None, precision: str = "fp32",
                        device: str = "auto", protocol: str = "center", **imagenet: Any) -> dict[str, Any]:
    """Test error of a checkpoint: the single 32x32 view on CIFAR (Sec. 4.2), or an ImageNet protocol
    (`center`, `10crop`, `multiscale`; Sec. 3.4) on an image folder (`imagenet` keywords go to protocols.evaluate)."""
    weights = resolve_weights(Path(path))
    contents = read_weight_file(weights)
    meta = weights_metadata(weights, contents)
    model = model_from_weight_data(contents, source=f"weights in {weights}")
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        dataset = "cifar10" if model.spec.family == "cifar" else "imagenet"
    runtime = setup_runtime(device)
    model = model.to(runtime.device).eval()
    if dataset == "imagenet":
        return evaluate_imagenet(model, weights, meta, data, protocol, precision, **imagenet)
    test = load_cifar(data, dataset, "test")
    if test.labels.max().item() >= model.spec.num_classes:
        raise ValueError(f"{weights} has {model.spec.num_classes} classes but {dataset} has more; "
                         "pass the matching --dataset")
    preprocess = meta.get("preprocess") or {}
    mean = preprocess.get("mean_image")
    if not isinstance(mean, torch.Tensor):  # a checkpoint without metadata: recompute as training did
        mean = per_pixel_mean(load_cifar(data, dataset, "train").images)
    loader = TensorBatchLoader(test.images.to(runtime.device), test.labels.to(runtime.device), batch_size=500,
                               shuffle=False, augment=False, drop_last=False, mean=mean.to(runtime.device))
    start = time.perf_counter()
    result = evaluate_batches(model, loader, runtime.device, precision)
    seconds = time.perf_counter() - start
    return {"model": model.spec.name, "dataset": dataset, "weights": str(weights), "source": test.source,
            "top1_error": result["top1_error"], "top5_error": result["top5_error"], "loss": result["loss"],
            "images": result["images"], "images_per_s": result["images"] / seconds, "precision": precision,
            "num_classes": model.spec.num_classes}


def evaluate_imagenet(model: torch.nn.Module, weights: Path, meta: dict[str, Any], data: str | None, protocol: str,
                      precision: str, **options: Any) -> dict[str, Any]:
    from ..data.paths import datasets_root
    from ..data.transforms import Normalize
    from .protocols import evaluate

    folder = Path(data) if data else datasets_root() / "imagenet-sample"
    if (folder / "val").is_dir():
        folder = folder / "val"
    preprocess = meta.get("preprocess") or {}
    # Our runs store their normalisation; torchvision/timm files were trained with torchvision's mean/std.
    normalize = (Normalize(preprocess["normalize_mean"], preprocess.get("normalize_std"))
                 if "normalize_mean" in preprocess else Normalize())
    class_to_idx = meta.get("data", {}).get("class_to_idx") or options.pop("class_to_idx", None)
    if class_to_idx is None and model.spec.num_classes == 1000:
        from ..deploy.predict import imagenet_wnids

        class_to_idx = {wnid: index for index, wnid in enumerate(imagenet_wnids())}
    result = evaluate(model, folder, protocol, precision=precision, normalize=normalize, class_to_idx=class_to_idx,
                      resize=int(preprocess.get("resize", 256)), crop_size=int(preprocess.get("crop", 224)),
                      **options)
    return {"model": model.spec.name, "dataset": "imagenet", "weights": str(weights), "source": str(folder),
            "precision": precision, "num_classes": model.spec.num_classes, **result}
