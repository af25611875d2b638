"""The paper's ImageNet test protocols (Sec. 3.4) and top-1/top-5 evaluation under each of them.

- `center`: shorter side 256, the centre 224x224 crop (one view).
- `10crop`: the 4 corner and the centre 224x224 crops of the 256-resized image, and their horizontal
  flips (10 views); the softmax scores are averaged over the views. A record that tests the whole photo
  (resize = crop) takes its crops from the photo at 256/224 of the crop (`ten_crop_resize`).
- `multiscale`: the fully-convolutional form (`model.forward_fcn`, the FC applied as a 1x1 conv) on the
  whole image, no crop, resized to each shorter side of `multiscale_sides(crop_size)`, and its flip (10 views).
  The sides are the paper's {224, 256, 384, 480, 640} times crop_size / 224, rounded, where crop_size is the
  side the net was trained at (the record's `training_crop`; the paper's scale range [256, 480] relates to it):
  for 224 crops the paper's own, for the 112 px Imagenette nets {112, 128, 192, 240, 320}, both `imagenette`
  (tested on 112 crops) and `imagenette-fast` (trained on 112 crops, tested on the whole 128 px photo).
  Order of averaging (default `fcn_reduction="mean_then_softmax"`), as in VGG's dense evaluation that the paper
  follows: each view's class score map is averaged over its positions, then turned into probabilities by a
  softmax, and the probabilities are averaged over the flips and scales. For a ResNet (global average pooling
  before a linear FC) a view's averaged score map is exactly `model(view)`'s logits. The option
  `"softmax_then_mean"` takes the softmax at every position of the map first, then averages over positions
  (the default before issue 36; multi-scale records name the reduction they used in `fcn_reduction`).

Every protocol goes through `average_view_probabilities`, which maps a list of views to one probability
vector per image. Views are built as uint8 tensors in the DataLoader workers and converted to float and
normalised on the evaluation device. `evaluate(..., batchnorm_per_scale=...)` runs each multi-scale scale with
its own BN statistics (see `recalibrate.py`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from ..data.folder import BadImagePolicy, ImageFolderDataset, open_image_folder
from ..data.transforms import Normalize, resize_shorter_side, to_float
from ..runtime import autocast
from .metrics import topk_correct
from .recalibrate import BatchNormState, batchnorm_state, load_batchnorm_state

PROTOCOLS = ("center", "10crop", "multiscale")
MULTISCALE_SHORTER_SIDES = (224, 256, 384, 480, 640)


def ten_crop_resize(resize: int, crop_size: int) -> int:
    """The shorter side the ten crops are cut from: the record's `resize`, but at least the paper's 256/224 of the
    crop. A record that tests the whole photo (resize = crop: imagenette-fast's 128/128) would otherwise give ten
    views of one photo; so its crops keep the paper's geometry (the crop spans 224/256 of the shorter side) at the
    net's own test size: 128 px crops of the photo at shorter side 146."""
    return max(resize, round(crop_size * 256 / 224))


def multiscale_sides(crop_size: int = 224) -> tuple[int, ...]:
    """The paper's multi-scale shorter sides scaled like the training resolution (crop_size / 224): a net trained
    on 112 crops is tested at (112, 128, 192, 240, 320)."""
    return tuple(round(side * crop_size / 224) for side in MULTISCALE_SHORTER_SIDES)


FCN_REDUCTIONS = ("mean_then_softmax", "softmax_then_mean")
DEFAULT_FCN_REDUCTION = FCN_REDUCTIONS[0]  # the paper's (VGG's dense evaluation); see the module docstring
Box = tuple[int, int, int, int]  # (top, left, height, width)
ViewGroup = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]  # views (n, 3, h, w) each, labels, positions


def ten_crop_boxes(height: int, width: int, size: int = 224) -> list[Box]:
    """Crop boxes of the 10 views of a (height, width) image: top-left, top-right, bottom-left, bottom-right,
    centre, then the same five boxes again for the horizontally flipped views (crop, then flip the crop).

    The centre offset rounds half to even, like torchvision's center_crop/ten_crop: (256, 341) -> (16, 58).
    """
    if height < size or width < size:
        raise ValueError(f"a {height}x{width} image is smaller than the {size}x{size} crop")
    bottom, right = height - size, width - size
    offsets = [(0, 0), (0, right), (bottom, 0), (bottom, right), (round(bottom / 2), round(right / 2))]
    boxes = [(top, left, size, size) for top, left in offsets]
    return boxes + boxes


