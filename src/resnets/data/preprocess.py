"""The one preprocessing record: what turns uint8 RGB images into the input a network's weights expect.

Every dataset builder writes it (CIFAR: the per-pixel mean image of Sec. 4.2; ImageNet: shorter side, centre crop
and the per-pixel mean image of Sec. 3.4 or torchvision's per-channel mean/std), it travels with the weights as
`meta["preprocess"]`, and eval, predict, export, responses and the report read it back with `Preprocessing.from_meta`.
Weights without a record (torchvision/timm files, bare state_dicts) get their family's defaults:
ImageNet: shorter side 256, centre 224, /255, torchvision's mean and std. CIFAR: 32x32, /255, the training set's
per-channel mean, no std division.

    import resnets
    model = resnets.create_model("resnet20", pretrained=True)
    inputs = resnets.preprocess(model, uint8_images)   # N x 3 x H x W uint8 tensor, or a list of PIL images
    logits = model.eval()(inputs)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .transforms import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, EvalTransform, Normalize

# Per-channel means of the training sets on [0, 1] (the defaults for CIFAR weights that store no record).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)


@dataclass(frozen=True)
class Preprocessing:
    """uint8 RGB image -> network input: shorter side to `resize`, centre `crop`, /255, minus the mean image (or the
    per-channel `mean`), / `std` when given. `train_crop`: the side of the training crops when the net is tested at
    another (`imagenette-fast` trains on 112 px crops and tests the whole 128 px photo); the test protocols scale their
    geometry from it (`training_crop`)."""

    kind: str  # "imagenet" or "cifar"
    resize: int
    crop: int
    mean: tuple[float, ...]  # per channel, on [0, 1]; the channel average of `mean_image` when that is set
    std: tuple[float, ...] | None = None
    mean_image: torch.Tensor | None = field(default=None, repr=False, compare=False)  # (3, crop, crop) on [0, 1]
    train_crop: int | None = None

    def __post_init__(self) -> None:
        if self.resize < self.crop:
            raise ValueError(f"preprocess resize ({self.resize}) must be >= crop ({self.crop})")
        if self.mean_image is not None and tuple(self.mean_image.shape) != (3, self.crop, self.crop):
            raise ValueError(f"preprocess mean_image has shape {tuple(self.mean_image.shape)}, expected "
                             f"(3, {self.crop}, {self.crop}) to match the crop")

    @property
    def training_crop(self) -> int:
        """The side the net was trained at: `train_crop`, else the test `crop` (the two are one in the paper)."""
        return self.crop if self.train_crop is None else self.train_crop

    @cached_property  # built once per record, not once per image (predict calls the record image by image)
    def normalize(self) -> Normalize:
        return Normalize(self.mean if self.mean_image is None else self.mean_image, self.std)

    @cached_property
    def normalize_any_size(self) -> Normalize:
        """The normalisation of an input of any size (whole photos, other scales): the per-channel `mean`, which a
        per-pixel mean image falls back to at any other size than its crop (as `Normalize` does)."""
        return Normalize(self.mean, self.std)

    @cached_property
    def transform(self) -> EvalTransform:
        return EvalTransform(self.resize, self.crop, self.normalize)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) or (N, 3, H, W) -> float network input of the same rank."""
        return self.transform(images)

    def to_meta(self) -> dict[str, Any]:
        """What a weight file stores (tensors kept as tensors: weights-only torch files hold them)."""
        meta: dict[str, Any] = {"kind": self.kind, "resize": self.resize, "crop": self.crop, "mean": list(self.mean),
                                "std": None if self.std is None else list(self.std)}
        if self.mean_image is not None:
            meta["mean_image"] = self.mean_image.detach().cpu().float()
        if self.train_crop is not None:
            meta["train_crop"] = self.train_crop
        return meta

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (shipped-weights JSON, ONNX metadata): floats rounded to 7 decimals, far below a
        uint8 step (1/255)."""
        meta = self.to_meta() | {"scale": "pixel / 255", "channels": "RGB", "layout": "NCHW float32"}
        meta["mean"] = [round(float(m), 7) for m in self.mean]
        meta["std"] = None if self.std is None else [round(float(s), 7) for s in self.std]
        if self.mean_image is not None:
            meta["mean_image"] = np.round(self.mean_image.double().numpy(), 7).tolist()
        return meta

    def describe(self) -> str:
        mean = (f"per-pixel mean image {tuple(self.mean_image.shape)}" if self.mean_image is not None
                else f"mean {[round(m, 4) for m in self.mean]}")
        std = f", / std {[round(s, 4) for s in self.std]}" if self.std is not None else ", no std division"
        return f"shorter side {self.resize}, centre crop {self.crop}, /255, minus {mean}{std}"

    @classmethod
    def default(cls, family: str, num_classes: int) -> Preprocessing:
        if family == "cifar":
            return cls("cifar", 32, 32, CIFAR100_MEAN if num_classes == 100 else CIFAR10_MEAN, None)
        return cls("imagenet", 256, 224, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)

    @classmethod
    def from_meta(cls, given: Any, family: str, num_classes: int, source: str = "weights") -> Preprocessing:
        """A stored record, with the family's defaults filling what it leaves out.

        Also reads the keys of files written before this record existed: `size` (crop), `normalize_mean` /
        `normalize_std` (ImageNet runs: the mean image or per-channel mean), 0..255 means (divided by 255).
        """
        base = cls.default(family, num_classes)
        if not given:
            return base
        if not isinstance(given, dict):
            raise ValueError(f"{source}: meta['preprocess'] must be a dict, found {type(given).__name__}")
        crop = int(given.get("crop", given.get("size", base.crop)))
        # Without an explicit resize keep the family's resize/crop ratio (256/224 ImageNet, 1 CIFAR).
        resize = int(given.get("resize", round(crop * base.resize / base.crop)))
        mean_value = given.get("mean_image", given.get("normalize_mean", given.get("mean")))
        std_value = given["std"] if "std" in given else given.get("normalize_std", base.std)
        mean_tensor = torch.as_tensor(mean_value if mean_value is not None else base.mean, dtype=torch.float32)
        scale = 255.0 if float(mean_tensor.max()) > 1.5 else 1.0  # a 0..255 mean (e.g. 125.3, 123.0, 113.9)
        mean_tensor = mean_tensor / scale
        std = _channels(std_value, "std", source)
        std = None if std is None else tuple(s / scale for s in std)
        kind = str(given.get("kind", base.kind))
        train_crop = None if given.get("train_crop") is None else int(given["train_crop"])
        if mean_tensor.dim() == 3:
            return cls(kind, resize, crop, tuple(mean_tensor.mean(dim=(1, 2)).tolist()), std, mean_tensor, train_crop)
        return cls(kind, resize, crop, _channels(mean_tensor, "mean", source), std, train_crop=train_crop)


def _channels(value: Any, what: str, source: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = tuple(float(v) for v in torch.as_tensor(value, dtype=torch.float64).flatten().tolist())
    if len(values) != 3:
        raise ValueError(f"{source}: preprocess {what} must have 3 values (R, G, B), got {len(values)}")
    return values


def preprocessing_of(model: torch.nn.Module) -> Preprocessing:
    """The preprocessing a model's weights expect: the record in `model.meta` (weights loaded from a file, a run or
    the package), else its family's defaults."""
    spec = model.spec
    return Preprocessing.from_meta((getattr(model, "meta", None) or {}).get("preprocess"), spec.family,
                                   spec.num_classes, source=f"{spec.name} weights")


def preprocess(model: torch.nn.Module, images: torch.Tensor | Sequence[Any]) -> torch.Tensor:
    """uint8 RGB images -> the float batch that `model`'s own weights expect (shipped, trained or imported).

    `images`: an N x 3 x H x W (or 3 x H x W) uint8 tensor, or a list of PIL images or uint8 3 x H x W tensors of
    any sizes (each is resized and centre-cropped on its own).
    """
    record = preprocessing_of(model)
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"preprocess expects uint8 RGB images (N x 3 x H x W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        return record(images)
    return torch.stack([record(_as_uint8_tensor(image)) for image in images])


def _as_uint8_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"preprocess expects uint8 3 x H x W tensors, got {image.dtype} {tuple(image.shape)}")
        return image
    if hasattr(image, "convert"):  # a PIL image
        array = np.array(image.convert("RGB"), dtype=np.uint8, copy=True)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
    raise TypeError(f"preprocess takes uint8 tensors or PIL images, got {type(image).__name__}")
