"""`resnets detect`: train a detector on one of our backbones (Mask R-CNN on Penn-Fudan, or Faster R-CNN on a
COCO-format folder such as the synthetic composition `make-data` writes), evaluate it (COCO box and mask AP), and draw
its boxes and masks on photos."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..data.paths import datasets_root
from ..detection import (
    DETECTION_RECIPES,
    DetectionOptions,
    default_recipe,
    detect_image,
    eval_split,
    evaluate_detector,
    load_detector,
    make_synthetic_detection,
    open_detection_data,
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

    t = actions.add_parser("train", help="train Mask R-CNN on Penn-Fudan (default) or Faster R-CNN (C4 or FPN) on a "
                                         "COCO-format folder")
    t.add_argument("--data", default=None, help="the Penn-Fudan database (default: the datasets root's pennfudan/) or "
                                                "a COCO-format folder (annotations/{train,val}.json)")
    t.add_argument("--recipe", choices=sorted(DETECTION_RECIPES), default=None,
                   help="default: the data's (pennfudan for the Penn-Fudan database, synthetic otherwise)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--backbone", default="resnet18", help="an ImageNet-family model name (resnet18, plain18, ...)")
    t.add_argument("--pretrained", default=None, metavar="TAG|MODEL.TAG|FILE|RUN",
                   help="backbone weights: a shipped tag of --backbone (e.g. imagenette) or MODEL.TAG (e.g. "
                        "resnet18.imagenette), a weight file or a run directory; default: He initialisation")
    for flag, kind, what in (("--form", str, "c4 or fpn"), ("--iterations", int, ""), ("--batch-size", int, ""),
                             ("--lr", float, ""), ("--trainable-layers", int, "backbone stages trained, from the top "
                                                                              "(5 = all)")):
        t.add_argument(flag, type=kind, default=None, help=f"{what}{'; ' if what else ''}default: the recipe's")
    t.add_argument("--no-frozen-bn", action="store_true", help="train BN statistics instead of freezing them")
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when there is one)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--deterministic", action="store_true")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto",
                   help="continue the run in --out; `--resume auto` continues it if it has a checkpoint and starts it "
                        "otherwise")
    t.add_argument("--eval-images", type=int, default=None, help="held-out images for the evaluations during "
                                                                 "training (all at the end)")
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(handler=run_train)

    detector_help = "a detection run directory, its model.pt, or a shipped detector (e.g. maskrcnn_resnet18.pennfudan)"
    e = actions.add_parser("eval", help="COCO box (and mask) AP of a trained detector on a split")
    e.add_argument("--pretrained", required=True, metavar="RUN|FILE|NAME", help=detector_help)
    e.add_argument("--data", default=None, help="default: the datasets root's pennfudan/")
    e.add_argument("--split", default=None, help="default: the held-out split (Penn-Fudan test, COCO folder val)")
    e.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    e.add_argument("--device", default="auto")
    e.set_defaults(handler=run_eval)

    s = actions.add_parser("ship", help="store a finished run as a tagged pretrained detector (fp16, with its AP)")
    s.add_argument("run", help="a complete detection run directory")
    s.add_argument("--tag", default=None, help="default: the run's recipe (pennfudan)")
    s.add_argument("--data", default=None, help="where its held-out split is (default: the run's data)")
    s.set_defaults(handler=run_ship)

    p = actions.add_parser("predict", help="boxes (and masks) on photos, drawn to PNG files")
    p.add_argument("images", nargs="+")
    p.add_argument("--pretrained", required=True, metavar="RUN|FILE|NAME", help=detector_help)
    p.add_argument("--out", default="detections", help="folder for <image>.png")
    p.add_argument("--threshold", type=float, default=0.5, help="lowest score drawn")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=run_predict)


def run_make_data(args: argparse.Namespace) -> None:
    summary = make_synthetic_detection(Path(args.out), train_images=args.train, val_images=args.val, seed=args.seed,
                                       datasets=Path(args.datasets) if args.datasets else datasets_root())
    print(json.dumps({k: v for k, v in summary.items() if k != "parameters"}, indent=2, default=str))


def run_train(args: argparse.Namespace) -> int:
    data = args.data or str(datasets_root() / "pennfudan")
    recipe = DETECTION_RECIPES[args.recipe] if args.recipe else default_recipe(data)
    changes = {name: getattr(args, name) for name in ("form", "iterations", "batch_size", "lr", "trainable_layers")
               if getattr(args, name) is not None}
    recipe = dataclasses.replace(recipe, **changes, frozen_bn=recipe.frozen_bn and not args.no_frozen_bn)
    options = DetectionOptions(data=data, out=args.out, backbone=args.backbone, pretrained=args.pretrained,
                               precision=args.precision, device=args.device, seed=args.seed,
                               deterministic=args.deterministic, resume=args.resume, eval_images=args.eval_images,
                               checkpoint_every=args.checkpoint_every, progress=not args.no_progress, recipe=recipe)
    summary = train_detector(options)
    split = summary["eval_split"]
    scores = ", ".join(f"{label} AP {summary[f'{split}_{key}']:.1f} (AP50 {summary[f'{split}_{key}_50']:.1f})"
                       for label, key in (("box", "map"), ("mask", "mask_map")) if f"{split}_{key}" in summary)
    print(f"{args.backbone} {recipe.form} {recipe.kind}: {scores} on {summary[f'{split}_images']} {split} images "
          f"-> {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> None:
    detector, _ = load_detector(args.pretrained, args.device)
    data = args.data or str(datasets_root() / "pennfudan")
    dataset = open_detection_data(data, args.split or eval_split(data))
    scores = evaluate_detector(detector, dataset, precision=args.precision)
    print(json.dumps({key: round(value, 2) for key, value in scores.items()}))


def run_ship(args: argparse.Namespace) -> None:
    from ..detection.ship import ship_detector

    path = ship_detector(args.run, args.tag, args.data)
    meta = json.loads(path.with_suffix(".json").read_text())
    scores = meta["scores"]
    print(f"shipped {meta['model']}.{meta['pretrained']} -> {path} ({path.stat().st_size / 1e6:.1f} MB): box AP "
          f"{scores['map']:.2f}, mask AP {scores.get('mask_map', float('nan')):.2f} on {meta['eval_images']} "
          f"{meta['eval_split']} photos")


def run_predict(args: argparse.Namespace) -> None:
    detector, config = load_detector(args.pretrained, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        target = out / f"{Path(image).stem}.png"
        found: list[dict[str, Any]] = detect_image(detector, config, image, target, args.threshold)
        print(f"{image}: {len(found)} found -> {target}")
        for d in found:
            mask = f"  mask {int(d['mask'].sum())} px" if "mask" in d else ""
            print(f"  {d['label']:<12} {d['score']:.3f} {d['box']}{mask}")
