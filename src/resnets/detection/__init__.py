"""Object detection with our ResNets as backbones (Sec. 4.3, Appendix A): torchvision's Faster R-CNN / Mask R-CNN
in the paper's C4 form or the FPN form, on real street photos (Penn-Fudan: boxes and instance masks) or a
synthetic-composition dataset made offline, COCO box and mask AP with pycocotools, and a detection task
(`train.DetectionTask`) that the one training loop (`resnets.train.loop`) runs.

    from resnets.detection import build_detector
    detector = build_detector("resnet50", num_classes=91, form="fpn")   # torchvision's state_dict names
"""

from .backbones import build_detector, freeze_batchnorm, set_trainable_layers
from .data import DetectionDataset, collate_detection
from .inference import detect_image, evaluate_detector, load_detector
from .metrics import detections_to_coco, evaluate_detections
from .pennfudan import PennFudanDataset, parse_annotation, pennfudan_split
from .synthetic import make_synthetic_detection
from .train import (
    DETECTION_RECIPES,
    PENNFUDAN_RECIPE,
    DetectionOptions,
    DetectionRecipe,
    default_recipe,
    eval_split,
    open_detection_data,
    train_detector,
)

__all__ = [
    "DETECTION_RECIPES",
    "PENNFUDAN_RECIPE",
    "DetectionDataset",
    "DetectionOptions",
    "DetectionRecipe",
    "PennFudanDataset",
    "build_detector",
    "collate_detection",
    "default_recipe",
    "detect_image",
    "detections_to_coco",
    "eval_split",
    "evaluate_detections",
    "evaluate_detector",
    "freeze_batchnorm",
    "load_detector",
    "make_synthetic_detection",
    "open_detection_data",
    "parse_annotation",
    "pennfudan_split",
    "set_trainable_layers",
    "train_detector",
]
