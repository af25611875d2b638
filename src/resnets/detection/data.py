"""A COCO-format detection dataset (images + one annotation JSON per split) as a torch Dataset.

Layout: root/annotations/<split>.json and root/<split>/<file_name>, as `make_synthetic_detection` writes (any COCO
folder laid out so works). Items are (image, target): the image float32 3 x H x W in [0, 1], unnormalised, since
torchvision's detection models normalise inside (GeneralizedRCNNTransform); the target {"boxes": float32 N x 4
xyxy in pixels, "labels": int64 N (COCO category ids), "image_id": int}. Crowd boxes (iscrowd=1) are left out of
the targets: they are regions to ignore, not objects to learn.

The annotations are checked once, when the dataset is made, so that bad data fails before training starts with one
line naming the file; an image that does not decode fails when it is read.

Training flip (`draws_flip`, shared with Penn-Fudan): with `train_flip`, item i is mirrored left-right when a numpy
Generator seeded by (seed, epoch, i) draws < 0.5. It depends on nothing else (not on worker, batch or read order), so
DataLoader workers agree and a resumed run sees the same flips; call `set_epoch(epoch)` before each epoch's iterator
for new flips every epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.folder import BadImageError, read_image
from ..data.loader import epoch_seed


class DetectionDataset(Dataset):
    """(image, target) pairs of one split of a COCO-format folder; see the module docstring."""

    def __init__(self, root: Path, split: str, train_flip: bool = False, seed: int = 0) -> None:
        self.root, self.split, self.train_flip, self.seed, self.epoch = Path(root), split, train_flip, seed, 0
        self.annotation_file = self.root / "annotations" / f"{split}.json"
        self._document = document = _read_annotations(self.annotation_file)
        where = f"{self.annotation_file}:"
        try:
            self._categories = {int(c["id"]): str(c["name"]) for c in document["categories"]}
            self.images = [{"id": int(im["id"]), "file_name": str(im["file_name"]), "width": int(im["width"]),
                            "height": int(im["height"])} for im in document["images"]]
            by_id = {im["id"]: im for im in self.images}
            boxes: dict[int, list[list[float]]] = {im["id"]: [] for im in self.images}
            labels: dict[int, list[int]] = {im["id"]: [] for im in self.images}
            for ann in document["annotations"]:
                if not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
                    raise TypeError("'bbox' (a list [x, y, w, h])")
                image, (x, y, w, h) = by_id.get(int(ann["image_id"])), (float(v) for v in ann["bbox"])
                if image is None:
                    raise ValueError(f"{where} annotation {ann.get('id')} refers to image_id {ann['image_id']}, "
                                     "which is not in 'images'; fix or regenerate the annotation file")
                if int(ann["category_id"]) not in self._categories:
                    raise ValueError(f"{where} annotation {ann.get('id')} has category_id {ann['category_id']}, "
                                     f"not one of the categories {sorted(self._categories)}; fix or regenerate it")
                if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]):
                    raise ValueError(f"{where} annotation {ann.get('id')} box [x, y, w, h] = {ann['bbox']} is empty or "
                                     f"outside its {image['width']}x{image['height']} image {image['file_name']}; fix "
                                     "or regenerate the annotation file")
                if not ann.get("iscrowd", 0):
                    boxes[image["id"]].append([x, y, x + w, y + h])
                    labels[image["id"]].append(int(ann["category_id"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"{where} not a valid COCO detection file (missing or malformed field {error}); fix "
                             "or regenerate it") from None
        self._boxes = {i: torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for i, b in boxes.items()}
        self._labels = {i: torch.tensor(v, dtype=torch.int64) for i, v in labels.items()}

    @property
    def categories(self) -> dict[int, str]:
        """COCO category id -> name."""
        return dict(self._categories)

    @property
    def image_ids(self) -> list[int]:
        """The COCO image id of each item, in item order (for `detections_to_coco`)."""
        return [im["id"] for im in self.images]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def coco_document(self) -> dict[str, Any]:
        """The split's annotation document, as read (what pycocotools evaluates against)."""
        return self._document

    def flips(self, index: int) -> bool:
        """Whether item `index` is mirrored this epoch (always False without train_flip)."""
        return draws_flip(self.train_flip, self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        info = self.images[index]
        path = self.root / self.split / info["file_name"]
        try:
            pixels = read_image(path)
        except BadImageError as error:
            raise ValueError(f"{path}: cannot decode this image ({error.reason}); replace it or regenerate the "
                             "dataset") from None
        if tuple(pixels.shape[1:]) != (info["height"], info["width"]):
            raise ValueError(f"{path}: image is {pixels.shape[2]}x{pixels.shape[1]} but {self.annotation_file} says "
                             f"{info['width']}x{info['height']}; regenerate the dataset")
        target = {"boxes": self._boxes[info["id"]].clone(), "labels": self._labels[info["id"]].clone(),
                  "image_id": info["id"]}
        image = pixels.float() / 255
        return mirror(image, target) if self.flips(index) else (image, target)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"categories={len(self._categories)}, train_flip={self.train_flip})")


def draws_flip(train_flip: bool, seed: int, epoch: int, index: int) -> bool:
    """Whether item `index` is mirrored in `epoch`: a numpy Generator seeded by (seed, epoch, index) draws < 0.5, a
    pure function of those, so workers and resumed runs agree (always False without train_flip)."""
    return train_flip and bool(np.random.default_rng(epoch_seed(seed, epoch, index)).random() < 0.5)


def mirror(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """(image, target) mirrored left-right, its boxes (and masks, if any) with it."""
    width, boxes = image.shape[-1], target["boxes"]
    flipped = {**target, "boxes": torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)}
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]], device: torch.device | None = None
                      ) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Detection images differ in size and box count, so a batch stays two lists (what torchvision models take),
    moved to `device` if given."""
    if device is None:
        return [image for image, _ in batch], [target for _, target in batch]
    return ([image.to(device, non_blocking=True) for image, _ in batch],
            [{key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
              for key, value in target.items()} for _, target in batch])


def _read_annotations(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{path}: annotation file not found; expected COCO JSON at <root>/annotations/<split>.json "
                         "(make_synthetic_detection writes one): check root and split") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: unreadable annotation file ({reason}); it may be truncated: regenerate it") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: not a COCO detection file (needs 'images', 'annotations' and 'categories' lists); "
                         "fix or regenerate it")
    return document
