"""Images/s of the Sec. 3.4 training pipeline against a classic torchvision pipeline with the same geometry.

Ours: the package decoder (Pillow, libjpeg-turbo) of the file bytes -> uint8 tensor -> shorter side random in
[256, 480] -> random 224 crop -> random flip -> float -> PCA lighting -> per-pixel mean image subtraction.
torchvision: ImageFolder's Pillow loader -> transforms.v2 RandomShortestSize([256..480]) -> RandomCrop(224)
-> RandomHorizontalFlip -> ToImage + ToDtype(float, scale) (ToTensor) -> Normalize. No lighting there, so
it does slightly less work. Both read imagenet-sample's 200 full-size photos through a DataLoader
(batch 32, shuffled) with the same number of workers; each repeat is one pass, the pipelines alternate
within a repeat so machine noise hits them alike, and medians (min-max, ratio to torchvision) are reported.
"ours_uint8" is the same augmentation with `uint8_output=True`: workers return uint8 crops and the lighting
and mean subtraction run per batch in the main process (on the GPU in training).

    .venv/bin/python benchmarks/imagenet_pipeline.py --workers 0 2 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import pil_loader
from torchvision.transforms import v2

from resnets.data.folder import wnid_of, wnid_prefixed_dataset
from resnets.data.paths import DATASETS_ENV, datasets_root
from resnets.data.transforms import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    Normalize,
    PaperTrainTransform,
    compute_mean_image,
)


class PillowFolder(Dataset):
    """torchvision.datasets.ImageFolder's loading path (Pillow, convert to RGB) over a flat list of files."""

    def __init__(self, paths: list[Path], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform
        classes = sorted({wnid_of(p.name) for p in paths})
        self.labels = [classes.index(wnid_of(p.name)) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(pil_loader(str(self.paths[index]))), self.labels[index]


def torchvision_transform() -> v2.Compose:
    return v2.Compose([
        v2.RandomShortestSize(min_size=list(range(256, 481))),  # shorter side uniform in [256, 480]
        v2.RandomCrop(224),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_RGB_MEAN, IMAGENET_RGB_STD),
    ])


def one_pass(loader: DataLoader, finish: Callable[[torch.Tensor], torch.Tensor] | None) -> float:
    """Images/s of one pass over the loader, including `finish` on each batch in this process."""
    start = time.perf_counter()
    images = 0
    for batch, _ in loader:
        if finish is not None:
            batch = finish(batch)
        assert batch.shape[1:] == (3, 224, 224) and batch.dtype == torch.float32
        images += batch.shape[0]
    return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=f"imagenet-sample folder (default: ${DATASETS_ENV}/imagenet-sample)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per pipeline and worker count")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the main process (workers always use 1); 1 = per-core comparison")
    args = parser.parse_args(argv)

    folder = args.data or datasets_root() / "imagenet-sample"
    if not folder.is_dir():
        print(f"error: {folder} does not exist; set {DATASETS_ENV} or pass --data", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    paths = sorted(folder.glob("*.JPEG"))
    mean_image = compute_mean_image(paths, max_images=50)  # the paper's per-pixel mean, not timed
    normalize = Normalize(mean_image, std=None)
    ours = wnid_prefixed_dataset(folder, transform=PaperTrainTransform(normalize=normalize))
    split = PaperTrainTransform(normalize=normalize, uint8_output=True)
    # name -> (dataset, per-batch step run in the main process: where a training loop would run it on the GPU)
    pipelines: dict[str, tuple[Dataset, Callable[[torch.Tensor], torch.Tensor] | None]] = {
        "ours": (ours, None),
        "ours_uint8": (ours.with_transform(split), split.finish_batch),
        "torchvision": (PillowFolder(paths, torchvision_transform()), None),
    }
    print(f"{len(paths)} photos from {folder}; batch {args.batch_size}; {args.repeats} repeats; "
          f"main-process torch threads {torch.get_num_threads()}; torch {torch.__version__}")

    results: dict[str, dict[str, float]] = {}
    for workers in args.workers:
        loaders = {name: DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                    persistent_workers=workers > 0)
                   for name, (dataset, _) in pipelines.items()}
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for name, loader in loaders.items():
            one_pass(loader, pipelines[name][1])  # warm-up: worker start-up, page cache, allocator
        for _ in range(args.repeats):
            for name, loader in loaders.items():
                rates[name].append(one_pass(loader, pipelines[name][1]))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        baseline = medians["torchvision"]
        results[f"workers={workers}"] = {name: round(m, 1) for name, m in medians.items()}
        line = ", ".join(f"{name} {m:.0f} img/s ({min(rates[name]):.0f}-{max(rates[name]):.0f}, "
                         f"{m / baseline:.2f}x)" for name, m in medians.items())
        print(f"workers={workers}: {line}")
        del loaders
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
