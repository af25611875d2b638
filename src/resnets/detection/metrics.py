"""COCO box AP (the detection metric of Sec. 4.3 and Appendix A) and mask AP with pycocotools, the reference
implementation.

`evaluate_detections` takes the ground truth as a COCO document (or its JSON file, read once) and builds both
pycocotools objects from memory (no `loadRes`): the results object is made the same way whether or not there are
detections, so an empty list (which `loadRes` cannot take) gives what COCOeval itself gives for no detections: AP 0
wherever the ground truth has objects. pycocotools prints progress and tables to stdout; all of it is captured here.

Mask AP (Mask R-CNN): results carrying a "segmentation" (RLE of the mask thresholded at 0.5, as torchvision's
reference evaluation does) are also scored as masks, under the names `mask_<metric>`.

Values are percentages. A metric pycocotools marks undefined (-1: no ground-truth object at all, or none in that
size range, e.g. no box under 32x32 px for map_small) is returned as NaN, so that it cannot be averaged as a score.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import read_json

# Names (torchmetrics' names) of COCOeval.stats[0:6]: AP@[.5:.95], AP@.5, AP@.75, AP small / medium / large.
METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


MASK_THRESHOLD = 0.5  # torchvision's Mask R-CNN outputs per-pixel probabilities; COCO scores binary masks


def detections_to_coco(image_ids: Sequence[int], outputs: Sequence[Mapping[str, torch.Tensor]]) -> list[dict]:
    """torchvision detection outputs ({"boxes": N x 4 xyxy, "scores": N, "labels": N, and "masks": N x 1 x H x W
    for Mask R-CNN}, one per image, in the order of `image_ids`) -> COCO result dicts {"image_id", "category_id",
    "bbox": [x, y, w, h], "score"}, plus "segmentation" (compressed RLE) when there are masks."""
    if len(image_ids) != len(outputs):
        raise ValueError(f"detections_to_coco: {len(image_ids)} image ids for {len(outputs)} outputs; pass one id "
                         "per output, in the same order")
    results = []
    for image_id, output in zip(image_ids, outputs, strict=True):
        boxes = output["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4).tolist()
        scores = output["scores"].detach().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        masks = _encode_masks(output["masks"]) if "masks" in output else [None] * len(scores)
        for (x1, y1, x2, y2), score, label, mask in zip(boxes, scores, labels, masks, strict=True):
            results.append({"image_id": int(image_id), "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)} | ({"segmentation": mask} if mask is not None else {}))
    return results


def _encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    binary = (masks.detach().float().cpu()[:, 0] >= MASK_THRESHOLD).numpy().astype(np.uint8)
    return [mask_utils.encode(np.asfortranarray(m)) for m in binary]


def evaluate_detections(truth: Path | Mapping[str, Any], results: list[dict], image_ids: Sequence[int] | None = None,
                        masks: bool | None = None) -> dict[str, float]:
    """COCO box AP of `results` (COCO result dicts, e.g. from `detections_to_coco`) against `truth` (a COCO document
    or its JSON file): {"map", "map_50", "map_75", "map_small", "map_medium", "map_large"} in percent, NaN where
    undefined; and the same six as `mask_<name>` when the results carry segmentations (the truth must then too).
    image_ids: evaluate on these images only (a subset of the split), else on all of them. masks: score masks too
    (None: when the results carry segmentations; give True for a Mask R-CNN, whose empty results carry none)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO evaluation needs pycocotools: pip install 'resnets[detection]'") from None
    if isinstance(truth, Mapping):
        annotation_file, document = "the ground truth", copy.deepcopy(dict(truth))  # COCO() adds fields to it
    else:
        annotation_file, document = truth, read_json(truth, "annotation file")
    for ann in document.get("annotations", []):  # fields COCOeval needs that box-only files may omit
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    known = {image["id"] for image in document.get("images", [])}
    with_masks = bool(results) and all("segmentation" in result for result in results) if masks is None else masks
    if with_masks and not all("segmentation" in ann for ann in document.get("annotations", [])):
        raise ValueError(f"the results have masks but {annotation_file} has no segmentation for every object; "
                         "evaluate boxes only (drop 'segmentation' from the results) or give mask ground truth")
    detections = []
    for number, result in enumerate(results, 1):
        if result.get("image_id") not in known or len(result.get("bbox", ())) != 4 or "score" not in result:
            raise ValueError(f"result {number} ({str(result)[:100]}) needs an image_id of {annotation_file}, a bbox "
                             "[x, y, w, h] and a score; make results with detections_to_coco and this split's ids")
        x, y, w, h = (float(v) for v in result["bbox"])
        detections.append({"id": number, "image_id": result["image_id"], "category_id": int(result["category_id"]),
                           "bbox": [x, y, w, h], "area": w * h, "score": float(result["score"]), "iscrowd": 0}
                          | ({"segmentation": result["segmentation"]} if with_masks else {}))
    scores = {}
    for iou_type, prefix in (("bbox", ""), ("segm", "mask_"))[: 2 if with_masks else 1]:
        with contextlib.redirect_stdout(io.StringIO()):
            ground, predicted = COCO(), COCO()  # fresh each time: COCOeval turns segmentations into RLE in place
            ground.dataset = copy.deepcopy(document)
            predicted.dataset = {"images": document["images"], "categories": document["categories"],
                                 "annotations": copy.deepcopy(detections)}
            ground.createIndex()
            predicted.createIndex()
            evaluation = COCOeval(ground, predicted, iou_type)
            if image_ids is not None:
                evaluation.params.imgIds = sorted(int(i) for i in image_ids)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        scores |= {prefix + name: float(value) * 100 if value >= 0 else math.nan
                   for name, value in zip(METRICS, evaluation.stats[:6], strict=True)}
    return scores
