"""An offline detection dataset made by synthetic composition: CIFAR-10 objects pasted on Imagenette photos.

Why: no COCO or VOC is on hand and nothing can be downloaded, yet the Sec. 4.3 detection pipeline needs real pixels
and exactly known boxes. Backgrounds are real photos (Imagenette, 224x224) and objects are real CIFAR-10 images,
so the boxes are exact by construction. Train uses Imagenette train + CIFAR train, val uses Imagenette val + CIFAR
test: no photo or object is shared between the splits. Results on it are not COCO or VOC numbers.

Composition of one image (all randomness from numpy Generators seeded by (seed, split, image index), never global
state, so image i is the same whatever the number of images asked for, and the output is byte-identical):
- background: the split's photos in a seeded order, each used once before any is reused;
- objects: `objects_per_image` drawn uniformly; per object a CIFAR image, a longer box side in `object_sizes`, an
  aspect ratio w/h log-uniform in `aspect_ratios`, a position inside the image; bilinear resize, pasted hard-edged;
- occlusion: later pastes cover earlier ones. A placement is rejected (and redrawn, up to 100 tries per image) when
  its IoU with an earlier box exceeds `max_iou` or it would leave an earlier object less than `min_visible` of its
  pixels. Each annotation's bbox is the tight box of the object's *visible* pixels and its area their count (as
  COCO's boxes and areas are of the visible object); `pasted_bbox` keeps the full pasted rectangle and `source`
  the CIFAR file. Images left with fewer objects than drawn (all tries rejected) are counted, never hidden.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from ..data.folder import read_image
from ..data.loader import epoch_seed
from ..data.paths import datasets_root
from ..io import atomic_write_bytes, atomic_write_json, read_json

GENERATOR_VERSION = 1
DESCRIPTION = "synthetic composition: CIFAR-10 objects pasted on Imagenette backgrounds, not COCO or VOC"
# split -> (index in the seed, Imagenette split for backgrounds, CIFAR-10 split for objects)
SPLITS = {"train": (0, "train", "train"), "val": (1, "val", "test")}
JPEG_QUALITY = 90
MAX_TRIES = 100


def make_synthetic_detection(out: Path, *, train_images: int, val_images: int, seed: int = 0,
                             objects_per_image: tuple[int, int] = (1, 4), object_sizes: tuple[int, int] = (24, 112),
                             aspect_ratios: tuple[float, float] = (0.75, 4 / 3), max_iou: float = 0.5,
                             min_visible: float = 0.5, datasets: Path | None = None, progress: bool = True
                             ) -> dict[str, Any]:
    """Write out/{train,val}/NNNNNN.jpg and out/annotations/{train,val}.json (COCO format, written last, so a folder
    without them is an unfinished one). A non-empty `out` is returned as is when it holds a finished dataset made
    with the same parameters, and refused otherwise. Returns a summary (counts, paths, parameters)."""
    params = {"version": GENERATOR_VERSION, "seed": int(seed), "train_images": int(train_images),
              "val_images": int(val_images), "objects_per_image": [int(v) for v in objects_per_image],
              "object_sizes": [int(v) for v in object_sizes], "aspect_ratios": [float(v) for v in aspect_ratios],
              "max_iou": float(max_iou), "min_visible": float(min_visible), "jpeg_quality": JPEG_QUALITY}
    _check(params)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _reuse(out, params)
    root = Path(datasets) if datasets is not None else datasets_root()
    documents = {split: _make_split(out, root, split, params, progress) for split in SPLITS}
    for split, document in documents.items():  # last: their presence marks a finished dataset
        atomic_write_json(out / "annotations" / f"{split}.json", document)
    return _summary(out, documents, reused=False)


def _check(p: dict[str, Any]) -> None:
    (n_lo, n_hi), (s_lo, s_hi), (a_lo, a_hi) = p["objects_per_image"], p["object_sizes"], p["aspect_ratios"]
    problems = [min(p["train_images"], p["val_images"]) < 0 and "train_images and val_images must be >= 0",
                not 0 <= n_lo <= n_hi and "objects_per_image must be (low, high) with 0 <= low <= high",
                not 1 <= s_lo <= s_hi and "object_sizes must be (low, high) with 1 <= low <= high",
                not 0 < a_lo <= a_hi and "aspect_ratios must be (low, high) with 0 < low <= high",
                not 0 <= p["max_iou"] <= 1 and "max_iou must be in [0, 1]",
                not 0 <= p["min_visible"] <= 1 and "min_visible must be in [0, 1]"]
    if any(problems):
        raise ValueError(f"make_synthetic_detection: {next(problem for problem in problems if problem)}")


def _reuse(out: Path, params: dict[str, Any]) -> dict[str, Any]:
    try:
        documents = {split: read_json(out / "annotations" / f"{split}.json") for split in SPLITS}
        usable = all(d["info"]["parameters"] == params and all((out / s / im["file_name"]).is_file()
                                                               for im in d["images"]) for s, d in documents.items())
    except (OSError, ValueError, KeyError, TypeError):
        usable = False
    if not usable:
        raise FileExistsError(f"{out} is not empty and does not hold a finished synthetic detection dataset made with "
                              "these parameters: delete it or choose another output folder")
    return _summary(out, documents, reused=True)


def _summary(out: Path, documents: dict[str, dict[str, Any]], reused: bool) -> dict[str, Any]:
    splits = {split: {"images": len(d["images"]), "objects": len(d["annotations"]),
                      "objects_short": d["info"]["objects_short"], "images_dir": str(out / split),
                      "annotations": str(out / "annotations" / f"{split}.json")} for split, d in documents.items()}
    return {"out": str(out), "reused": reused, "parameters": next(iter(documents.values()))["info"]["parameters"],
            "splits": splits}


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """folder/<class>/<image> in sorted order (no stat per file: CIFAR train has 50,000 files)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: set RESNETS_DATASETS (or pass datasets=) to the folder "
                                "that holds imagenette/ and cifar10-jpeg/")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(n for n in os.listdir(folder / name) if n.lower().endswith((".jpg", ".jpeg", ".png")))
        files += [folder / name / n for n in names]
        labels += [label] * len(names)
    if not files:
        raise FileNotFoundError(f"{folder} holds no images in <class>/ folders")
    return files, labels, classes


