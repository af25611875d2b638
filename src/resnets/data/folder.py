"""ImageNet-style folder datasets: decode to uint8 RGB tensors, labels from folders, a labels file or file names.

Layouts: `root/<class>/<image>` (classes = sorted folder names, like torchvision's ImageFolder); a flat
folder plus a labels file (lines `filename label`, separated by spaces, a tab or a comma; label a class
name such as a WordNet id, or an integer index); a flat folder of `<wnid>_<name>.JPEG` files (the
imagenet-sample layout) where the label is the position of the wnid in a given list.

Decoding: Pillow (libjpeg-turbo, libpng, libwebp, ...) in `decode_image_bytes`, the one decoder every caller uses.
torchvision 0.29 deprecates its own decoders, and Pillow measured as fast on JPEGs of every size we use, with the
same pixels (docs/decoding.md, benchmarks/decode.py). EXIF orientation is applied (a phone photo stored sideways
comes out upright); grayscale, CMYK, RGBA, palette and 16-bit images all come out as 8-bit RGB.

Unreadable images (corrupt, truncated, empty, unknown format) follow `on_bad_image`:
- "fail": raise `BadImageError` naming the file and the fix.
- "skip": log a warning naming the file and return the next readable sample instead. The skipped files
  are counted in a shared-memory flag tensor, so `dataset.bad_images` in the main process also lists files
  that DataLoader worker processes skipped (fork or spawn), and every worker logs its own warnings.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

# Suffix -> format name: what an image folder may hold (all decoded by Pillow).
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_EXTENSIONS = tuple(IMAGE_FORMATS)
BAD_IMAGE_POLICIES = ("fail", "skip")
BadImagePolicy = Literal["fail", "skip"]
_WNID = re.compile(r"^n\d{8}$")
# Pillow's modes of 16-bit (and 32-bit integer) grey: scaled to 8 bits by their high byte, where convert() would clip.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# "filename label": the label has no spaces or commas, the file name may have spaces.
_LABEL_LINE = re.compile(r"^(.+?)(?:\s*,\s*|\s+)([^\s,]+)$")


class BadImageError(RuntimeError):
    """An image file that cannot be decoded; the message names the file and what to do."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot decode image {path}: {reason}. Replace or delete the file, or pass "
                         "--on-bad-image skip (on_bad_image='skip') to skip unreadable images.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0].strip()
    return text or type(exc).__name__


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image, upright, as an (H, W, 3) uint8 array."""
    ImageOps.exif_transpose(image, in_place=True)  # EXIF orientation 2-8: stored sideways or mirrored
    if image.mode in _WIDE_GREY_MODES:
        # 16-bit grey: keep the high byte (what libpng's strip-16 and torchvision's to_dtype(scale=True) do).
        grey = (np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        # Alpha is dropped, not blended; without this pop, Pillow warns for palettes with per-entry transparency.
        image.info.pop("transparency", None)
        image = image.convert("RGB")  # L, LA, P, PA, RGBA, CMYK, YCbCr, 1; 16-bit RGB(A) PNGs open as 8-bit already
    return np.asarray(image)


def decode_image_bytes(data: bytes, source: str = "<bytes>") -> torch.Tensor:
    """Encoded image bytes -> uint8 RGB tensor (3, H, W), upright; BadImageError (naming `source`) when unreadable.

    The one image decoder of the package: folders, caches, predict, calibration and detection all come through here.
    """
    if not data:
        raise BadImageError(source, "the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so that a truncated or corrupt file fails inside this try
            pixels = _rgb_pixels(image)
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image in a format we can read (JPEG, PNG, WebP, GIF, BMP, TIFF, ...)"
                            ) from None
    except Exception as exc:  # Pillow raises several types (OSError, SyntaxError, ValueError, DecompressionBomb*)
        raise BadImageError(source, _first_line(exc)) from None
    # One copy: HWC (Pillow's layout, read-only view) -> CHW, writable and contiguous.
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read and decode one image file -> uint8 RGB (3, H, W); BadImageError when it cannot be read or decoded."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise BadImageError(path, f"cannot read the file ({exc.strerror or exc})") from None
    return decode_image_bytes(data, path)


def _is_image(name: str, extensions: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(extensions)) and not name.startswith(".")


class ImageFolderDataset(Dataset):
    """(transform(uint8 RGB image), label) pairs from an image folder; see the module docstring for layouts.

    `classes[label]` is the class name and `class_to_idx` its inverse (a JSON-able dict of str -> int): store
    it with a training run, and pass it back when evaluating so that labels mean the same classes.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[torch.Tensor], Any] | None = None, *,
                 class_to_idx: dict[str, int] | None = None, labels_file: str | os.PathLike | None = None,
                 on_bad_image: BadImagePolicy = "fail", extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (set RESNETS_DATASETS or pass --data)")
        if labels_file is not None:
            samples, classes = _samples_from_labels_file(self.root, Path(labels_file), class_to_idx)
        else:
            samples, classes = _samples_from_class_folders(self.root, class_to_idx, extensions)
        self._init(samples, classes, transform, on_bad_image)

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[str, int]], classes: Sequence[str],
                     transform: Callable[[torch.Tensor], Any] | None = None, *, root: str | os.PathLike = ".",
                     on_bad_image: BadImagePolicy = "fail") -> ImageFolderDataset:
        """A dataset over explicit (path, label) pairs; labels index `classes`."""
        dataset = cls.__new__(cls)
        dataset.root = Path(root)
        dataset._init(list(samples), list(classes), transform, on_bad_image)
        return dataset

    def _init(self, samples: list[tuple[str, int]], classes: list[str],
              transform: Callable[[torch.Tensor], Any] | None, on_bad_image: str) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        if not samples:
            raise FileNotFoundError(f"no images found in {self.root}")
        bad_labels = [(p, y) for p, y in samples if not 0 <= y < len(classes)]
        if bad_labels:
            raise ValueError(f"label {bad_labels[0][1]} of {bad_labels[0][0]} is outside 0..{len(classes) - 1}")
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes
        self.class_to_idx = {name: index for index, name in enumerate(classes)}
        self.transform = transform
        self.on_bad_image = on_bad_image
        # One byte per sample in shared memory: worker processes mark the files they skipped, the main
        # process reads the marks (see bad_images). DataLoader passes shared tensors to workers by handle.
        self._bad_flags = torch.zeros(len(samples), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def bad_images(self) -> list[str]:
        """Paths skipped so far as unreadable, by this process or any DataLoader worker."""
        return [self.samples[i][0] for i in self._bad_flags.nonzero().flatten().tolist()]

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The decoded uint8 image and label of sample `index`, or of the next readable one under 'skip'."""
        for step in range(len(self.samples)):
            current = (index + step) % len(self.samples)
            if self._bad_flags[current]:
                continue
            path, label = self.samples[current]
            try:
                return read_image(path), label
            except BadImageError as exc:
                if self.on_bad_image == "fail":
                    raise
                self._bad_flags[current] = 1
                logger.warning("skipping unreadable image (%s); %d skipped so far (pid %d)",
                               exc.path + ": " + exc.reason, int(self._bad_flags.sum()), os.getpid())
        raise RuntimeError(f"every one of the {len(self.samples)} images in {self.root} is unreadable "
                           f"(e.g. {self.samples[0][0]}); check the dataset path and files")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.load(index)
        return (image if self.transform is None else self.transform(image)), label

    def with_transform(self, transform: Callable[[torch.Tensor], Any] | None) -> ImageFolderDataset:
        """A shallow copy with another transform (same samples, classes and bad-image counts)."""
        clone = self.__class__.__new__(self.__class__)
        clone.__dict__.update(self.__dict__)
        clone.transform = transform
        return clone

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, classes={len(self.classes)}, "
                f"on_bad_image={self.on_bad_image!r})")


def _samples_from_class_folders(root: Path, class_to_idx: dict[str, int] | None,
                                extensions: Sequence[str]) -> tuple[list[tuple[str, int]], list[str]]:
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{root} has no class sub-folders; for a flat folder pass labels_file, or use "
                                "wnid_prefixed_dataset / open_image_folder for <wnid>_<name> files")
    classes = _classes_from_mapping(class_to_idx) if class_to_idx is not None else folders
    mapping = {name: index for index, name in enumerate(classes)}
    unknown = [name for name in folders if name not in mapping]
    if unknown:
        raise ValueError(f"{root}: folders {unknown[:3]} are not in the given class_to_idx ({len(mapping)} classes)")
    samples = []
    for name in folders:
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            samples += [(os.path.join(dirpath, f), mapping[name]) for f in sorted(files) if _is_image(f, extensions)]
    return samples, classes


def _classes_from_mapping(class_to_idx: dict[str, int]) -> list[str]:
    classes = sorted(class_to_idx, key=lambda name: class_to_idx[name])
    if [class_to_idx[name] for name in classes] != list(range(len(classes))):
        raise ValueError("class_to_idx must map the classes to 0..N-1, each index once")
    return classes


def _samples_from_labels_file(root: Path, labels_file: Path, class_to_idx: dict[str, int] | None
                              ) -> tuple[list[tuple[str, int]], list[str]]:
    if not labels_file.is_file():
        raise FileNotFoundError(f"labels file {labels_file} does not exist")
    pairs = []
    for number, line in enumerate(labels_file.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LABEL_LINE.match(line.strip())
        if match is None:
            raise ValueError(f"{labels_file}:{number}: expected 'filename label', got {line!r}")
        pairs.append((match.group(1), match.group(2)))
    if not pairs:
        raise ValueError(f"labels file {labels_file} has no 'filename label' lines")
    tokens = {label for _, label in pairs}
    if class_to_idx is not None:
        classes = _classes_from_mapping(class_to_idx)
    elif all(t.isdigit() for t in tokens):
        classes = [str(i) for i in range(max(int(t) for t in tokens) + 1)]
    elif any(t.isdigit() for t in tokens):
        raise ValueError(f"{labels_file} mixes integer and named labels; use one kind, or pass class_to_idx")
    else:
        classes = sorted(tokens)
    mapping = {name: index for index, name in enumerate(classes)}
    samples = []
    for name, token in pairs:
        if token in mapping:
            label = mapping[token]
        elif token.isdigit() and int(token) < len(classes):
            label = int(token)
        else:
            raise ValueError(f"{labels_file}: label {token!r} of {name} is not one of the {len(classes)} classes")
        samples.append((str(root / name), label))
    missing = [path for path, _ in samples if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{labels_file} lists {len(missing)} files missing from {root}, e.g. {missing[0]}")
    return samples, classes


def wnid_of(filename: str) -> str:
    """The WordNet id prefix of an imagenet-sample file name: 'n01440764_tench.JPEG' -> 'n01440764'."""
    wnid = os.path.basename(filename).split("_", 1)[0]
    if not _WNID.match(wnid):
        raise ValueError(f"{filename}: expected a name starting with a WordNet id such as n01440764_")
    return wnid


def wnid_prefixed_dataset(root: str | os.PathLike, wnids: Sequence[str] | None = None,
                          transform: Callable[[torch.Tensor], Any] | None = None, *,
                          on_bad_image: BadImagePolicy = "fail",
                          extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageFolderDataset:
    """A flat folder of `<wnid>_<name>` images (e.g. imagenet-sample); label = index of the wnid in `wnids`.

    Pass the model's class list (e.g. the 1000 ImageNet wnids in training order) as `wnids`; by default the
    sorted wnids present in the folder are used.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (set RESNETS_DATASETS or pass --data)")
    files = sorted(f for f in os.listdir(root) if _is_image(f, extensions))
    file_wnids = [wnid_of(f) for f in files]
    classes = list(wnids) if wnids is not None else sorted(set(file_wnids))
    mapping = {name: index for index, name in enumerate(classes)}
    unknown = sorted({w for w in file_wnids if w not in mapping})
    if unknown:
        raise ValueError(f"{root}: wnids {unknown[:3]} ({len(unknown)} in all) are not in the given class list")
    samples = [(str(root / f), mapping[w]) for f, w in zip(files, file_wnids, strict=True)]
    return ImageFolderDataset.from_samples(samples, classes, transform, root=root, on_bad_image=on_bad_image)


def open_image_folder(root: str | os.PathLike, transform: Callable[[torch.Tensor], Any] | None = None, *,
                      class_to_idx: dict[str, int] | None = None, labels_file: str | os.PathLike | None = None,
                      on_bad_image: BadImagePolicy = "fail") -> ImageFolderDataset:
    """Pick the layout: a labels file if given, class sub-folders if present, else `<wnid>_<name>` files."""
    root = Path(root)
    if labels_file is not None or not root.is_dir() or any(e.is_dir() for e in os.scandir(root)):
        return ImageFolderDataset(root, transform, class_to_idx=class_to_idx, labels_file=labels_file,
                                  on_bad_image=on_bad_image)
    unlabelled = [f for f in sorted(os.listdir(root)) if _is_image(f, IMAGE_EXTENSIONS) and not _WNID.match(f[:9])]
    if unlabelled:
        raise ValueError(f"{root} has no class sub-folders and {unlabelled[0]} does not start with a WordNet id "
                         "(n01440764_...); put the images in <class>/ folders or pass a labels file")
    wnids = None if class_to_idx is None else _classes_from_mapping(class_to_idx)
    return wnid_prefixed_dataset(root, wnids, transform, on_bad_image=on_bad_image)
