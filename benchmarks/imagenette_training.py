"""Training images/s on Imagenette at 112px, the data path's share of a step, and the model-step ceiling.

Ours: the photos decoded once (cached uint8 tensor), the Sec. 3.4 augmentation done per batch (`ScaleCropFlip`:
one roi_align for the random scale and crop, flip, PCA lighting, per-pixel mean). Conventional: torchvision's
ImageFolder (Pillow) with transforms.v2 (RandomShortestSize [128, 240], RandomCrop 112, flip, ToDtype, Normalize)
in a DataLoader with `--workers` worker processes, the trainer most users write. Both feed the same training step
(ResNet-18 option A, bf16 autocast, channels_last, SGD, batch 128). Rounds alternate the two paths, `--steps`
steps each after one warm-up step; medians over rounds. "data share" is the time spent making our batches
(timed alone in the same rounds) over our whole step. "ceiling" is the same step on one batch held in memory (no
data work at all): ours / ceiling says how much of the step's speed the data path leaves.

`--recipe imagenette-fast` measures that recipe instead: ours makes random-resized crops per batch
(`RandomResizedCropFlip`) of photos held at 128 px, batch 64, torchvision's mean/std; the conventional trainer uses
v2.RandomResizedCrop(112, scale=(0.25, 1)) on the JPEGs. `--compile` compiles the model (as `resnets train --compile`).

    RESNETS_DATASETS=../shared/datasets python benchmarks/imagenette_training.py --rounds 5 --steps 4
    RESNETS_DATASETS=../shared/datasets python benchmarks/imagenette_training.py --recipe imagenette-fast --compile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from resnets.data.paths import datasets_root
from resnets.models import create_model
from resnets.runtime import Runtime, autocast
from resnets.train.data import build_data
from resnets.train.recipes import RunOptions, get_recipe


def conventional_batches(root: str, batch_size: int, workers: int, mean: tuple[float, ...],
                         std: tuple[float, ...] | None, crop_area: tuple[float, ...] = ()) -> Iterator:
    geometry = ([v2.RandomResizedCrop(112, scale=tuple(crop_area))] if crop_area else
                [v2.RandomShortestSize(min_size=list(range(128, 241))), v2.RandomCrop(112)])
    transform = v2.Compose([*geometry, v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean, std or (1.0, 1.0, 1.0))])
    loader = DataLoader(ImageFolder(f"{root}/train", transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    while True:
        yield from loader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--recipe", default="imagenette", choices=["imagenette", "imagenette-fast"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    recipe = get_recipe(args.recipe)
    options = RunOptions(model=args.model, dataset="imagenette", precision="bf16", progress=False)
    data = build_data(options, recipe, Runtime(torch.device("cpu")))
    ours = iter(data.train)
    conventional = conventional_batches(str(datasets_root() / "imagenette"), recipe.batch_size, args.workers,
                                        tuple(data.preprocess.mean), data.preprocess.std, recipe.crop_area)
    model = create_model(args.model, num_classes=10, shortcut="A").to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if args.compile else model
    held = next(ours)  # one batch, held: the ceiling's input

    def ceiling() -> Iterator:
        while True:
            yield held

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(torch.device("cpu"), "bf16"):
            loss = torch.nn.functional.cross_entropy(forward(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(batches: Iterator, steps: int) -> tuple[float, float]:
        """(seconds per step, seconds per batch spent waiting for / making the batch)."""
        waiting = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            fetch = time.perf_counter()
            inputs, labels = next(batches)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            waiting += time.perf_counter() - fetch
            step(inputs, labels)
        return (time.perf_counter() - start) / steps, waiting / steps

    results: dict[str, list[tuple[float, float]]] = {"ours": [], "conventional": [], "ceiling": []}
    paths = (("ours", ours), ("conventional", conventional), ("ceiling", ceiling()))
    for round_index in range(args.rounds):
        for name, batches in paths:
            if round_index == 0:
                timed(batches, 1)  # warm-up: first step, DataLoader start
            per_step, waiting = timed(batches, args.steps)
            results[name].append((per_step, waiting))
            print(f"round {round_index + 1} {name}: {recipe.batch_size / per_step:.1f} img/s, "
                  f"batch {waiting * 1000:.0f} ms of {per_step * 1000:.0f} ms", flush=True)
    summary = {name: (statistics.median(s for s, _ in rows), statistics.median(w for _, w in rows))
               for name, rows in results.items()}
    ratios = [conventional[0] / ours[0] for ours, conventional in zip(results["ours"], results["conventional"],
                                                                         strict=True)]
    to_ceiling = [c[0] / o[0] for o, c in zip(results["ours"], results["ceiling"], strict=True)]
    print(f"\n{args.model} at 112px, recipe {args.recipe}, bf16{', compiled' if args.compile else ''}, batch "
          f"{recipe.batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps "
          "(medians):")
    for name, (per_step, waiting) in summary.items():
        print(f"  {name:12s} {recipe.batch_size / per_step:6.1f} img/s   batch wait {waiting * 1000:5.0f} ms "
              f"= {100 * waiting / per_step:4.1f}% of a step")
    print(f"  ours vs conventional ({args.workers} workers): {statistics.median(ratios):.2f}x "
          f"(per-round ratios {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"  ours vs the model-step ceiling: {100 * statistics.median(to_ceiling):.0f}% "
          f"(per-round {100 * min(to_ceiling):.0f}-{100 * max(to_ceiling):.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
