"""`resnets train` and `resnets eval`.

Precedence of settings: the named recipe < a TOML --config < --set key=value < explicit flags (resolved by
`resnets.train.plan.resolve_run`). The dataset defaults to cifar10, the recipe and model to the dataset's.

Fine-tuning on your photos (PATH/train/<class>/*, PATH/val/<class>/* or a held-out 10% per class):
    resnets train --dataset folder --data PATH --model resnet18 --pretrained resnet18.imagenette --out runs/mine
    resnets predict photo.jpg --pretrained runs/mine
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluate.protocols import DEFAULT_FCN_REDUCTION, FCN_REDUCTIONS
from ..io import atomic_write_text
from ..train.plan import RECIPE_FLAGS, RunPlan, resolve_run
from ..train.recipes import DATASETS, RECIPES, RUN_OPTION_FIELDS, parse_assignments
from .predict import add_inference_arguments, add_pretrained_arguments, inference_preparation, pretrained_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a network with a named recipe (paper, fast, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name (see `resnets models`); default: the dataset's "
                                                 f"({', '.join(f'{d} {k.model}' for d, k in DATASETS.items())})")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG|MODEL.TAG|FILE|RUN",
                   help="start from these weights (shipped MODEL.TAG, a weight file or a run directory): their "
                        "classifier is replaced when the run's classes differ; --dataset folder takes their "
                        "preprocessing; the finetune recipe trains the body at lr x body_lr_scale")
    p.add_argument("--dataset", default=None, choices=list(DATASETS), help="default cifar10")
    p.add_argument("--data", default=None, help="dataset directory (official binaries, archive or image folders; "
                                                "--dataset folder: PATH with train/<class>/, optionally val/<class>/)")
    defaults = ", ".join(f"{dataset} {kind.recipe}" for dataset, kind in DATASETS.items())
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES), help=f"named recipe; default: the dataset's "
                                                                          f"({defaults})")
    p.add_argument("--config", default=None, help="TOML file of run options and recipe fields")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override any recipe field")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (split over DDP processes)")
    p.add_argument("--lr", type=float, default=None, help="learning rate for the global batch")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--val-split", type=int, default=None, help="hold out N training images (paper: 5000)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default=None,
                   help="fp32 (default), bf16 or fp16 (CUDA) autocast; auto: bf16 where the hardware computes "
                        "it (CUDA, a CPU with avx512_bf16 or AMX), else fp32")
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
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write the metrics as TensorBoard event files in OUT/tensorboard/ (pip install "
                        "'resnets[tensorboard]'); view with `tensorboard --logdir OUT`")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--subset", type=int, default=None, help="train on a random subset of N images (smoke runs)")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--max-iterations", type=int, default=None, help="stop early without changing the schedule")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<recipe>)")
    p.set_defaults(handler=run_train)

    e = subparsers.add_parser("eval", help="test error of a checkpoint, run directory or weight file")
    add_pretrained_arguments(e)  # --pretrained MODEL.TAG|FILE|RUN (old: --checkpoint)
    e.add_argument("--data", default=None, help="dataset directory")
    e.add_argument("--dataset", default=None, choices=list(DATASETS))
    add_inference_arguments(e)
    e.add_argument("--device", default="auto")
    e.add_argument("--protocol", choices=["center", "10crop", "multiscale", "flip"], default="center",
                   help="ImageNet test protocol (Sec. 3.4); CIFAR uses the single 32x32 view (center), or with flip "
                        "also its mirror image, softmax averaged (beyond the paper)")
    e.add_argument("--fcn-reduction", choices=list(FCN_REDUCTIONS), default=DEFAULT_FCN_REDUCTION,
                   help="multiscale: average each score map over positions, then softmax (the paper's, default), or "
                        "softmax at every position, then average")
    e.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="re-estimate the BatchNorm statistics on N training photos (the train/ split beside the "
                        "test folder) at the test size, per scale for multiscale; weights untouched (beyond the "
                        "paper; docs/results.md)")
    e.add_argument("--eval-subset", type=int, default=None, metavar="N",
                   help="test on N images spread evenly over the test set")
    e.add_argument("--batch-size", type=int, default=32, help="ImageNet: images per batch (center, 10crop)")
    e.add_argument("--workers", type=int, default=2, help="ImageNet: DataLoader workers")
    e.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail")
    e.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    e.add_argument("--predictions", default=None, metavar="FILE",
                   help="write each test image's top-1 class (JSON lines: image, label, top1)")
    e.set_defaults(handler=run_eval)


def resolve(args: argparse.Namespace) -> RunPlan:
    """The run that the command line describes (`resolve_run`, which checks it)."""
    flags = {name: getattr(args, name, None) for name in (*RUN_OPTION_FIELDS, *RECIPE_FLAGS)}
    return resolve_run(args.recipe, config=args.config, overrides=parse_assignments(args.set), **flags)


def run_train(args: argparse.Namespace) -> int:
    from ..train.classify import train

    train(resolve(args))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluate.run import evaluate_checkpoint

    imagenet = {}
    if (args.dataset or "") in ("imagenet", "imagenette") or args.protocol != "center":
        imagenet = {"batch_size": args.batch_size, "num_workers": args.workers, "on_bad_image": args.on_bad_image}
    if args.protocol == "multiscale":
        imagenet["fcn_reduction"] = args.fcn_reduction
    if args.eval_subset is not None:
        imagenet["eval_subset"] = args.eval_subset
    prepare, precision = inference_preparation(args, batch_size=args.batch_size)
    source, model_name = pretrained_from_args(args)
    result = evaluate_checkpoint(source, model_name=model_name, data=args.data, dataset=args.dataset,
                                 precision=precision, device=args.device, protocol=args.protocol,
                                 predictions=args.predictions is not None, prepare=prepare,
                                 recalibrate_bn=args.recalibrate_bn, **imagenet)
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
