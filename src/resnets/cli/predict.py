"""`resnets predict`: top-k classes with names and probabilities for image files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..deploy.optimize import BACKENDS, PRECISIONS, optimize_for_inference
from ..deploy.predict import (
    Predictor,
    format_prediction,
    image_paths,
    load_predictor,
    predict_files,
    prediction_json,
    write_predictions_csv,
)

PREPROCESS_HELP = """preprocessing: the weight file's meta["preprocess"] when it has one; otherwise ImageNet models:
shorter side 256, centre crop 224, /255, minus mean (0.485, 0.456, 0.406), / std (0.229, 0.224, 0.225);
CIFAR models: shorter side 32, centre crop 32, /255, minus the per-pixel mean image stored with the weights
(else the per-channel CIFAR mean), no std division. Class names: meta["classes"], else CIFAR-10/100 or the
1,000 ImageNet names. Photos are read upright (EXIF orientation applied). Unreadable images are reported on stderr
and the others still predicted (exit 1).

--out FILE.csv: one row per photo, header path,top1_class,top1_probability,top2_class,...,topK_probability
(probabilities with 6 decimals), written whole or not at all."""


PRETRAINED_METAVAR = "TAG|MODEL.TAG|FILE|RUN"
PRETRAINED_HELP = ("the weights: shipped MODEL.TAG (e.g. resnet18.imagenette; MODEL alone: its default tag; "
                   "`resnets models --pretrained` lists them), a TAG of --model, a weight file (ours, torchvision's, "
                   "timm's) or a run directory (its model.pt, else its last checkpoint)")


def add_pretrained_arguments(parser: argparse.ArgumentParser) -> None:
    """--pretrained TAG|MODEL.TAG|FILE|RUN and --model, the same in every command; the old --weights FILE,
    --checkpoint RUN and --tag TAG still work for one release, with a warning (see `pretrained_from_args`)."""
    parser.add_argument("--pretrained", nargs="?", const=True, default=None, metavar=PRETRAINED_METAVAR,
                        help=PRETRAINED_HELP)
    parser.add_argument("--model", metavar="NAME", default=None,
                        help="the model: with --pretrained TAG or a bare --pretrained (its default tag); with a file, "
                             "checks that it holds this model")
    for old in ("--weights", "--checkpoint", "--tag"):  # deprecated spellings, kept out of --help
        parser.add_argument(old, default=None, help=argparse.SUPPRESS)


def warn_deprecated(command: str, old: str, new: str) -> None:
    """One stderr line for an old flag spelling: what to write instead (it goes in the next release)."""
    print(f"resnets {command}: warning: {old} is deprecated and goes in the next release; write {new}",
          file=sys.stderr)


def pretrained_from_args(args: argparse.Namespace) -> tuple[bool | str, str | None]:
    """(the --pretrained value, --model) from the flags of `add_pretrained_arguments`, old spellings included."""
    value = args.pretrained
    for flag in ("weights", "checkpoint"):
        old = getattr(args, flag)
        if old is not None:
            warn_deprecated(args.command, f"--{flag} {old}", f"--pretrained {old}")
            if value is not None:
                raise ValueError(f"give the weights once: --pretrained or --{flag}, not both")
            value = old
    if args.tag is not None:
        if args.model is None:
            raise ValueError(f"--tag goes with --model NAME; write --pretrained MODEL.{args.tag}")
        warn_deprecated(args.command, f"--model {args.model} --pretrained --tag {args.tag}",
                        f"--pretrained {args.model}.{args.tag}")
        if value not in (None, True):
            raise ValueError("give the weights once: --pretrained or --tag, not both")
        value = args.tag
    if value is None:
        raise ValueError(f"{'--model ' + args.model + ' without ' if args.model else 'no '}--pretrained: give "
                         f"--pretrained {PRETRAINED_METAVAR} (random weights are of no use here)")
    return value, args.model


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
    return load_predictor(*pretrained_from_args(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="top-k classes of image files", epilog=PREPROCESS_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (JPEG, PNG, WebP, BMP, TIFF) or folders, walked recursively for them")
    add_pretrained_arguments(parser)
    parser.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    add_inference_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per image: {"image", "top": [{"rank", "index", "class", "probability"}]}')
    parser.add_argument("--out", metavar="FILE.csv", default=None,
                        help="write the predictions as CSV, one row per photo (path, top-k classes and probabilities) "
                             "instead of printing them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out is not None and args.json:
        raise ValueError("--out writes CSV and --json prints JSON lines: give one of them")
    images = image_paths(args.images)
    predictor = predictor_from_args(args)
    if not predictor.meta.get("preprocess"):
        print(f"resnets predict: note: preprocessing {predictor.preprocess.describe()} "
              f"({predictor.preprocess_note})", file=sys.stderr)
    # Built for the batch it will see: an int8 graph has a fixed batch, and 3 photos padded to 32 waste work.
    prepare, _ = inference_preparation(args, min(args.batch_size, len(images)))
    predictions, failures = predict_files(predictor, images, args.topk, args.batch_size, prepare=prepare)
    for failure in failures:
        print(f"resnets predict: error: {failure.message}", file=sys.stderr)
    if args.out is not None:
        write_predictions_csv(predictions, args.out, min(args.topk, len(predictor.classes)))
        print(f"resnets predict: wrote {len(predictions)} rows to {args.out}"
              f"{f' ({len(failures)} unreadable files left out)' if failures else ''}", file=sys.stderr)
    for prediction in predictions if args.out is None else ():
        print(prediction_json(prediction) if args.json else format_prediction(prediction))
    return 1 if failures else 0
