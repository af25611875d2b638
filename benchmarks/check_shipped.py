"""Every shipped classifier on every test/validation image, through a loop that uses only `resnets.create_model` and
`resnets.preprocess` (issue #35: the shipped weights give the error in their metadata), recorded image by image.

The full pass (15 nets, 10,000 CIFAR-10 test images or 3,925 Imagenette validation photos each) took 773 s on 2
cores of an Intel Xeon @ 2.80GHz: a benchmark, not a test. Its record, results/shipped-check.json, holds per net the
weight file's SHA-256, the error and each image's predicted class (hex, one byte per image, in sorted path order).
tests/test_shipped_check.py holds the record to the files and labels (every shipped file is in it, by its SHA-256;
its error is the count of its predictions that miss the folder's label, and the metadata's within 0.1 points) and
runs a spread sixteenth of each net's images again, which must predict what the record says: a change to a weight
file, `create_model` or `preprocess` fails CI in a minute or two. Shipping new weights means running this again:

    RESNETS_DATASETS=../shared/datasets python benchmarks/check_shipped.py [MODEL.TAG ...] \
        --json results/shipped-check.json
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

import resnets
from resnets.data.folder import read_image
from resnets.data.paths import TEST_FOLDERS, datasets_root
from resnets.io import update_json
from resnets.runtime import cpu_model

BATCH = 250
FOLDERS = TEST_FOLDERS  # dataset -> the copy the metadata was measured on


def shipped_classifiers() -> list[str]:
    """MODEL.TAG of every shipped classifier whose test data lies under $RESNETS_DATASETS."""
    return sorted(name for name, meta in resnets.list_pretrained().items() if meta["dataset"] in FOLDERS)


def labelled_images(name: str) -> tuple[list[Path], list[int]]:
    """The test (CIFAR) or validation (Imagenette) images of `name`'s dataset in sorted path order, and the index of
    each one's class folder in the weights' own class list."""
    meta = resnets.list_pretrained()[name]
    paths = image_paths(datasets_root() / FOLDERS[meta["dataset"]])
    return list(paths), [meta["classes"].index(path.parent.name) for path in paths]


@functools.cache
def image_paths(folder: Path) -> tuple[Path, ...]:
    """Every image under `folder`, in sorted path order (listed once per folder: every net of a dataset reads it)."""
    paths = tuple(sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png")))
    if not paths:
        raise FileNotFoundError(f"no images under {folder}; set RESNETS_DATASETS to the folder that holds "
                                f"{folder.parent.name}/")
    return paths


def predict(name: str, paths: Sequence[Path], progress: bool = False) -> list[int]:
    """Top-1 class of each image: `create_model(name)`, `preprocess`, the model (fp32; channels_last only changes the
    memory layout, 1.35x on CPU)."""
    model = resnets.create_model(name).eval().to(memory_format=torch.channels_last)
    predicted: list[int] = []
    with torch.inference_mode(), tqdm(total=len(paths), desc=name, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), BATCH):
            images = [read_image(path) for path in paths[start:start + BATCH]]
            inputs = resnets.preprocess(model, images).contiguous(memory_format=torch.channels_last)
            predicted += model(inputs).argmax(1).tolist()
            bar.update(len(images))
    return predicted


def error_of(predicted: Sequence[int], labels: Sequence[int]) -> float:
    return 100 * sum(p != y for p, y in zip(predicted, labels, strict=True)) / len(labels)


def check(name: str) -> dict:
    """`name` on every image of its test set: the record's entry."""
    meta = resnets.list_pretrained()[name]
    paths, labels = labelled_images(name)
    started = time.perf_counter()
    predicted = predict(name, paths, progress=True)
    return {"sha256": meta["sha256"], "images": len(paths), "folder": FOLDERS[meta["dataset"]],
            "top1_error": error_of(predicted, labels), "stated_top1_error": meta["test_top1_error"],
            "predictions_hex": bytes(predicted).hex(), "seconds": round(time.perf_counter() - started, 1),
            "cpu": cpu_model(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="shipped MODEL.TAG (default: every shipped classifier)")
    parser.add_argument("--json", type=Path, default=None, help="add the entries to this record (others are kept)")
    args = parser.parse_args()
    known = shipped_classifiers()
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"not shipped classifiers: {', '.join(unknown)}; choose from {', '.join(known)}")
    print("| weights | images | top-1 error (%) | stated | difference |\n|---|---|---|---|---|")
    for name in args.names or known:
        try:
            entry = check(name)
        except FileNotFoundError as error:  # the test images are not where $RESNETS_DATASETS points
            parser.error(str(error))
        print(f"| {name} | {entry['images']:,} | {entry['top1_error']:.2f} | {entry['stated_top1_error']:.2f} | "
              f"{entry['top1_error'] - entry['stated_top1_error']:+.2f} |", flush=True)
        if args.json:  # written after each net: an interrupted pass keeps what it measured
            update_json(args.json, {name: entry})


if __name__ == "__main__":
    main()
