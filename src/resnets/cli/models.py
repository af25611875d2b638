"""`resnets models`: the model zoo with parameters and multiply-adds at each model's native input size;
`resnets models --pretrained`: every shipped `model.tag` with the error it measured."""

from __future__ import annotations

import argparse
import json

import torch

from ..analysis.complexity import complexity
from ..models import create_model, list_models, list_pretrained, model_spec
from ..models.pretrained import shipped_tags
from ..models.specs import PAPER_IMAGENET_GFLOPS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list every model with params and multiply-adds")
    parser.add_argument("names", nargs="*", help="models to show (default: all of the paper's)")
    parser.add_argument("--shortcut", choices=["A", "B", "C", "none"], help="override the shortcut option")
    parser.add_argument("--v1.5", dest="v15", action="store_true", help="stride on the 3x3 (torchvision)")
    parser.add_argument("--layers", action="store_true", help="per-layer table for each model")
    parser.add_argument("--pretrained", action="store_true",
                        help="the shipped weights instead: each MODEL.TAG with its measured error and data")
    parser.add_argument("--json", action="store_true", help="one JSON object per model (or shipped weights)")
    parser.set_defaults(handler=run)


def model_rows(names: list[str], shortcut: str | None = None, v15: bool = False) -> list[dict]:
    rows = []
    shipped = list_pretrained()
    for name in names:
        named = model_spec(name)
        plain, bottleneck = named.shortcut == "none", named.block == "bottleneck"
        with torch.device("meta"):  # shapes only: counting costs no memory and no arithmetic
            model = create_model(name, shortcut=None if plain else shortcut,
                                 stride_in_1x1=False if v15 and bottleneck else None)
        cost = complexity(model)
        spec = model.spec
        # Table 1 quotes FLOPs for the residual nets and for plain-18/34 (Sec. 4.1: same as ResNet).
        quoted = (spec.family == "imagenet" and not spec.preact and spec.depth in PAPER_IMAGENET_GFLOPS
                  and (spec.residual or spec.depth in (18, 34)))
        rows.append({
            "name": name, "family": spec.family, "depth": spec.depth, "block": spec.block,
            "shortcut": spec.shortcut, "bottleneck_stride": ("1x1 (v1)" if spec.stride_in_1x1 else "3x3 (v1.5)")
            if bottleneck else "-",
            "input": spec.input_size, "params": cost.params, "gmacs": round(cost.gmacs, 4),
            "paper_gflops": PAPER_IMAGENET_GFLOPS[spec.depth] if quoted else None,
            "pretrained": [f"{name}.{tag}" for tag in shipped_tags(name, shipped)],  # the default first
            "_cost": cost,
        })
    return rows


def pretrained_rows(names: list[str]) -> list[dict]:
    """One row per shipped `model.tag` (of `names`, or all): the error its metadata states and what it was measured
    on."""
    rows, shipped = [], list_pretrained()
    for name, meta in shipped.items():
        if names and meta["model"] not in names and name not in names:
            continue
        source = meta.get("started_from")  # trained on from other shipped weights: their epochs come first
        rows.append({"name": name, "default": shipped_tags(meta["model"])[0] == meta["tag"],
                     "dataset": meta["dataset"], "top1_error": meta["test_top1_error"],
                     "images": meta["test_images"], "data": meta.get("data") or meta["dataset"],
                     "recipe": meta["recipe"]["name"], "epochs": meta.get("epochs"), "started_from": source,
                     "epochs_before": (shipped.get(source) or {}).get("epochs") if source else None})
    return rows


def run_pretrained(args: argparse.Namespace) -> int:
    rows = pretrained_rows(args.names)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    name_width = max([28, *(len(r["name"]) + 2 for r in rows)])  # room for " *"
    recipe_width = max([10, *(len(r["recipe"]) for r in rows)])
    header = (f"{'weights':<{name_width}} {'top-1 error':>11}  {'measured on':<52} {'recipe':<{recipe_width}} "
              f"{'epochs':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        split = "validation" if r["dataset"] == "imagenette" else "test"  # Imagenette's val/ is its test set
        epochs = f"{r['epochs']:g}" if r["epochs"] is not None else "-"
        if r["epochs_before"] is not None:
            epochs = f"{r['epochs_before']:g}+{epochs}"
        measured = f"{r['images']:,} {split} images, {r['data']}"
        print(f"{r['name'] + (' *' if r['default'] else ''):<{name_width}} {r['top1_error']:>10.2f}%  "
              f"{measured:<52} {r['recipe']:<{recipe_width}} {epochs:>6}")
    print("\n* the model's default tag: what `--pretrained MODEL` and create_model(MODEL, pretrained=True) load.\n"
          "Load any with resnets.create_model(\"MODEL.TAG\") or --pretrained MODEL.TAG. Error: the top-1 error in "
          "the weights' .json (the run's; weights shipped with re-estimated BN statistics: measured on the file).\n"
          "Epochs A+B: B more epochs from other shipped weights trained A (the .json's started_from).")
    detectors = {name: meta for name, meta in list_pretrained("detection").items()
                 if not args.names or meta["model"] in args.names or name in args.names}
    if detectors:
        print(f"\n{'detector':<28} {'box AP':>7} {'mask AP':>8}  measured on")
        for name, meta in detectors.items():
            scores = meta["scores"]
            mask = f"{scores['mask_map']:>8.2f}" if "mask_map" in scores else f"{'-':>8}"
            print(f"{name:<28} {scores['map']:>7.2f} {mask}  {meta['eval_images']} {meta['eval_split']} photos of "
                  f"{meta['dataset']} (AP@[.5:.95], fp16 file)")
        print("Load with `resnets detect predict PHOTO --pretrained NAME` or resnets.detection.load_detector(NAME).")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        return run_pretrained(args)
    rows = model_rows(args.names or list_models(), args.shortcut, args.v15)
    if args.json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}))
        return 0
    header = (f"{'model':<17} {'family':<8} {'depth':>5} {'block':<10} {'shortcut':<8} {'stride':<10} "
              f"{'input':>5} {'params':>12} {'GMACs':>8} {'paper':>6} {'weights':<7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        paper = f"{r['paper_gflops']:.1f}" if r["paper_gflops"] else "-"
        print(f"{r['name']:<17} {r['family']:<8} {r['depth']:>5} {r['block']:<10} {r['shortcut']:<8} "
              f"{r['bottleneck_stride']:<10} {r['input']:>5} {r['params']:>12,} {r['gmacs']:>8.3f} {paper:>6} "
              f"{' '.join(r['pretrained']) or '-'}")
        if args.layers:
            print(r["_cost"].table() + "\n")
    print("\nGMACs: multiply-adds of conv and FC layers for one image at the native input size "
          "(224 ImageNet, 32 CIFAR); paper: Table 1's FLOPs row (x1e9).")
    return 0
