"""`resnets detect`: make the synthetic detection dataset, train a detector on one of our backbones, evaluate it
(COCO mAP), and draw its boxes on photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..data.paths import datasets_root
from ..detection import (
    DetectionDataset,
    DetectionOptions,
    DetectionRecipe,
    detect_image,
    evaluate_detector,
    load_detector,
    make_synthetic_detection,
    train_detector,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    detect = subparsers.add_parser("detect", help="object detection on our backbones (Sec. 4.3): data, train, eval, "
                                                  "predict")
    actions = detect.add_subparsers(dest="action", required=True, metavar="ACTION")
    m = actions.add_parser("make-data", help="CIFAR-10 objects pasted on Imagenette photos, COCO format (synthetic "
                                             "composition, not COCO or VOC)")
    m.add_argument("--out", required=True, help="output folder (train/, val/, annotations/)")
    m.add_argument("--train", type=int, default=2000, help="training images")
    m.add_argument("--val", type=int, default=500, help="validation images")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--datasets", default=None, help="folder holding imagenette/ and cifar10-jpeg/ (default: the "
                                                    "datasets root)")
    m.set_defaults(handler=run_make_data)

    t = actions.add_parser("train", help="train a Faster R-CNN (C4 or FPN) on a COCO-format folder")
    t.add_argument("--data", required=True, help="COCO-format folder (annotations/{train,val}.json)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--backbone", default="resnet18", help="an ImageNet-family model name (resnet18, plain18, ...)")
    t.add_argument("--pretrained", default=None, metavar="TAG|MODEL.TAG|FILE|RUN",
                   help="backbone weights: a shipped tag of --backbone (e.g. imagenette) or MODEL.TAG (e.g. "
                        "resnet18.imagenette), a weight file or a run directory; default: He initialisation")
    defaults = DetectionRecipe()
    t.add_argument("--form", choices=("c4", "fpn"), default=defaults.form)
    t.add_argument("--iterations", type=int, default=defaults.iterations)
    t.add_argument("--batch-size", type=int, default=defaults.batch_size)
    t.add_argument("--lr", type=float, default=defaults.lr)
    t.add_argument("--trainable-layers", type=int, default=defaults.trainable_layers,
                   help="backbone stages trained, from the top (5 = all)")
    t.add_argument("--no-frozen-bn", action="store_true", help="train BN statistics instead of freezing them")
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when there is one)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--deterministic", action="store_true")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto",
                   help="continue the run in --out; `--resume auto` continues it if it has a checkpoint and starts it "
                        "otherwise")
    t.add_argument("--eval-images", type=int, default=None, help="validation images for the evaluations during "
                                                                 "training (all at the end)")
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(handler=run_train)

    e = actions.add_parser("eval", help="COCO mAP of a trained detector on a split")
    e.add_argument("run", help="detection run directory or its model.pt")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="val")
    e.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    e.add_argument("--device", default="auto")
    e.set_defaults(handler=run_eval)

    p = actions.add_parser("predict", help="boxes on photos, drawn to PNG files")
    p.add_argument("run", help="detection run directory or its model.pt")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="detections", help="folder for <image>.png")
    p.add_argument("--threshold", type=float, default=0.5, help="lowest score drawn")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=run_predict)


def run_make_data(args: argparse.Namespace) -> None:
    summary = make_synthetic_detection(Path(args.out), train_images=args.train, val_images=args.val, seed=args.seed,
                                       datasets=Path(args.datasets) if args.datasets else datasets_root())
    print(json.dumps({k: v for k, v in summary.items() if k != "parameters"}, indent=2, default=str))


def run_train(args: argparse.Namespace) -> int:
    recipe = DetectionRecipe(form=args.form, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                             trainable_layers=args.trainable_layers, frozen_bn=not args.no_frozen_bn)
    options = DetectionOptions(data=args.data, out=args.out, backbone=args.backbone, pretrained=args.pretrained,
                               precision=args.precision, device=args.device, seed=args.seed,
                               deterministic=args.deterministic, resume=args.resume, eval_images=args.eval_images,
                               checkpoint_every=args.checkpoint_every, progress=not args.no_progress, recipe=recipe)
    summary = train_detector(options)
    print(f"{args.backbone} {args.form}: mAP@.5 {summary['val_map_50']:.1f}%, mAP@[.5:.95] {summary['val_map']:.1f}% "
          f"on {summary['val_images']} validation images -> {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> None:
    detector, _ = load_detector(args.run, args.device)
    scores = evaluate_detector(detector, DetectionDataset(Path(args.data), args.split), precision=args.precision)
    print(json.dumps({key: round(value, 2) for key, value in scores.items()}))


def run_predict(args: argparse.Namespace) -> None:
    detector, config = load_detector(args.run, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        target = out / f"{Path(image).stem}.png"
        found: list[dict[str, Any]] = detect_image(detector, config, image, target, args.threshold)
        print(f"{image}: {len(found)} boxes -> {target}")
        for d in found:
            print(f"  {d['label']:<12} {d['score']:.3f} {d['box']}")
