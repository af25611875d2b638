"""Datasets small enough to hold whole: every image decoded once into one uint8 N x 3 x S x S tensor.

CIFAR (32x32, Sec. 4.2) and Imagenette (ImageNet photos stored at 224x224) are trained from such tensors: the batch
augmentation then runs as a few tensor ops on the training device instead of per-image Python work in DataLoader
workers. A decoded image folder is cached as a weights-only tensor file keyed by a fingerprint of every file's name,
size and mtime, and verified on load (a damaged cache is rebuilt, never trained on).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from tqdm import tqdm

from ..io import atomic_torch_save, verify_torch_file
from .folder import IMAGE_FORMATS, BadImageError, read_image
from .paths import cache_dir
from .transforms import resize_shorter_side

# Bump when the cached layout or the decoded pixels change, so that old files are ignored, not misread.
# 2: decoded by Pillow with EXIF orientation applied (1: torchvision.io, EXIF-rotated photos left sideways).
CACHE_VERSION = 2
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(ValueError):
    """Data that exists but cannot be used: truncated files, wrong checksums, undecodable or mis-sized images."""


@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8, N x 3 x S x S, contiguous
    labels: torch.Tensor  # int64, N
    classes: list[str]
    source: str  # what was read, for logs and run summaries
    files: list[str] = field(default_factory=list)  # the image files, in the order of `labels`

    def __len__(self) -> int:
        return len(self.labels)


def read_image_folder(root: Path, split: str, size: int, cache: bool = True, kind: str = "",
                      fit: bool = False) -> DecodedImages:
    """root/<split>/<class>/<image>, every image `size` x `size` (grey and palette images become RGB): class index =
    position of the class folder name in sorted order, as in torchvision's ImageFolder. `kind` names the dataset in
    errors ("CIFAR images are 32x32"). `fit`: photos of any size, each resized to shorter side `size` and its centre
    `size` x `size` square kept (your own photos, `--dataset folder`)."""
    folder = root / split
    classes = class_folders(folder)
    for other in SPLIT_NAMES:
        if other != split and (root / other).is_dir() and class_folders(root / other) != classes:
            raise DatasetError(f"{folder} and {root / other} hold different class folders; class indices would "
                               "disagree between splits: make both hold the same classes")
    files, labels, fingerprint = list_images(folder, classes)
    kinds = "/".join(sorted({IMAGE_FORMATS[path.suffix.lower()] for path in files}))
    source = f"image folder {folder.resolve()} ({kinds})"
    fitted = f"-fit{size}" if fit else ""
    cache_file = cache_dir() / f"{root.resolve().name}-{split}{fitted}-{fingerprint[:20]}.pt"
    names = [str(path) for path in files]
    if cache and (cached := read_cache(cache_file, len(files), size)) is not None:
        return DecodedImages(cached["images"], cached["labels"], cached["classes"], f"{source}, cached {cache_file}",
                             names)
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for index, path in enumerate(tqdm(files, desc=f"decode {folder}", unit="img", leave=False, disable=None)):
        images[index] = decode_fitted(path, size) if fit else decode_fixed_size(path, size, kind)
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    if cache:
        atomic_torch_save({"version": CACHE_VERSION, "images": images, "labels": label_tensor, "classes": classes},
                          cache_file)
    return DecodedImages(images, label_tensor, classes, source, names)


def class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; expected {folder}/<class>/<image files>")
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DatasetError(f"{folder} has no class folders; expected {folder}/<class>/<image files>")
    return classes


def list_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int], str]:
    """Image paths and labels in a fixed order, plus a fingerprint of every name, size and mtime: any added,
    removed, renamed or rewritten file gives a new fingerprint and so a new cache key."""
    files: list[Path] = []
    labels: list[int] = []
    digest = hashlib.sha256(f"{CACHE_VERSION}|{folder.resolve()}".encode())
    for label, name in enumerate(classes):
        entries = sorted((entry for entry in os.scandir(folder / name)
                          if entry.is_file() and not entry.name.startswith(".")
                          and Path(entry.name).suffix.lower() in IMAGE_FORMATS), key=lambda entry: entry.name)
        if not entries:
            raise DatasetError(f"{folder / name} holds no images ({', '.join(IMAGE_FORMATS)}); "
                               "remove the empty class folder or add its images")
        for entry in entries:
            stat = entry.stat()
            digest.update(f"{name}/{entry.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            files.append(Path(entry.path))
            labels.append(label)
    return files, labels, digest.hexdigest()


def decode_fixed_size(path: Path, size: int, kind: str = "") -> torch.Tensor:
    """3 x size x size uint8 RGB; anything else is an error naming the file."""
    try:
        image = read_image(path)
    except BadImageError as error:
        raise DatasetError(f"{path}: cannot decode this image ({error.reason}); replace or remove the file") from None
    if tuple(image.shape[1:]) != (size, size):
        what = f"{kind} images" if kind else "images of this dataset"
        raise DatasetError(f"{path}: image is {image.shape[2]}x{image.shape[1]}, {what} are {size}x{size}; "
                           "resize or remove it")
    return image


def decode_fitted(path: Path, size: int) -> torch.Tensor:
    """3 x size x size uint8 RGB: the photo resized to shorter side `size` (antialiased), its centre square."""
    try:
        image = read_image(path)
    except BadImageError as error:
        raise DatasetError(f"{path}: cannot decode this image ({error.reason}); replace or remove the file") from None
    return TF.center_crop(resize_shorter_side(image, size), [size])


def read_cache(path: Path, count: int, size: int) -> dict[str, Any] | None:
    """The cached tensors if the file is whole and matches; None otherwise, since a cache can always be rebuilt."""
    if not path.is_file():
        return None
    try:
        verify_torch_file(path)  # a flipped byte in the cached pixels must mean "rebuild", not "train on it"
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images, labels, classes = blob["images"], blob["labels"], blob["classes"]
        valid = (blob.get("version") == CACHE_VERSION and images.dtype == torch.uint8
                 and tuple(images.shape) == (count, 3, size, size) and images.is_contiguous()
                 and labels.dtype == torch.int64 and tuple(labels.shape) == (count,)
                 and all(isinstance(name, str) for name in classes))
    except Exception:  # truncated, foreign or corrupt file: rebuild rather than fail
        return None
    return blob if valid else None


def spread_indices(total: int, count: int | None) -> torch.Tensor:
    """`count` indices spread evenly over range(total) (every total//count-th): image-folder copies list the test
    set class by class, so its first 1,000 images would all be airplanes; these take 100 of each class."""
    if count is None or count >= total:
        return torch.arange(total)
    if count < 1:
        raise ValueError(f"a test subset needs at least 1 image, got {count}")
    return torch.arange(count) * (total // count)


def per_pixel_mean(images: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Mean image (3 x H x W, float32 in [0, 1]) of uint8 images, summed exactly in int64 without ever making a
    float copy of the whole set (600 MB for 50,000 images): numpy on CPU (it casts in small buffers and is ~20x
    faster than torch's CPU reduction here), chunk by chunk elsewhere."""
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"per_pixel_mean needs a non-empty uint8 N x C x H x W tensor, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if images.device.type == "cpu":
        total = torch.from_numpy(images.numpy().sum(0, dtype=np.int64))
    else:
        total = torch.zeros(images.shape[1:], dtype=torch.int64, device=images.device)
        for part in images.split(chunk):
            total += part.sum(0, dtype=torch.int64)
    return (total.double() / (255.0 * len(images))).float()
