"""`resnets predict`: top-k classes with names and probabilities for image files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..deploy.optimize import BACKENDS, PRECISIONS, optimize_for_inference
from ..deploy.predict import Predictor, format_prediction, load_predictor, predict_files, prediction_json

PREPROCESS_HELP = """preprocessing: the weight file's meta["preprocess"] when it has one; otherwise ImageNet models:
shorter side 256, centre crop 224, /255, minus mean (0.485, 0.456, 0.406), / std (0.229, 0.224, 0.225);
CIFAR models: shorter side 32, centre crop 32, /255, minus the per-pixel mean image stored with the weights
(else the per-channel CIFAR mean), no std division. Class names: meta["classes"], else CIFAR-10/100 or the
1,000 ImageNet names. Unreadable images are reported on stderr and the others still predicted (exit 1)."""


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights / --checkpoint / --model NAME --pretrained (shared with `resnets export`)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="FILE", help="weight file (ours, or a torchvision/timm ResNet file)")
    source.add_argument("--checkpoint", metavar="DIR", help="run directory (its model.pt, else checkpoints/last.pt) "
                                                            "or a checkpoint file")
    source.add_argument("--model", metavar="NAME", help="model name, with --pretrained for the shipped weights")
    parser.add_argument("--pretrained", action="store_true", help="with --model: the weights shipped with resnets")
    parser.add_argument("--tag", default=None, help="with --pretrained: the shipped weights of another recipe than "
                                                    "the paper's, e.g. fast (see `resnets models`)")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """--precision / --backend / --calibration: how the model runs (resnets.optimize_for_inference)."""
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32, bf16, fp16 (CUDA) or int8 (CPU, post-training quantisation)")
    parser.add_argument("--backend", choices=(*BACKENDS, "none"), default="auto",
                        help="auto: the fastest measured for the device and precision (onnxruntime for fp32 on CPU "
                             "when installed, pt2e for int8, inductor on CUDA); none: the plain eager model under "
                             "autocast")
    parser.add_argument("--calibration", metavar="DIR", default=None,
                        help="int8: folder of training images to calibrate on (default: the family's training set "
                             "under $RESNETS_DATASETS)")


def inference_preparation(args: argparse.Namespace, batch_size: int) -> tuple[Any, str]:
    """(prepare, autocast precision) for evaluate_checkpoint: the optimised model owns the precision."""
    if args.backend == "none":
        if args.precision == "int8":
            raise ValueError("--precision int8 needs a quantising backend (--backend auto or pt2e), not none")
        return None, args.precision
    return (lambda model: optimize_for_inference(model, args.precision, batch_size, backend=args.backend,
                                                 calibration=args.calibration)), "fp32"


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    if (args.pretrained or args.tag) and args.model is None:
        raise ValueError("--pretrained and --tag go with --model NAME")
    pretrained = args.tag if args.tag else args.pretrained
    return load_predictor(args.weights, args.checkpoint, args.model, pretrained)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="top-k classes of image files", epilog=PREPROCESS_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, BMP, TIFF)")
    add_weights_arguments(parser)
    parser.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    add_inference_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per image: {"image", "top": [{"rank", "index", "class", "probability"}]}')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    predictor = predictor_from_args(args)
    if not predictor.meta.get("preprocess"):
        print(f"resnets predict: note: preprocessing {predictor.preprocess.describe()} "
              f"({predictor.preprocess_note})", file=sys.stderr)
    # Built for the batch it will see: an int8 graph has a fixed batch, and 3 photos padded to 32 waste work.
    prepare, _ = inference_preparation(args, min(args.batch_size, len(args.images)))
    predictions, failures = predict_files(predictor, args.images, args.topk, args.batch_size, prepare=prepare)
    for failure in failures:
        print(f"resnets predict: error: {failure.message}", file=sys.stderr)
    for prediction in predictions:
        print(prediction_json(prediction) if args.json else format_prediction(prediction))
    return 1 if failures else 0
