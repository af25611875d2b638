"""Why multi-scale testing loses on Imagenette: hold the content fixed and change only the input size.

The shipped Imagenette nets saw only 112x112 inputs in training. Each validation photo's centre view (what the
`center` protocol feeds) is fed again with a border of k pixels of the per-pixel mean (zero after normalisation)
on every side: the same photo content, a larger input. If the error rises with k, the nets depend on the input's
size and borders, and the fully convolutional multi-scale protocol (whole images at shorter sides 112-320) pays
for it before object scale or upsampling enter.

    RESNETS_DATASETS=../shared/datasets python benchmarks/input_size_probe.py --photos 400 --pads 0 8 40
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

import resnets
from resnets.data.folder import read_image
from resnets.data.paths import datasets_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["plain18", "resnet18", "resnet34"])
    parser.add_argument("--photos", type=int, default=400, help="validation photos, drawn with a fixed seed")
    parser.add_argument("--pads", type=int, nargs="+", default=[0, 8, 40], help="border widths in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = datasets_root() / "imagenette" / "val"
    photos = sorted(folder.rglob("*.JPEG"))
    if not photos:
        parser.error(f"no *.JPEG photos under {folder}; set RESNETS_DATASETS to the folder that holds imagenette/")
    random.Random(args.seed).shuffle(photos)
    photos = photos[:args.photos]
    images = [read_image(photo) for photo in photos]
    rows, side = [], None
    for name in args.models:
        started = time.perf_counter()
        try:
            model = resnets.create_model(name, pretrained="imagenette").eval()
        except ValueError as error:
            parser.error(str(error))
        labels = torch.tensor([model.meta["classes"].index(photo.parent.name) for photo in photos])
        batch = resnets.preprocess(model, images)
        side = batch.shape[-1]
        with torch.no_grad():
            errors = [100 * (model(F.pad(batch, (pad,) * 4)).argmax(1) != labels).float().mean().item()
                      for pad in args.pads]
        rows.append(f"| {name} | " + " | ".join(f"{error:.2f}" for error in errors)
                    + f" |  ({time.perf_counter() - started:.0f} s)")
    print(f"{len(photos)} Imagenette validation photos (seed {args.seed}); top-1 error (%) of the centre view with "
          f"a border of k mean pixels on every side")
    print("| net | " + " | ".join(f"k={pad} ({side + 2 * pad} px)" for pad in args.pads) + " |")
    print("|---|" + "---|" * len(args.pads))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