def crop_box(image: torch.Tensor, box: Box) -> torch.Tensor:
    top, left, height, width = box
    return image[..., top:top + height, left:left + width]


def center_views(image: torch.Tensor, resize: int = 256, size: int = 224) -> torch.Tensor:
    """uint8 (3, H, W) -> (1, 3, size, size): the centre crop of the `resize`-shorter-side image."""
    return TF.center_crop(resize_shorter_side(image, resize), [size]).unsqueeze(0)


def ten_crop_views(image: torch.Tensor, resize: int = 256, size: int = 224) -> torch.Tensor:
    """uint8 (3, H, W) -> (10, 3, size, size), in the order of `ten_crop_boxes`."""
    resized = resize_shorter_side(image, resize)
    boxes = ten_crop_boxes(resized.shape[-2], resized.shape[-1], size)
    crops = [crop_box(resized, box) for box in boxes[:5]]
    return torch.stack(crops + [TF.horizontal_flip(crop) for crop in crops])


def multiscale_views(image: torch.Tensor, scales: Sequence[int] = MULTISCALE_SHORTER_SIDES,
                     flip: bool = True) -> list[torch.Tensor]:
    """uint8 (3, H, W) -> the whole image resized to each shorter side, each followed by its flip if `flip`."""
    views = []
    for shorter_side in scales:
        resized = resize_shorter_side(image, shorter_side)
        views += [resized, TF.horizontal_flip(resized)] if flip else [resized]
    return views


def average_view_probabilities(model: nn.Module, views: Sequence[torch.Tensor], *, fully_convolutional: bool = False,
                               fcn_reduction: str = DEFAULT_FCN_REDUCTION, normalize: Normalize | None = None,
                               precision: str = "fp32") -> torch.Tensor:
    """Class probabilities (N, classes), float32, averaged over `views` (each (N, 3, h, w), uint8 or float in
    [0, 1], all with the same N). Views of equal size run as one batch. With `fully_convolutional` the score
    maps of `model.forward_fcn` are reduced per `fcn_reduction` (see the module docstring)."""
    if not views:
        raise ValueError("no views to average")
    if fcn_reduction not in FCN_REDUCTIONS:
        raise ValueError(f"fcn_reduction must be one of {FCN_REDUCTIONS}, got {fcn_reduction!r}")
    if fully_convolutional and not hasattr(model, "forward_fcn"):
        raise TypeError(f"{type(model).__name__} has no forward_fcn; multi-scale testing needs a resnets ResNet")
    normalize = Normalize() if normalize is None else normalize
    device = next(model.parameters()).device
    batch = views[0].shape[0]
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for view in views:
        if view.dim() != 4 or view.shape[0] != batch:
            raise ValueError(f"views must be (N, 3, h, w) with the same N; got {tuple(view.shape)}")
        by_shape.setdefault(tuple(view.shape), []).append(view)
    total = None
    for group in by_shape.values():
        inputs = normalize(to_float(torch.cat(group).to(device, non_blocking=True)))
        inputs = inputs.contiguous(memory_format=torch.channels_last)  # 1.35x on CPU (measured, ResNet-34 at 320)
        with autocast(device, precision):
            scores = model.forward_fcn(inputs) if fully_convolutional else model(inputs)
        scores = scores.float()
        if fully_convolutional and fcn_reduction == "softmax_then_mean":
            probabilities = scores.softmax(dim=1).mean(dim=(2, 3))
        elif fully_convolutional:
            probabilities = scores.mean(dim=(2, 3)).softmax(dim=1)
        else:
            probabilities = scores.softmax(dim=1)
        summed = probabilities.reshape(len(group), batch, -1).sum(dim=0)
        total = summed if total is None else total + summed
    assert total is not None
    return total / len(views)


def _per_scale_probabilities(model: nn.Module, views: Sequence[torch.Tensor], scales: Sequence[int],
                             batchnorm: Mapping[int, BatchNormState] | None = None,
                             **options: Any) -> list[torch.Tensor]:
    """Multi-scale views come scale by scale (the image, then its flip): one averaged probability per scale, each
    scale run with its own BN statistics when `batchnorm` maps the shorter sides to them."""
    per_scale = len(views) // len(scales)
    out = []
    for side, start in zip(scales, range(0, len(views), per_scale), strict=True):
        if batchnorm is not None:
            load_batchnorm_state(model, batchnorm[side])
        out.append(average_view_probabilities(model, views[start:start + per_scale], fully_convolutional=True,
                                              **options))
    return out


