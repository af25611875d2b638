"""A trained detector as a file, its COCO mAP on a split, and its boxes drawn on a photo.

A detector file (`model.pt` of a detection run) holds the state_dict and the plain config that rebuilds it with
`build_detector`: the backbone's architecture, form, anchors, input size, normalisation and category names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..data.folder import read_image
from ..io import atomic_torch_save, atomic_write_bytes, load_torch_file
from ..models import ResNet, model_config, model_from_config
from ..models.pretrained import resolve_pretrained
from ..runtime import autocast, resolve_device
from .backbones import build_detector
from .data import DetectionDataset, collate_detection
from .metrics import MASK_THRESHOLD, detections_to_coco, evaluate_detections

DETECTOR_FORMAT = "resnets-detector"


def detector_config(detector: torch.nn.Module, backbone: ResNet, recipe: Any, categories: dict[int, str]
                    ) -> dict[str, Any]:
    """Everything `build_detector` needs to rebuild `detector` (plain values only: checkpoints store it)."""
    return {"backbone": model_config(backbone), "form": recipe.form, "kind": recipe.kind,
            "box_representation": recipe.box_representation,
            "num_classes": max(categories) + 1, "trainable_layers": recipe.trainable_layers,
            "frozen_bn": recipe.frozen_bn, "anchor_sizes": list(recipe.anchor_sizes),
            "options": recipe.detector_options(), "image_mean": [float(v) for v in detector.transform.image_mean],
            "image_std": [float(v) for v in detector.transform.image_std],
            "categories": {str(k): v for k, v in sorted(categories.items())}}


def save_detector(detector: torch.nn.Module, config: dict[str, Any], path: Path, metrics: dict[str, Any],
                  storage: torch.dtype | None = None) -> Path:
    """The detector file; `storage` (e.g. torch.float16 for a shipped detector) rounds its floating-point tensors."""
    state = {key: value.detach().cpu().to(storage) if storage is not None and value.is_floating_point() else value
             for key, value in detector.state_dict().items()}
    return atomic_torch_save({"format": DETECTOR_FORMAT, "config": config, "state_dict": state, "metrics": metrics},
                             path)


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(detector in eval mode on `device`, its config) from a detector file, a detection run directory or a shipped
    detector's name (`maskrcnn_resnet18.pennfudan`: `resnets models --pretrained` lists them)."""
    path = resolve_pretrained(path, task="detection").path if isinstance(path, str) else Path(path)
    path = path / "model.pt" if path.is_dir() else path
    data = load_torch_file(path, "detector file", "train one with `resnets detect train`")
    if not isinstance(data, dict) or data.get("format") != DETECTOR_FORMAT:
        raise ValueError(f"{path} is not a resnets detector file (classification weights load with "
                         "resnets.load_model); give the model.pt of a `resnets detect train` run")
    config = data["config"]
    detector = build_detector(model_from_config(config["backbone"]), num_classes=config["num_classes"],
                              form=config["form"], kind=config["kind"], trainable_layers=config["trainable_layers"],
                              frozen_bn=config["frozen_bn"], anchor_sizes=config["anchor_sizes"],
                              box_representation=config.get("box_representation"), image_mean=config["image_mean"],
                              image_std=config["image_std"], **config["options"])
    detector.load_state_dict(data["state_dict"], strict=True)
    return detector.to(resolve_device(device)).eval(), config


@torch.no_grad()
def evaluate_detector(detector: torch.nn.Module, dataset: DetectionDataset, limit: int | None = None,
                      precision: str = "fp32", batch_size: int = 8) -> dict[str, float]:
    """COCO mAP (percent) of `detector` on the first `limit` images of `dataset` (all by default)."""
    detector.eval()
    device = next(detector.parameters()).device
    count = len(dataset) if limit is None else min(limit, len(dataset))
    results: list[dict] = []
    for start in range(0, count, batch_size):
        indices = range(start, min(start + batch_size, count))
        images, _ = collate_detection([dataset[i] for i in indices], device)
        with autocast(device, precision):
            outputs = detector(images)
        outputs = [{key: value.float().cpu() for key, value in output.items()} for output in outputs]
        results += detections_to_coco([dataset.image_ids[i] for i in indices], outputs)
    return evaluate_detections(dataset.coco_document(), results, dataset.image_ids[:count],
                               masks=bool(getattr(detector, "roi_heads", None) and detector.roi_heads.has_mask()))


@torch.no_grad()
def detect_image(detector: torch.nn.Module, config: dict[str, Any], image_path: str | Path,
                 out_png: str | Path | None = None, score_threshold: float = 0.5) -> list[dict[str, Any]]:
    """What a detector finds on one photo, best first: [{"label", "score", "box": [x1, y1, x2, y2]}], plus "mask" (a
    bool H x W tensor, the probability map at >= 0.5) from a Mask R-CNN; drawn to `out_png` if given."""
    pixels = read_image(image_path)
    device = next(detector.parameters()).device
    output = {key: value.float().cpu() for key, value in detector.eval()([pixels.to(device).float() / 255])[0].items()}
    keep = output["scores"] >= score_threshold
    names = config["categories"]
    masks = output["masks"][keep][:, 0] >= MASK_THRESHOLD if "masks" in output else None
    found = [{"label": names.get(str(int(label)), str(int(label))), "score": round(float(score), 4),
              "box": [round(float(v), 1) for v in box]} | ({"mask": masks[i]} if masks is not None else {})
             for i, (box, score, label) in enumerate(zip(output["boxes"][keep], output["scores"][keep],
                                                         output["labels"][keep], strict=True))]
    if out_png is not None:
        drawn = pixels
        if masks is not None and len(masks):
            drawn = draw_segmentation_masks(drawn, masks, alpha=0.45, colors="cyan")
        drawn = draw_bounding_boxes(drawn, output["boxes"][keep], [f"{d['label']} {d['score']:.2f}" for d in found],
                                    colors="yellow", width=2)
        picture = Image.fromarray(drawn.permute(1, 2, 0).numpy())  # Pillow: torchvision 0.29 deprecates encode_png
        atomic_write_bytes(Path(out_png), lambda f: picture.save(f, "PNG"))
    return found
