"""`resnets export`: ONNX or TorchScript with BN folded and a dynamic batch, verified before it is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy.export import DEFAULT_ATOL, DEFAULT_OPSET, FORMATS, export_model
from .predict import add_pretrained_arguments, predictor_from_args

EPILOG = f"""The exported graph takes input "input": float32 [batch, 3, H, W] RGB, already preprocessed, and returns
"logits" [batch, classes]. Preprocessing (stored in the ONNX metadata_props / the TorchScript extra file
resnets_meta.json as resnets.preprocess): the weight file's meta["preprocess"], else for ImageNet models
shorter side 256, centre crop 224, /255, minus mean (0.485, 0.456, 0.406), / std (0.229, 0.224, 0.225);
for CIFAR models 32x32, /255, minus the stored per-pixel mean image (else the per-channel CIFAR mean).
Verification: photos of $RESNETS_DATASETS/imagenet-sample (or --verify-images) through onnxruntime or
torch.jit.load, against the unfused model in float64: same top-1 and max |logit diff| < {DEFAULT_ATOL:g}."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="ONNX / TorchScript file with BN folded, verified",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pretrained_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True, help="onnx or torchscript")
    parser.add_argument("--out", required=True, metavar="PATH", help="output file (written atomically)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--verify-images", nargs="+", metavar="IMAGE", type=Path,
                        help="photos to verify with (default: 8 of the ImageNet sample, else random inputs)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"largest allowed |logit difference| (default {DEFAULT_ATOL:g})")
    parser.add_argument("--no-verify", action="store_true", help="write without checking the exported file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    predictor = predictor_from_args(args)
    out, check = export_model(predictor, args.out, args.format, opset=args.opset, verify=not args.no_verify,
                              images=args.verify_images, atol=args.atol)
    detail = f"opset {args.opset}, " if args.format == "onnx" else ""
    print(f"wrote {out} ({args.format}, {detail}{out.stat().st_size / 2**20:.1f} MB, dynamic batch)")
    print(f"verified: {check.summary()}" if check else "not verified (--no-verify)")
    print(f"input preprocessing: {predictor.preprocess.describe()} ({predictor.preprocess_note})")
    return 0
