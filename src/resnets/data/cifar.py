"""CIFAR-10/100 as whole uint8 tensors (Sec. 4.2 trains on 32x32 images small enough to keep all of them on the GPU).

Reads the official *binary* release (never the python-pickle one: unpickling downloaded files runs code), the
official archive after checking its published MD5, or an image-folder copy such as ../shared/datasets/cifar10-jpeg;
downloads the official archive as a last resort. Decoded image folders are cached as weights-only tensor files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from ..io import atomic_torch_save, atomic_write_bytes, verify_torch_file
from .folder import IMAGE_FORMATS, BadImageError, read_image
from .paths import DATASETS_ENV, cache_dir, datasets_root

SIZE = 32
PIXELS = 3 * SIZE * SIZE
SPLITS = ("train", "test")
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/"
CACHE_VERSION = 1  # bump when the cached layout changes so that old files are ignored, not misread


class CifarDataError(ValueError):
    """Data that exists but cannot be used: truncated files, wrong checksums, undecodable or mis-sized images."""


@dataclass(frozen=True)
class CifarFormat:
    """One official binary release: archive name and published MD5 (https://www.cs.toronto.edu/~kriz/cifar.html)."""

    name: str
    archive: str
    md5: str
    folder: str
    files: dict[str, tuple[str, ...]]  # split -> record files, in the official order
    label_bytes: int  # CIFAR-100 records carry (coarse, fine)
    names_file: str
    coarse_names_file: str | None = None

    @property
    def url(self) -> str:
        return OFFICIAL_URL + self.archive

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS


FORMATS = {
    "cifar10": CifarFormat(
        "cifar10", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin",
        {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
        label_bytes=1, names_file="batches.meta.txt"),
    "cifar100": CifarFormat(
        "cifar100", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", "cifar-100-binary",
        {"train": ("train.bin",), "test": ("test.bin",)},
        label_bytes=2, names_file="fine_label_names.txt", coarse_names_file="coarse_label_names.txt"),
}


@dataclass
class CifarArrays:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32, contiguous
    labels: torch.Tensor  # int64, N
    classes: list[str]
    source: str  # what was read, for logs and run summaries

    def __len__(self) -> int:
        return len(self.labels)


def load_cifar(data: str | Path | None = None, name: str = "cifar10", split: str = "train", download: bool = True,
               cache: bool = True, *, coarse: bool = False, url: str | None = None,
               md5: str | None = None) -> CifarArrays:
    """Find and read one split of CIFAR under `data` (default: datasets_root()).

    Tried in order: the official binary folder (`data` itself or data/cifar-10-batches-bin), the official archive
    in `data`, an image folder (data/<split>/<class>/* or data/cifar10-jpeg/<split>/<class>/*), then a download of
    the official archive into `data`. `url` and `md5` replace the official ones (mirrors; tests use file:// URLs).
    `coarse` selects CIFAR-100's 20 superclasses instead of its 100 fine classes.
    """
    fmt = cifar_format(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if coarse and fmt.coarse_names_file is None:
        raise ValueError(f"{name} has no coarse labels; coarse=True is for cifar100")
    root = Path(data).expanduser() if data is not None else datasets_root()
    looked: list[str] = []
    for folder in (root, root / fmt.folder):
        looked.append(f"{folder} (binary {', '.join(fmt.files[split])})")
        if any((folder / file).exists() for files in fmt.files.values() for file in files):
            return read_binary_folder(folder, fmt, split, coarse)
    archive = root / fmt.archive
    looked.append(str(archive))
    if archive.is_file():
        return read_binary_folder(extract_archive(archive, root, fmt, md5), fmt, split, coarse)
    for folder in (root, root / f"{fmt.name}-jpeg"):
        looked.append(f"{folder / split}/<class>/*")
        if (folder / split).is_dir():
            return read_image_folder(folder, split, cache)
    how = (f"point at the data with --data DIR or ${DATASETS_ENV} (a folder holding {fmt.folder}/, {fmt.archive}, "
           f"or {split}/<class>/ image folders)")
    where = "; ".join(looked)
    if not download:
        raise FileNotFoundError(f"{fmt.name} {split} data not found (looked in: {where}); download disabled; {how}")
    source_url = url or fmt.url
    try:
        download_file(source_url, archive)
    except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors; a malformed URL is a ValueError
        raise FileNotFoundError(f"{fmt.name} {split} data not found (looked in: {where}); downloading {source_url} "
                                f"failed ({error}); {how}") from error
    return read_binary_folder(extract_archive(archive, root, fmt, md5), fmt, split, coarse)


def cifar_format(name: str) -> CifarFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def read_binary_folder(folder: Path, fmt: CifarFormat, split: str, coarse: bool = False) -> CifarArrays:
    """Records of (label byte(s), 1024 R, 1024 G, 1024 B), rows in order: a reshape, no per-image work."""
    image_parts, label_parts = [], []
    label_offset = 0 if coarse else fmt.label_bytes - 1
    for file in fmt.files[split]:
        path = folder / file
        if not path.is_file():
            raise CifarDataError(f"{path} is missing from the {fmt.name} binary folder {folder}; "
                                 f"re-extract {fmt.archive} or point --data elsewhere")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % fmt.record_bytes:
            raise CifarDataError(f"{path}: {raw.size:,} bytes is not a whole number of {fmt.record_bytes}-byte "
                                 f"{fmt.name} records (truncated or not {fmt.name}); re-extract it from "
                                 f"{fmt.archive} or download that archive again")
        records = raw.reshape(-1, fmt.record_bytes)
        label_parts.append(records[:, label_offset])
        image_parts.append(records[:, fmt.label_bytes:])
    names_file = folder / (fmt.coarse_names_file if coarse else fmt.names_file)
    classes = read_class_names(names_file)
    labels = torch.from_numpy(np.concatenate(label_parts).astype(np.int64))
    if int(labels.max()) >= len(classes):
        raise CifarDataError(f"{folder}: label {int(labels.max())} but {names_file.name} names only {len(classes)} "
                             f"classes; the files do not belong together, re-extract {fmt.archive}")
    images = torch.from_numpy(np.concatenate(image_parts)).view(-1, 3, SIZE, SIZE)  # concatenate copies: contiguous
    return CifarArrays(images, labels, classes, f"official binary {folder.resolve()} ({', '.join(fmt.files[split])})")


def read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise CifarDataError(f"{path} (class names) is missing; re-extract the official archive")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise CifarDataError(f"{path} names no classes; re-extract the official archive")
    return names


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def extract_archive(archive: Path, destination: Path, fmt: CifarFormat, md5: str | None = None) -> Path:
    """Check the archive's MD5, extract it with tarfile's "data" filter (no links out, no absolute paths, no device
    files) into a staging folder, then move the one expected folder into place: a failed extraction leaves nothing
    that a later call would mistake for data. Returns destination/<fmt.folder>."""
    expected = md5 or fmt.md5
    actual = file_md5(archive)
    if actual != expected:
        raise CifarDataError(f"{archive}: MD5 {actual} differs from the published {expected} (incomplete download or "
                             f"not the official {fmt.archive}); delete it and download {fmt.url} again")
    target = destination / fmt.folder
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt.folder}.", dir=destination))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        if not (staging / fmt.folder).is_dir():
            raise CifarDataError(f"{archive} has no {fmt.folder}/ folder; it is not the official {fmt.archive}")
        os.replace(staging / fmt.folder, target)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CifarDataError(f"{archive}: cannot extract into {target} ({error}); check the file and the folder, "
                             f"or download {fmt.url} again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download_file(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Stream `url` to a temporary file beside `target`, renamed only when complete."""

    def stream(out: BinaryIO) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))

    return atomic_write_bytes(target, stream)


def read_image_folder(root: Path, split: str, cache: bool = True) -> CifarArrays:
    """root/<split>/<class>/<image>: class index = position of the class folder name in sorted order, as in
    torchvision's ImageFolder (for CIFAR-10 that alphabetical order is also the official label order)."""
    folder = root / split
    classes = class_folders(folder)
    for other in SPLITS:
        if other != split and (root / other).is_dir() and class_folders(root / other) != classes:
            raise CifarDataError(f"{folder} and {root / other} hold different class folders; class indices would "
                                 "disagree between splits: make both hold the same classes")
    files, labels, fingerprint = list_images(folder, classes)
    kinds = "/".join(sorted({IMAGE_FORMATS[path.suffix.lower()] for path in files}))
    source = f"image folder {folder.resolve()} ({kinds})"
    cache_file = cache_dir() / f"{root.resolve().name}-{split}-{fingerprint[:20]}.pt"
    if cache and (cached := read_cache(cache_file, len(files))) is not None:
        return CifarArrays(cached["images"], cached["labels"], cached["classes"], f"{source}, cached {cache_file}")
    images = torch.empty(len(files), 3, SIZE, SIZE, dtype=torch.uint8)
    for index, path in enumerate(tqdm(files, desc=f"decode {folder}", unit="img", leave=False, disable=None)):
        images[index] = decode_rgb32(path)
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    if cache:
        atomic_torch_save({"version": CACHE_VERSION, "images": images, "labels": label_tensor, "classes": classes},
                          cache_file)
    return CifarArrays(images, label_tensor, classes, source)


def class_folders(folder: Path) -> list[str]:
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise CifarDataError(f"{folder} has no class folders; expected {folder}/<class>/<image files>")
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
            raise CifarDataError(f"{folder / name} holds no images ({', '.join(IMAGE_FORMATS)}); "
                                 "remove the empty class folder or add its images")
        for entry in entries:
            stat = entry.stat()
            digest.update(f"{name}/{entry.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            files.append(Path(entry.path))
            labels.append(label)
    return files, labels, digest.hexdigest()


def decode_rgb32(path: Path) -> torch.Tensor:
    """3 x 32 x 32 uint8 RGB (grey and palette images are converted); anything else is an error naming the file."""
    try:
        image = read_image(path)
    except BadImageError as error:
        raise CifarDataError(f"{path}: cannot decode this image ({error.reason}); replace or remove the file") from None
    if tuple(image.shape[1:]) != (SIZE, SIZE):
        raise CifarDataError(f"{path}: image is {image.shape[2]}x{image.shape[1]}, CIFAR images are {SIZE}x{SIZE}; "
                             "resize or remove it")
    return image


def read_cache(path: Path, count: int) -> dict[str, Any] | None:
    """The cached tensors if the file is whole and matches; None otherwise, since a cache can always be rebuilt."""
    if not path.is_file():
        return None
    try:
        verify_torch_file(path)  # a flipped byte in the cached pixels must mean "rebuild", not "train on it"
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images, labels, classes = blob["images"], blob["labels"], blob["classes"]
        valid = (blob.get("version") == CACHE_VERSION and images.dtype == torch.uint8
                 and tuple(images.shape) == (count, 3, SIZE, SIZE) and images.is_contiguous()
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


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted index tensors of a random (train, val) partition of range(n): the paper's 45k/5k split (Sec. 4.2).
    Sorted so that the held-out set does not depend on how the caller iterates, only on (n, val_size, seed)."""
    if not 0 <= val_size < n:
        raise ValueError(f"validation size {val_size} must be in [0, {n}) for {n} images")
    held_out = torch.zeros(n, dtype=torch.bool)
    held_out[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:val_size]] = True
    return (~held_out).nonzero().flatten(), held_out.nonzero().flatten()  # a mask, not a sort: O(n) and fast


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