def _make_split(out: Path, root: Path, split: str, p: dict[str, Any], progress: bool) -> dict[str, Any]:
    split_index, background_split, object_split = SPLITS[split]
    backgrounds, _, _ = _list_images(root / "imagenette" / background_split)
    objects, object_labels, classes = _list_images(root / "cifar10-jpeg" / object_split)
    order = np.random.default_rng(epoch_seed(p["seed"], split_index)).permutation(len(backgrounds))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    short = 0
    for index in tqdm(range(p[f"{split}_images"]), desc=f"synthetic {split}", unit="img", disable=not progress):
        rng = np.random.default_rng(epoch_seed(p["seed"], split_index, index))
        background = backgrounds[order[index % len(order)]]
        canvas = read_image(background)
        placed, missing = _place(rng, canvas.shape[1], canvas.shape[2], len(objects), p)
        short += missing
        owner = np.full(canvas.shape[1:], -1)
        for k, (obj, (x, y, w, h)) in enumerate(placed):
            canvas[:, y:y + h, x:x + w] = TF.resize(read_image(objects[obj]), [h, w], antialias=True)
            owner[y:y + h, x:x + w] = k
        file_name = f"{index:06d}.jpg"
        pixels = Image.fromarray(canvas.permute(1, 2, 0).numpy())
        atomic_write_bytes(out / split / file_name, lambda f, im=pixels: im.save(f, "JPEG", quality=JPEG_QUALITY))
        images.append({"id": index + 1, "file_name": file_name, "width": canvas.shape[2], "height": canvas.shape[1],
                       "background": background.relative_to(root).as_posix()})
        for k, (obj, pasted) in enumerate(placed):
            ys, xs = np.nonzero(owner == k)
            x0, y0 = int(xs.min()), int(ys.min())
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": object_labels[obj] + 1,
                                "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                                "area": len(xs), "iscrowd": 0, "pasted_bbox": list(pasted),
                                "source": objects[obj].relative_to(root).as_posix()})
    info = {"description": DESCRIPTION, "split": split, "backgrounds": f"imagenette/{background_split}",
            "objects": f"cifar10-jpeg/{object_split}", "seed": p["seed"], "parameters": p, "objects_short": short}
    categories = [{"id": label + 1, "name": name, "supercategory": "cifar10"} for label, name in enumerate(classes)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _place(rng: np.random.Generator, height: int, width: int, count: int, p: dict[str, Any]
           ) -> tuple[list[tuple[int, tuple[int, int, int, int]]], int]:
    """(object index, pasted xywh box) in paste order, and how many drawn objects found no acceptable place."""
    (n_lo, n_hi), (s_lo, s_hi), (a_lo, a_hi) = p["objects_per_image"], p["object_sizes"], p["aspect_ratios"]
    if s_hi > min(height, width):
        raise ValueError(f"object_sizes up to {s_hi} px do not fit a {width}x{height} background: lower them")
    wanted = int(rng.integers(n_lo, n_hi + 1))
    owner = np.full((height, width), -1)
    placed: list[tuple[int, tuple[int, int, int, int]]] = []
    for _ in range(MAX_TRIES):
        if len(placed) == wanted:
            break
        obj, side = int(rng.integers(count)), int(rng.integers(s_lo, s_hi + 1))
        ratio = math.exp(rng.uniform(math.log(a_lo), math.log(a_hi)))  # w / h; the longer side is `side`
        w, h = (side, max(1, round(side / ratio))) if ratio >= 1 else (max(1, round(side * ratio)), side)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if any(_iou((x, y, w, h), box) > p["max_iou"] for _, box in placed):
            continue
        trial = owner.copy()
        trial[y:y + h, x:x + w] = len(placed)
        if any((trial == k).sum() < p["min_visible"] * bw * bh for k, (_, (_, _, bw, bh)) in enumerate(placed)):
            continue
        owner = trial
        placed.append((obj, (x, y, w, h)))
    return placed, wanted - len(placed)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