class _ViewDataset(Dataset):
    """Wraps a dataset of (uint8 (3, H, W) image, label) and turns each image into its test views."""

    def __init__(self, base: Dataset, make_views: Callable[[torch.Tensor], Any]) -> None:
        self.base, self.make_views = base, make_views

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3):
            raise TypeError("evaluate() needs a dataset of (uint8 (3, H, W) image, label) without a transform; "
                            f"got {type(image).__name__} {getattr(image, 'shape', '')}")
        return self.make_views(image), label


def _collate_by_view_sizes(batch: list[tuple[list[torch.Tensor], int]]) -> list[ViewGroup]:
    """Multi-scale views of differently shaped photos differ in size, so a batch is split into groups of images
    whose views all have the same shapes (one group when the photos share one size, as Imagenette's do); each
    group then runs as one forward pass per scale. Positions say where each image sat in the batch."""
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for position, (views, _) in enumerate(batch):
        groups.setdefault(tuple(tuple(view.shape) for view in views), []).append(position)
    return [([torch.stack([batch[p][0][v] for p in positions]) for v in range(len(batch[positions[0]][0]))],
             torch.tensor([batch[p][1] for p in positions]), torch.tensor(positions)) for positions in groups.values()]


def _protocol_views(protocol: str, resize: int, crop_size: int,
                    scales: Sequence[int]) -> Callable[[torch.Tensor], Any]:
    # functools.partial of module-level functions: picklable for spawn-started DataLoader workers.
    if protocol == "center":
        return functools.partial(center_views, resize=resize, size=crop_size)
    if protocol == "10crop":
        return functools.partial(ten_crop_views, resize=ten_crop_resize(resize, crop_size), size=crop_size)
    return functools.partial(multiscale_views, scales=tuple(scales), flip=True)


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset | str | os.PathLike, protocol: str = "10crop", *, batch_size: int = 32,
             device: str | torch.device | None = None, precision: str = "fp32", num_workers: int = 0,
             normalize: Normalize | None = None, class_to_idx: dict[str, int] | None = None,
             on_bad_image: BadImagePolicy = "fail", resize: int = 256, crop_size: int = 224,
             scales: Sequence[int] | None = None, fcn_reduction: str = DEFAULT_FCN_REDUCTION,
             batchnorm_per_scale: Mapping[int, BatchNormState] | None = None, progress: bool = True,
             keep_predictions: bool = False) -> dict[str, Any]:
    """Top-1/top-5 error (%) of `model` under a test protocol (`center`, `10crop` or `multiscale`).

    `data` is an image folder (any layout `open_image_folder` reads; `class_to_idx` maps its classes to the
    model's outputs) or a dataset of (uint8 (3, H, W) image, label) pairs. `normalize` must match training
    (default: torchvision's ImageNet mean/std). `multiscale` runs the shorter sides `scales` (default
    `multiscale_sides(crop_size)`), reduces score maps per `fcn_reduction`, runs each side with
    `batchnorm_per_scale[side]`'s BN statistics when given (the model's own are restored afterwards), and batches
    together the images of a batch whose views have the same sizes. Returns top1_error, top5_error, images,
    images_per_s, seconds, protocol, views_per_image and skipped_images (unreadable files skipped); `multiscale`
    also per_scale_top1_error (shorter side -> top-1 error of that scale and its flip alone) and fcn_reduction;
    with `keep_predictions` also "predictions", each image's top-1 class in dataset order.

    The model is moved in place: to `device` when given, and to the channels_last memory format (1.35x on CPU), as
    `nn.Module.to` does; its weights' values and its outputs are unchanged.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown test protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if fcn_reduction not in FCN_REDUCTIONS:
        raise ValueError(f"fcn_reduction must be one of {FCN_REDUCTIONS}, got {fcn_reduction!r}")
    scales = multiscale_sides(crop_size) if scales is None else tuple(scales)
    if batchnorm_per_scale is not None:
        if protocol != "multiscale":
            raise ValueError("batchnorm_per_scale is for the multiscale protocol; for center and 10crop "
                             "recalibrate the model itself (recalibrate_batchnorm)")
        if not set(scales) <= set(batchnorm_per_scale):
            raise ValueError(f"batchnorm_per_scale has statistics for sides {sorted(batchnorm_per_scale)}, not for "
                             f"every scale of {list(scales)}")
    if isinstance(data, (str, os.PathLike)):
        data = open_image_folder(data, class_to_idx=class_to_idx, on_bad_image=on_bad_image)
    make_views = _protocol_views(protocol, resize, crop_size, scales)
    if isinstance(data, ImageFolderDataset):
        base = data.with_transform(None)
        views_dataset: Dataset = base.with_transform(make_views)
    else:
        base, views_dataset = data, _ViewDataset(data, make_views)
    if device is not None:
        model.to(device)
    model.to(memory_format=torch.channels_last)  # with channels_last views (average_view_probabilities)
    model_device = next(model.parameters()).device
    multiscale = protocol == "multiscale"
    loader = DataLoader(views_dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_by_view_sizes if multiscale else None,
                        pin_memory=model_device.type == "cuda")
    was_training = model.training
    own_batchnorm = None if batchnorm_per_scale is None else batchnorm_state(model)
    model.eval()
    correct1 = correct5 = images = 0
    scale_correct = [0] * len(scales)
    views_per_image = 0
    positions_seen: list[torch.Tensor] = []
    predictions: list[torch.Tensor] = []
    start = time.perf_counter()
    bar = tqdm(total=len(views_dataset), unit="img", desc=f"{protocol} test", disable=not progress)  # type: ignore[arg-type]
    try:
        for batch in loader:
            groups = batch if multiscale else [(list(batch[0].unbind(dim=1)), batch[1], torch.arange(len(batch[1])))]
            for views, labels, positions in groups:
                views_per_image = len(views)
                labels = labels.to(model_device)
                if multiscale:
                    by_scale = _per_scale_probabilities(model, views, scales, batchnorm_per_scale,
                                                        fcn_reduction=fcn_reduction, normalize=normalize,
                                                        precision=precision)
                    scale_correct = [n + topk_correct(p, labels, ks=(1,))[0]
                                     for n, p in zip(scale_correct, by_scale, strict=True)]
                    probabilities = torch.stack(by_scale).mean(dim=0)  # = the mean over all views
                else:
                    probabilities = average_view_probabilities(model, views, normalize=normalize, precision=precision)
                if int(labels.max()) >= probabilities.shape[1]:
                    raise ValueError(f"label {int(labels.max())} is beyond the model's {probabilities.shape[1]} "
                                     "classes; pass class_to_idx mapping the folder's classes to the model's outputs")
                if keep_predictions:
                    positions_seen.append(positions + images)
                    predictions.append(probabilities.argmax(1).cpu())
                hits1, hits5 = topk_correct(probabilities, labels)
                correct1, correct5 = correct1 + hits1, correct5 + hits5
            count = sum(len(labels) for _, labels, _ in groups)
            images += count
            bar.update(count)
            bar.set_postfix(top1_error=f"{100.0 * (1 - correct1 / images):.2f}%")
    finally:
        bar.close()
        if own_batchnorm is not None:
            load_batchnorm_state(model, own_batchnorm)
        model.train(was_training)
    seconds = time.perf_counter() - start
    if images == 0:
        raise ValueError("evaluation saw no images")
    extra: dict[str, Any] = {}
    if keep_predictions:  # back to dataset order (multi-scale groups may reorder a batch)
        extra["predictions"] = torch.cat(predictions)[torch.cat(positions_seen).argsort()].tolist()
    if multiscale:  # each scale alone (with its flip), to see which scales help
        extra["per_scale_top1_error"] = {str(side): 100.0 * (1 - n / images) for side, n in zip(scales, scale_correct,
                                                                                                 strict=True)}
        extra["fcn_reduction"] = fcn_reduction
    return extra | {
        "protocol": protocol,
        "top1_error": 100.0 * (1 - correct1 / images),
        "top5_error": 100.0 * (1 - correct5 / images),
        "images": images,
        "images_per_s": images / seconds,
        "seconds": seconds,
        "views_per_image": views_per_image,
        "skipped_images": len(getattr(base, "bad_images", [])),
    }
