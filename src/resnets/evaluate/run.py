"""`resnets eval`: the test error of shipped weights, a run directory, training checkpoint or weight file,
preprocessed by the weights' own record (`data.preprocess`), on CIFAR (the single 32x32 view of Sec. 4.2) or an
ImageNet folder (Sec. 3.4)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.cifar import load_cifar
from ..data.classes import imagenet_wnids
from ..data.decoded import spread_indices
from ..data.folder import ImageFolderDataset, open_image_folder
from ..data.loader import TensorBatchLoader
from ..data.paths import datasets_root
from ..data.preprocess import preprocessing_of
from ..models import Pretrained, load_model, resolve_pretrained
from ..runs import run_dataset
from ..runtime import setup_runtime
from .metrics import evaluate_batches
from .protocols import evaluate, multiscale_sides, ten_crop_resize
from .recalibrate import recalibrate_for_protocol, train_folder_of

CIFAR_EVAL_BATCH = 500
EVAL_FOLDERS = {"imagenet": "imagenet-sample", "imagenette": "imagenette"}  # under datasets_root(), without --data
RECALIBRATION_SEED = 0  # which training photos --recalibrate-bn draws


def load_for_evaluation(pretrained: bool | str | Path | Pretrained,
                        model: str | None = None) -> tuple[torch.nn.Module, Path]:
    """The model `pretrained` names (anything `resolve_pretrained` takes: shipped MODEL.TAG, a run directory,
    checkpoint or weight file) and the file read, with `meta["dataset"]` filled from the run's config.json when the
    file itself does not say."""
    source = resolve_pretrained(pretrained, model)
    network = load_model(source)
    if "dataset" not in network.meta:
        dataset = run_dataset(source.path)
        if dataset is not None:
            network.meta["dataset"] = dataset
    return network, source.path


CIFAR_PROTOCOLS = ("center", "flip")  # the paper's single view; beyond it, the view and its mirror (airbench)


class FlipAveraged(torch.nn.Module):
    """`model` on an image and on its mirror image, the two softmaxes averaged; returns the log of that average, so
    that the cross-entropy and argmax of evaluation read it as logits. Keeps the model's spec, meta and record."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.spec, self.meta = model.spec, model.meta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = torch.stack([self.model(images).float().log_softmax(1),
                              self.model(images.flip(-1)).float().log_softmax(1)])
        return torch.logsumexp(scores, 0) - math.log(2)


def cifar_test_batches(model: torch.nn.Module, data: str | Path | None = None, images: int | None = None,
                       device: torch.device | str = "cpu") -> tuple[TensorBatchLoader, str]:
    """CIFAR test batches preprocessed as `model`'s weights expect, `images` of them spread evenly over the test set
    (every class alike); and a description of the data read."""
    dataset = model.meta.get("dataset") or ("cifar100" if model.spec.num_classes == 100 else "cifar10")
    test = load_cifar(data, dataset, "test")
    if int(test.labels.max()) >= model.spec.num_classes:
        raise ValueError(f"the weights have {model.spec.num_classes} classes but {dataset} has more; pass the "
                         "matching --dataset")
    record = preprocessing_of(model)
    mean = record.mean_image if record.mean_image is not None else torch.tensor(record.mean)[:, None, None]
    std = None if record.std is None else torch.tensor(record.std)[:, None, None]
    chosen = spread_indices(len(test), images)
    loader = TensorBatchLoader(test.images[chosen].to(device), test.labels[chosen].to(device),
                               batch_size=CIFAR_EVAL_BATCH, mean=mean.to(device),
                               std=None if std is None else std.to(device))
    return loader, test.source


