"""BatchNorm re-estimation at the test size (`resnets eval --recalibrate-bn N`), an option beyond the paper.

A net trained only on 112x112 crops has BN statistics of 112x112 inputs, whose small late maps are nearly all
border; fed whole photos at 192 or 320 px its activations have other statistics (the train/test mismatch of
FixRes). Re-estimating only the BN running means and variances on a few training photos at the test size, with
every weight (convolutions, FC, BN's affine scale and shift) untouched, removes most of that loss.

How: the model goes to eval mode with only its BN layers in train mode, their running statistics are reset and
re-accumulated as a cumulative average over the batches (PyTorch's momentum=None, but weighted by images so that
a short last batch counts for what it holds), under no_grad; then the model is back in eval mode with its BN
momentum restored. As with any BN running average, a layer's variance is the mean of the per-batch variances: it
leaves out the spread of the batch means, which for batches of 32 photos is small.

Which views: `center` and `10crop` see the photos as the centre view (shorter side `resize`, centre crop `crop`;
10-crop's views have the same size and object scale). `multiscale` keeps one copy of the statistics per scale,
each estimated on the whole photos resized to that scale's shorter side, and evaluates each scale with its own
copy (`evaluate(..., batchnorm_per_scale=...)`). The flips are not fed: a flip does not change a channel's mean or
variance over a map.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ..data.folder import open_image_folder
from ..data.transforms import Normalize, resize_shorter_side, to_float

BatchNormState = dict[str, torch.Tensor]  # buffer name -> running_mean / running_var / num_batches_tracked


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats]


def batchnorm_state(model: nn.Module) -> BatchNormState:
    """A copy of every BN layer's running statistics."""
    return {f"{name}.{buffer}": getattr(module, buffer).detach().clone()
            for name, module in batchnorm_layers(model)
            for buffer in ("running_mean", "running_var", "num_batches_tracked")}


def load_batchnorm_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` (from `batchnorm_state` of the same architecture) into the model's BN buffers, in place."""
    buffers = dict(model.named_buffers())
    missing = sorted(set(state) - set(buffers))
    if missing:
        raise KeyError(f"the model has no BN buffers {missing[:3]}: the statistics belong to another architecture")
    with torch.no_grad():
        for name, value in state.items():
            buffers[name].copy_(value)


def _batches(views: Sequence[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    """Views (3, h, w) of equal shape stacked batch_size at a time (shapes kept apart: whole photos may differ)."""
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for view in views:
        by_shape.setdefault(tuple(view.shape), []).append(view)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            yield torch.stack(group[start:start + batch_size])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Sequence[torch.Tensor], sizes: int | Sequence[int], *,
                          crop: int | None = None, normalize: Normalize | None = None,
                          batch_size: int = 32) -> nn.Module:
    """Re-estimate the BN running statistics of `model` (in place; returned in eval mode) on `images` (uint8
    (3, H, W) photos), each resized to shorter side s for every s in `sizes` and fed whole, or centre-cropped to
    `crop` x `crop` when given. Several sizes give one set of statistics pooled over all of them (for one set per
    scale, see `per_scale_batchnorm`). `normalize` must be the evaluation's (default: torchvision's ImageNet
    mean/std). Weights are never changed."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers with running statistics to re-estimate "
                         "(a BN-folded or optimised model: recalibrate the eager model before optimising it)")
    if not images:
        raise ValueError("BN recalibration needs at least one photo")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    normalize = Normalize() if normalize is None else normalize
    device = next(model.parameters()).device
    views = []
    for image in images:
        for size in sizes:
            view = resize_shorter_side(image, size)
            views.append(view if crop is None else TF.center_crop(view, [crop]))
    momenta = [module.momentum for _, module in layers]
    model.eval()
    for _, module in layers:
        module.reset_running_stats()
        module.train()
    seen = 0
    try:
        for batch in _batches(views, batch_size):
            # cumulative average weighted by images: this batch's share of all images seen so far
            for _, module in layers:
                module.momentum = len(batch) / (seen + len(batch))
            model(normalize(to_float(batch.to(device))))
            seen += len(batch)
    finally:
        for (_, module), momentum in zip(layers, momenta, strict=True):
            module.momentum = momentum
        model.eval()
    return model


def per_scale_batchnorm(model: nn.Module, images: Sequence[torch.Tensor], sizes: Sequence[int], *,
                        normalize: Normalize | None = None, batch_size: int = 32) -> dict[int, BatchNormState]:
    """One copy of the BN statistics per shorter side in `sizes`, each re-estimated on the whole `images` at that
    side (`recalibrate_batchnorm`); the model's own statistics are restored afterwards."""
    original = batchnorm_state(model)
    try:
        return {size: batchnorm_state(recalibrate_batchnorm(model, images, size, normalize=normalize,
                                                            batch_size=batch_size)) for size in sizes}
    finally:
        load_batchnorm_state(model, original)


def train_folder_of(eval_folder: str | os.PathLike) -> Path:
    """The training split beside an evaluation folder: DATA/val -> DATA/train, or DATA/train under DATA."""
    folder = Path(eval_folder)
    for candidate in (folder.parent / "train" if folder.name == "val" else None, folder / "train"):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"--recalibrate-bn needs training photos: no train/ folder beside or under {folder}; "
                            "pass --data DIR holding train/<class>/ and val/<class>/")


def training_photos(folder: str | os.PathLike, count: int, seed: int = 0) -> list[torch.Tensor]:
    """`count` photos (uint8 (3, H, W)) drawn from an image folder with a fixed seed, in drawn order."""
    if count < 1:
        raise ValueError(f"--recalibrate-bn takes a positive number of training photos, got {count}")
    dataset = open_image_folder(folder)
    chosen = random.Random(seed).sample(range(len(dataset)), min(count, len(dataset)))
    return [dataset.load(index)[0] for index in chosen]


def recalibrate_for_protocol(model: nn.Module, train_folder: str | os.PathLike, protocol: str, photos: int, *,
                             resize: int, crop: int, scales: Sequence[int], normalize: Normalize | None = None,
                             batch_size: int = 32, seed: int = 0) -> dict[int, BatchNormState] | None:
    """`--recalibrate-bn photos`: `photos` training photos (seeded draw) re-estimate the BN statistics as the
    protocol sees its inputs (module docstring). `center`/`10crop`: the model's statistics are replaced, returns
    None; `multiscale`: the model is left as it was, returns one state per shorter side in `scales` for
    `evaluate(batchnorm_per_scale=...)`."""
    images = training_photos(train_folder, photos, seed)
    if protocol == "multiscale":
        return per_scale_batchnorm(model, images, scales, normalize=normalize, batch_size=batch_size)
    recalibrate_batchnorm(model, images, resize, crop=crop, normalize=normalize, batch_size=batch_size)
    return None
