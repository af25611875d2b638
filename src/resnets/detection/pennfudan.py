"""Penn-Fudan pedestrians (Wang et al., ACCV 2007): 170 real street photos, 423 people, each with a box and a pixel
mask, one class "person"; the data of torchvision's detection fine-tuning tutorial, read from its own files.

Layout (datasets README): `JPEGImages/<name>.jpg`, `PedMasks/<name>_mask.png` (one integer id per pedestrian, 0 =
background) and `Annotation/<name>.txt` (PASCAL Annotation 1.00 text, one "Bounding box for object K ... (Xmin, Ymin) -
(Xmax, Ymax)" line per pedestrian, 1-based inclusive pixel coordinates). Pedestrian K of the text is id K of the mask
(checked on all 423: the mask's tight box is within 3 px of the text's box for 422 of them).

There is no official split: `pennfudan_split` holds out `TEST_PHOTOS` photos in a seeded order of the sorted names, and
every run records the names it trained and tested on. Items are (image float32 3 x H x W in [0, 1], target {"boxes"
float32 N x 4 xyxy in pixels, "labels" int64 N (all 1), "masks" uint8 N x H x W, "image_id"}), what torchvision's
Mask R-CNN takes. Training flips follow `data.DetectionDataset`'s rule (`draws_flip`); scale jitter is the detector's
own (torchvision picks a random shorter side among `min_size` in training), so boxes and masks stay consistent.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.folder import BadImageError, read_image
from .data import draws_flip, mirror

TEST_PHOTOS = 50
SPLIT_SEED = 0
CATEGORIES = {1: "person"}
_BOX_LINE = re.compile(r"^Bounding box for object (\d+) .*: \((-?\d+), (-?\d+)\) - \((-?\d+), (-?\d+)\)\s*$")
_SIZE_LINE = re.compile(r"^Image size \(X x Y x C\) : (\d+) x (\d+) x (\d+)\s*$")
_HOW_TO_FIX = 'fix the line (as `Bounding box for object K "..." (Xmin, Ymin) - (Xmax, Ymax) : (x1, y1) - (x2, y2)`)'


def is_pennfudan(root: str | Path) -> bool:
    """Whether `root` is laid out as the Penn-Fudan database."""
    return all((Path(root) / name).is_dir() for name in ("JPEGImages", "PedMasks", "Annotation"))


def parse_annotation(path: Path) -> tuple[tuple[int, int], np.ndarray]:
    """((width, height), boxes as a float32 K x 4 array, xyxy in 0-based pixel coordinates: a 1-based inclusive
    (Xmin, Ymin) - (Xmax, Ymax) becomes (Xmin - 1, Ymin - 1, Xmax, Ymax)). One ValueError naming the file and line
    for anything malformed."""
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the annotation ({error.strerror or error}); restore the file") from None
    size, boxes = None, []
    for number, line in enumerate(lines, 1):
        if line.startswith("Image size"):
            found = _SIZE_LINE.match(line)
            if found is None:
                raise ValueError(f"{path}:{number}: malformed image size line {line.strip()!r}; expected "
                                 "`Image size (X x Y x C) : W x H x 3`")
            size = (int(found[1]), int(found[2]))
        elif line.startswith("Bounding box"):
            found = _BOX_LINE.match(line)
            if found is None:
                raise ValueError(f"{path}:{number}: malformed bounding box line {line.strip()!r}; {_HOW_TO_FIX}")
            x1, y1, x2, y2 = (int(v) for v in found.groups()[1:])
            if int(found[1]) != len(boxes) + 1:
                raise ValueError(f"{path}:{number}: object {found[1]} out of order (expected {len(boxes) + 1}); "
                                 "number the objects 1, 2, ... in order")
            if size is None:
                raise ValueError(f"{path}:{number}: a box before the `Image size` line; restore the file's header")
            if not (1 <= x1 <= x2 <= size[0] and 1 <= y1 <= y2 <= size[1]):
                raise ValueError(f"{path}:{number}: box ({x1}, {y1}) - ({x2}, {y2}) is empty or outside the "
                                 f"{size[0]}x{size[1]} image; {_HOW_TO_FIX}")
            boxes.append((x1 - 1, y1 - 1, x2, y2))
    if size is None or not boxes:
        raise ValueError(f"{path}: no {'`Image size` line' if size is None else 'bounding box line'}; not a "
                         "Penn-Fudan annotation file (restore it from the database)")
    return size, np.asarray(boxes, dtype=np.float32)


def pennfudan_names(root: str | Path) -> list[str]:
    """The photo names (file stems) of the database, sorted."""
    root = Path(root)
    if not is_pennfudan(root):
        raise ValueError(f"{root}: not the Penn-Fudan database (needs JPEGImages/, PedMasks/ and Annotation/); set "
                         "--data to the folder, e.g. $RESNETS_DATASETS/pennfudan")
    names = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))
    if not names:
        raise ValueError(f"{root}/JPEGImages holds no .jpg photos")
    return names


def pennfudan_split(root: str | Path, seed: int = SPLIT_SEED, test: int | None = None) -> dict[str, list[str]]:
    """{"train": names, "test": names}: `test` photos held out in a numpy-seeded order of the sorted names (default:
    `TEST_PHOTOS` of the database's 170, or 30% of a smaller copy)."""
    names = pennfudan_names(root)
    test = min(TEST_PHOTOS, round(0.3 * len(names))) if test is None else test
    if not 0 < test < len(names):
        raise ValueError(f"test must hold 1..{len(names) - 1} of the {len(names)} photos, got {test}")
    order = np.random.default_rng(seed).permutation(len(names))
    return {"train": sorted(names[i] for i in order[test:]), "test": sorted(names[i] for i in order[:test])}


class PennFudanDataset(Dataset):
    """One split ("train" or "test") of Penn-Fudan; see the module docstring. Annotations are read and checked
    when the dataset is made, so a malformed file fails before training starts."""

    def __init__(self, root: str | Path, split: str, train_flip: bool = False, seed: int = 0,
                 split_seed: int = SPLIT_SEED) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"Penn-Fudan splits are 'train' and 'test', got {split!r}")
        self.root, self.split, self.train_flip, self.seed, self.epoch = Path(root), split, train_flip, seed, 0
        self.names = pennfudan_split(self.root, split_seed)[split]
        everything = pennfudan_names(self.root)
        self._ids = [everything.index(name) for name in self.names]
        self.annotations = {name: parse_annotation(self.root / "Annotation" / f"{name}.txt") for name in self.names}

    categories = property(lambda self: dict(CATEGORIES))

    @property
    def image_ids(self) -> list[int]:
        """Image ids: the photo's position in the sorted database (stable across splits)."""
        return list(self._ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def flips(self, index: int) -> bool:
        """Whether item `index` is mirrored this epoch (always False without train_flip)."""
        return draws_flip(self.train_flip, self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.names)

    def masks(self, name: str) -> torch.Tensor:
        """The K x H x W uint8 instance masks of photo `name`, in the annotation's object order."""
        path = self.root / "PedMasks" / f"{name}_mask.png"
        try:
            with Image.open(path) as image:
                ids = np.asarray(image)
        except OSError as error:
            raise ValueError(f"{path}: cannot read the mask ({error}); restore it from the database") from None
        (width, height), boxes = self.annotations[name]
        present = [int(v) for v in np.unique(ids) if v]
        if ids.shape != (height, width) or present != list(range(1, len(boxes) + 1)):
            raise ValueError(f"{path}: mask of shape {ids.shape} with ids {present}, but the annotation says "
                             f"{width}x{height} with {len(boxes)} pedestrians; restore the mask or the annotation")
        return torch.from_numpy(ids[None] == np.arange(1, len(boxes) + 1)[:, None, None]).to(torch.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        name = self.names[index]
        path = self.root / "JPEGImages" / f"{name}.jpg"
        try:
            pixels = read_image(path)
        except BadImageError as error:
            raise ValueError(f"{path}: cannot decode this photo ({error.reason}); restore it") from None
        (width, height), boxes = self.annotations[name]
        if tuple(pixels.shape[1:]) != (height, width):
            raise ValueError(f"{path}: photo is {pixels.shape[2]}x{pixels.shape[1]} but its annotation says "
                             f"{width}x{height}; restore the photo or the annotation")
        target = {"boxes": torch.from_numpy(boxes.copy()), "labels": torch.ones(len(boxes), dtype=torch.int64),
                  "masks": self.masks(name), "image_id": self._ids[index]}
        image = pixels.float() / 255
        return mirror(image, target) if self.flips(index) else (image, target)

    def coco_document(self) -> dict[str, Any]:
        """The split's ground truth as a COCO instance-segmentation document (boxes, RLE masks, mask areas), what
        pycocotools evaluates against; made once per dataset."""
        return self._coco_document

    @cached_property
    def _coco_document(self) -> dict[str, Any]:
        from pycocotools import mask as mask_utils

        images, annotations = [], []
        for name, image_id in zip(self.names, self._ids, strict=True):
            (width, height), boxes = self.annotations[name]
            images.append({"id": image_id, "file_name": f"{name}.jpg", "width": width, "height": height})
            masks = self.masks(name).numpy()
            for box, mask in zip(boxes.tolist(), masks, strict=True):
                rle = mask_utils.encode(np.asfortranarray(mask))
                x1, y1, x2, y2 = box
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()),
                                    "segmentation": rle, "iscrowd": 0})
        return {"images": images, "annotations": annotations,
                "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, photos={len(self)})"
