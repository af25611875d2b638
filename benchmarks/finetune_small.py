"""Fine-tuning on a small photo folder against training from scratch, same recipe and budget (issue 38).

The folder: 100 training photos of each CIFAR-10 class (the first 100 by file name of $RESNETS_DATASETS/cifar10-jpeg/
train/<class>/) in train/, and 100 test photos of each class (of cifar10-jpeg/test/<class>/) in val/, each upscaled
from 32x32 to the shorter side the weights were trained at (`resnet18.imagenette`: 128, bicubic, JPEG quality 95),
written to a temporary folder. Each setting trains resnet18 with the `finetune` recipe (10 epochs, cosine, batch 64,
label smoothing 0.1; 112 crops of shorter side in [128, 240], flips) and --precision bf16:

    finetuned  --pretrained resnet18.imagenette: the Imagenette body (classifier replaced) at lr x 0.1, the weights'
               own preprocessing (shorter side 128, centre 112, their per-pixel mean image)
    scratch    fresh weights, every parameter at lr, the folder's own mean image

3 seeds each. Every run's records (summary.json, config.json, metrics.jsonl, curves.png; no weights) go to
results/finetune-cifar100pc/<setting>-s<seed>/; a run whose records are already there is read, not retrained. The
table (error on the 1,000 val/ photos, mean ± std over the seeds, minutes per run, the CPU) is printed as markdown.

    RESNETS_DATASETS=../shared/datasets python benchmarks/finetune_small.py                # all 6 runs
    python benchmarks/finetune_small.py --settings finetuned --seeds 0                    # one run: time it first
    RESNETS_DATASETS=../shared/datasets python benchmarks/finetune_small.py --epochs 40    # the same, 4x the budget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from PIL import Image

from resnets.data.paths import CACHE_ENV, datasets_root
from resnets.data.preprocess import preprocessing_of
from resnets.models import create_model
from resnets.runs import RunPaths, copy_records
from resnets.train.classify import train
from resnets.train.plan import resolve_run

WEIGHTS = "resnet18.imagenette"
SETTINGS = {"finetuned": WEIGHTS, "scratch": None}
RESULTS = Path(__file__).resolve().parents[1] / "results" / "finetune-cifar100pc"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_small_set(folder: Path, per_class: int, test_per_class: int, side: int) -> Path:
    """train/<class>/ and val/<class>/ of CIFAR-10 photos upscaled to `side` x `side`."""
    source = datasets_root() / "cifar10-jpeg"
    if not (source / "train").is_dir():
        raise SystemExit(f"{source}/train not found; set RESNETS_DATASETS to the folder holding cifar10-jpeg/")
    for split, count, target in (("train", per_class, "train"), ("test", test_per_class, "val")):
        for class_folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            (folder / target / class_folder.name).mkdir(parents=True, exist_ok=True)
            for photo in sorted(class_folder.iterdir())[:count]:
                with Image.open(photo) as image:
                    image.convert("RGB").resize((side, side), Image.BICUBIC).save(
                        folder / target / class_folder.name / f"{photo.stem}.jpg", quality=95)
    return folder


def run_one(setting: str, seed: int, data: Path, work: Path, precision: str, epochs: float | None) -> dict:
    name = f"{setting}-s{seed}" if epochs is None else f"{setting}-{epochs:g}ep-s{seed}"
    records = RESULTS / name
    if (records / "summary.json").is_file():
        return json.loads((records / "summary.json").read_text())
    out = work / name
    longer = {} if epochs is None else {"epochs": epochs}
    plan = resolve_run("finetune", dataset="folder", data=str(data), model="resnet18", pretrained=SETTINGS[setting],
                       seed=seed, precision=precision, progress=False, out=str(out), **longer)
    summary = train(plan)
    copy_records(RunPaths(out).root, RESULTS)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--per-class", type=int, default=100, help="training photos per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="val/ photos per class")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--epochs", type=float, default=None, help="the recipe's length (default: its 10 epochs); "
                        "records then go to <setting>-<E>ep-s<seed>")
    args = parser.parse_args()
    side = preprocessing_of(create_model(WEIGHTS)).resize  # the shorter side the weights were trained at
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="finetune-small-") as temp:
        os.environ[CACHE_ENV] = str(Path(temp) / "cache")  # the decoded photos go with the temporary folder
        data = write_small_set(Path(temp) / "cifar100pc", args.per_class, args.test_per_class, side)
        for seed in args.seeds:
            for setting in args.settings:
                summary = run_one(setting, seed, data, Path(temp) / "runs", args.precision, args.epochs)
                results.setdefault(setting, []).append(summary)
                print(f"{setting} seed {seed}: {summary['test_top1_error']:.2f}% error, "
                      f"{summary['wall_seconds'] / 60:.1f} min", flush=True)
    length = f"{args.epochs:g} epochs" if args.epochs else "10 epochs"
    print(f"\nresnet18, recipe finetune ({length}), {args.per_class} train / {args.test_per_class} val photos per "
          f"class of CIFAR-10 upscaled to {side}px, {args.precision}, on {cpu_name()}\n")
    print("| start | val error % (mean ± std) | per seed | minutes per run |")
    print("|---|---|---|---|")
    for setting, summaries in results.items():
        errors = [s["test_top1_error"] for s in summaries]
        spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
        minutes = statistics.mean(s["wall_seconds"] for s in summaries) / 60
        start = f"`{SETTINGS[setting]}`" if SETTINGS[setting] else "from scratch"
        print(f"| {start} | {statistics.mean(errors):.2f}{spread} | {', '.join(f'{e:.1f}' for e in errors)} | "
              f"{minutes:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