def evaluate_checkpoint(path: bool | str | Path | Pretrained, data: str | None = None, dataset: str | None = None,
                        precision: str = "fp32", device: str = "auto", protocol: str = "center",
                        predictions: bool = False, prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                        model_name: str | None = None, recalibrate_bn: int = 0, **imagenet: Any) -> dict[str, Any]:
    """Test error of the weights `path` names (shipped MODEL.TAG, a run directory, checkpoint or weight file; see
    `resolve_pretrained`): the single 32x32 view on CIFAR (Sec. 4.2), or an ImageNet protocol
    (`center`, `10crop`, `multiscale`; Sec. 3.4) on an image folder (`imagenet` keywords go to protocols.evaluate).
    `predictions` adds "predictions": one {"image", "label", "top1"} per test image (CIFAR: its index in the test
    set; folders: its file). `prepare` turns the loaded eval-mode model into the one to run (e.g.
    resnets.optimize_for_inference, which then owns the precision: pass precision="fp32" with it). `model_name`: the
    model `path` is a tag of, or that a file must hold. `recalibrate_bn` > 0 re-estimates the BN statistics on that
    many training photos at the test size before `prepare` (recalibrate.py; image folders only)."""
    model, weights = load_for_evaluation(path, model_name)
    if dataset is not None:
        model.meta["dataset"] = dataset
    dataset = model.meta.get("dataset") or ("cifar10" if model.spec.family == "cifar" else "imagenet")
    runtime = setup_runtime(device)
    model = model.to(runtime.device).eval()
    if dataset == "folder" and not data:  # a model fine-tuned on your photos (`resnets train --dataset folder`)
        raise ValueError("weights trained on a folder of photos are evaluated on --data PATH (PATH/val/<class>/... "
                         "or PATH/<class>/...)")
    if recalibrate_bn:
        if dataset not in ("imagenet", "imagenette", "folder"):
            raise ValueError(f"--recalibrate-bn is for the image-folder protocols (imagenet, imagenette, folder); "
                             f"{dataset} weights are tested at their training size: drop the flag")
        if protocol == "multiscale" and prepare is not None:
            raise ValueError("--recalibrate-bn with --protocol multiscale swaps BN statistics per scale, which a "
                             "BN-folded optimised model cannot: add --backend none")
        imagenet |= recalibrated(model, data or datasets_root() / EVAL_FOLDERS[dataset], protocol, recalibrate_bn,
                                 **imagenet)
    if prepare is not None:
        model = prepare(model)
    describe = getattr(model, "describe", None)
    inference = {"inference": describe() if describe else f"the eager model ({precision} autocast)"}
    if recalibrate_bn:
        inference["recalibrate_bn"] = recalibrate_bn  # training photos the BN statistics were re-estimated on
    if dataset in ("imagenet", "imagenette", "folder"):
        if protocol == "flip":
            raise ValueError("--protocol flip is for CIFAR nets; image folders average flips in 10crop and multiscale")
        return (evaluate_imagenet(model, weights, data or datasets_root() / EVAL_FOLDERS[dataset], protocol,
                                  precision, predictions, **imagenet) | {"dataset": dataset} | inference)
    if protocol not in CIFAR_PROTOCOLS:
        raise ValueError(f"--protocol {protocol} is an ImageNet protocol; CIFAR nets are tested on the 32x32 view "
                         f"({' or '.join(CIFAR_PROTOCOLS)})")
    if protocol == "flip":
        model = FlipAveraged(model)
    loader, source = cifar_test_batches(model, data, images=imagenet.get("eval_subset"), device=runtime.device)
    start = time.perf_counter()
    result = evaluate_batches(model, loader, runtime.device, precision, keep_predictions=predictions)
    seconds = time.perf_counter() - start
    if predictions:
        labels = loader.labels.tolist()
        result["predictions"] = [{"image": index, "label": label, "top1": top1}
                                 for index, (label, top1) in enumerate(zip(labels, result["predictions"], strict=True))]
    return result | {"model": model.spec.name, "dataset": dataset, "weights": str(weights), "source": source,
                     "protocol": protocol,
                     "images_per_s": result["images"] / seconds, "precision": precision,
                     "num_classes": model.spec.num_classes} | inference


def recalibrated(model: torch.nn.Module, data: str | Path, protocol: str, photos: int,
                 **options: Any) -> dict[str, Any]:
    """Re-estimate `model`'s BN statistics for `protocol` on `photos` photos of the training split beside `data`
    (in place for center/10crop); the evaluate() keywords to add (multiscale: batchnorm_per_scale)."""
    record = preprocessing_of(model)
    folder = Path(data)
    train = train_folder_of(folder / "val" if (folder / "val").is_dir() else folder)
    resize = ten_crop_resize(record.resize, record.crop) if protocol == "10crop" else record.resize
    per_scale = recalibrate_for_protocol(model, train, protocol, photos, resize=resize, crop=record.crop,
                                         scales=options.get("scales") or multiscale_sides(record.training_crop),
                                         normalize=record.normalize, batch_size=options.get("batch_size", 32),
                                         seed=RECALIBRATION_SEED)
    return {} if per_scale is None else {"batchnorm_per_scale": per_scale}


def evaluate_imagenet(model: torch.nn.Module, weights: Path, data: str | Path | None, protocol: str, precision: str,
                      predictions: bool = False, **options: Any) -> dict[str, Any]:
    folder = Path(data) if data else datasets_root() / EVAL_FOLDERS["imagenet"]
    if (folder / "val").is_dir():
        folder = folder / "val"
    record = preprocessing_of(model)
    class_to_idx = model.meta.get("data", {}).get("class_to_idx") or options.pop("class_to_idx", None)
    if class_to_idx is None and model.spec.num_classes == 1000:
        class_to_idx = {wnid: index for index, wnid in enumerate(imagenet_wnids())}
    images = open_image_folder(folder, class_to_idx=class_to_idx, on_bad_image=options.pop("on_bad_image", "fail"))
    subset = options.pop("eval_subset", None)
    if subset is not None:  # photos spread evenly over the folder, which lists them class by class
        images = ImageFolderDataset.from_samples([images.samples[i] for i in spread_indices(len(images), subset)],
                                                 images.classes, root=images.root, on_bad_image=images.on_bad_image)
    options.setdefault("scales", multiscale_sides(record.training_crop))
    result = evaluate(model, images, protocol, precision=precision, normalize=record.normalize,
                      resize=record.resize, crop_size=record.crop, keep_predictions=predictions, **options)
    if predictions:
        skipped = set(images.bad_images)
        result["predictions"] = [{"image": path, "label": label, "top1": top1, **({"skipped": True} if path in skipped
                                                                                   else {})}
                                 for (path, label), top1 in zip(images.samples, result["predictions"], strict=True)]
    return {"model": model.spec.name, "dataset": "imagenet", "weights": str(weights), "source": str(folder),
            "precision": precision, "num_classes": model.spec.num_classes, **result}
