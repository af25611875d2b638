"""`resnets train` and `resnets eval`.

Precedence of settings: the named recipe < a TOML --config < --set key=value < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..train.data import DATASETS
from ..train.recipes import RECIPES, Recipe, RunOptions, apply_overrides, get_recipe, parse_assignments, read_toml
from .predict import add_inference_arguments, inference_preparation

# Flags that map onto recipe fields (dest -> field).
RECIPE_FLAGS = {"epochs": "epochs", "iterations": "iterations", "batch_size": "batch_size", "lr": "lr",
                "val_split": "val_split", "weight_decay": "weight_decay"}
OPTION_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a network with a named recipe (paper, fast, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name (see `resnets models`); default resnet20")
    p.add_argument("--dataset", default=None, choices=DATASETS)
    p.add_argument("--data", default=None, help="dataset directory (official binaries, archive or image folders)")
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES), help="named recipe; default paper")
    p.add_argument("--config", default=None, help="TOML file of run options and recipe fields")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override any recipe field")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (split over DDP processes)")
    p.add_argument("--lr", type=float, default=None, help="learning rate for the global batch")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--val-split", type=int, default=None, help="hold out N training images (paper: 5000)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="auto",
                   help="continue the run in --out; `--resume auto` continues it if it has a checkpoint and starts "
                        "it otherwise (the same command for the first start and every requeue)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    p.add_argument("--shortcut", choices=["A", "B", "C", "none"], default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (ImageNet)")
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default=None,
                   help="ImageNet folders: stop at an unreadable image (default) or skip and count it")
    p.add_argument("--val-labels", default=None, help="labels file for a flat ImageNet validation folder")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--subset", type=int, default=None, help="train on a random subset of N images (smoke runs)")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--max-iterations", type=int, default=None, help="stop early without changing the schedule")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<recipe>)")
    p.set_defaults(handler=run_train)

    e = subparsers.add_parser("eval", help="test error of a checkpoint, run directory or weight file")
    e.add_argument("--checkpoint", required=True, help="run directory, checkpoint or weight file")
    e.add_argument("--data", default=None, help="dataset directory")
    e.add_argument("--dataset", default=None, choices=DATASETS)
    add_inference_arguments(e)
    e.add_argument("--device", default="auto")
    e.add_argument("--protocol", choices=["center", "10crop", "multiscale"], default="center",
                   help="ImageNet test protocol (Sec. 3.4); CIFAR always uses the single 32x32 view")
    e.add_argument("--batch-size", type=int, default=32, help="ImageNet: images per batch (center, 10crop)")
    e.add_argument("--workers", type=int, default=2, help="ImageNet: DataLoader workers")
    e.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail")
    e.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    e.add_argument("--predictions", default=None, metavar="FILE",
                   help="write each test image's top-1 class (JSON lines: image, label, top1)")
    e.set_defaults(handler=run_eval)


def resolve(args: argparse.Namespace) -> tuple[RunOptions, Recipe]:
    """Merge recipe, config file, --set and flags into the run's options and recipe."""
    config: dict[str, Any] = read_toml(args.config) if args.config else {}
    model = args.model or config.get("model", "resnet20")
    recipe_name = args.recipe or config.get("recipe", "paper")
    from ..models import model_spec

    recipe = get_recipe(recipe_name, depth=model_spec(model).depth)
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(config) - recipe_fields - OPTION_FIELDS - {"recipe"}
    if unknown:
        raise ValueError(f"{args.config}: unknown keys {', '.join(sorted(unknown))}")
    recipe = apply_overrides(recipe, {k: v for k, v in config.items() if k in recipe_fields and k != "name"})
    recipe = apply_overrides(recipe, parse_assignments(args.set))
    flags = {field: getattr(args, dest) for dest, field in RECIPE_FLAGS.items() if getattr(args, dest) is not None}
    if args.iterations is not None:
        flags["epochs"] = None  # an explicit iteration count wins over a recipe's epochs
    recipe = apply_overrides(recipe, flags)
    values = {k: v for k, v in config.items() if k in OPTION_FIELDS}
    values.update({k: getattr(args, k) for k in OPTION_FIELDS if getattr(args, k, None) is not None})
    values["model"] = model
    values.setdefault("dataset", recipe.dataset)
    values.setdefault("out", f"runs/{model}-{recipe.name}")
    if values.get("resume") not in (None, True, False, "auto"):
        raise ValueError(f"--resume takes no value or 'auto', got {values['resume']!r}")
    return RunOptions(**values), recipe.validate()


def run_train(args: argparse.Namespace) -> int:
    from ..train.loop import train

    options, recipe = resolve(args)
    train(options, recipe)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluate.run import evaluate_checkpoint

    imagenet = {}
    if (args.dataset or "") in ("imagenet", "imagenette") or args.protocol != "center":
        imagenet = {"batch_size": args.batch_size, "num_workers": args.workers, "on_bad_image": args.on_bad_image}
    prepare, precision = inference_preparation(args, batch_size=args.batch_size)
    result = evaluate_checkpoint(Path(args.checkpoint), data=args.data, dataset=args.dataset,
                                 precision=precision, device=args.device, protocol=args.protocol,
                                 predictions=args.predictions is not None, prepare=prepare, **imagenet)
    if args.predictions is not None:
        lines = "".join(json.dumps(entry) + "\n" for entry in result.pop("predictions"))
        atomic_write_text(Path(args.predictions), lines)
    top5 = f", top-5 error {result['top5_error']:.2f}%" if result.get("num_classes", 10) > 10 else ""
    protocol = f" ({result['protocol']})" if "protocol" in result else ""
    print(f"{result['model']} on {result['dataset']}{protocol}: top-1 error {result['top1_error']:.2f}%{top5} "
          f"({result['images']} images, {result['images_per_s']:.1f} images/s; {result['inference']})")
    if args.json:
        print(json.dumps(result))
    return 0
