"""CIFAR-10/100 as whole uint8 tensors (Sec. 4.2 trains on 32x32 images small enough to keep all of them on the GPU).

Reads the official *binary* release (never the python-pickle one: unpickling downloaded files runs code), the
official archive after checking its published MD5, or an image-folder copy such as ../shared/datasets/cifar10-jpeg;
downloads the official archive as a last resort. Image folders are decoded and cached by `decoded.read_image_folder`.
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
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from ..io import atomic_write_bytes
from .decoded import DatasetError, DecodedImages, read_image_folder
from .paths import DATASETS_ENV, datasets_root

SIZE = 32
PIXELS = 3 * SIZE * SIZE
SPLITS = ("train", "test")
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/"


CifarDataError = DatasetError


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


CifarArrays = DecodedImages  # images are N x 3 x 32 x 32


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
            return read_image_folder(folder, split, SIZE, cache, kind="CIFAR")
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


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted index tensors of a random (train, val) partition of range(n): the paper's 45k/5k split (Sec. 4.2).
    Sorted so that the held-out set does not depend on how the caller iterates, only on (n, val_size, seed)."""
    if not 0 <= val_size < n:
        raise ValueError(f"validation size {val_size} must be in [0, {n}) for {n} images")
    held_out = torch.zeros(n, dtype=torch.bool)
    held_out[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:val_size]] = True
    return (~held_out).nonzero().flatten(), held_out.nonzero().flatten()  # a mask, not a sort: O(n) and fast
