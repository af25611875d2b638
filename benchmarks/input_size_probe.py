"""Why multi-scale testing loses on Imagenette: hold the content fixed and change only the input size.

The shipped Imagenette nets saw only 112x112 inputs in training. Each validation photo's centre view (what the
`center` protocol feeds) is fed again grown by k pixels on every side: by default a reflected border (the view's
own content mirrored at its edges, `torch.nn.functional.pad(mode="reflect")`, which looks like photo content), or
with `--border mean` a flat border of the per-pixel mean (zero after normalisation), which no photo has and which
overstates the effect. The centre 112x112 pixels are the `center` protocol's input unchanged. If the error rises
with k, the nets depend on the input's size and borders, and the fully convolutional multi-scale protocol (whole
images at shorter sides 112-320) pays for it before object scale or upsampling enter.

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

BORDERS = {"reflect": "a reflected border", "mean": "a border of mean pixels"}


def bordered(batch: torch.Tensor, pad: int, border: str = "reflect") -> torch.Tensor:
    """Normalised views (N, 3, h, w) grown by `pad` pixels on every side: mirrored content (reflect, which needs
    pad < h and w) or zeros, the mean pixel after normalisation (mean)."""
    if border not in BORDERS:
        raise ValueError(f"--border must be one of {', '.join(BORDERS)}, got {border!r}")
    if pad == 0:
        return batch
    if border == "reflect":
        if pad >= min(batch.shape[-2:]):
            raise ValueError(f"a reflected border of {pad} px needs views larger than {pad} px, got "
                             f"{tuple(batch.shape[-2:])}; use --pads below the view size")
        return F.pad(batch, (pad,) * 4, mode="reflect")
    return F.pad(batch, (pad,) * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["plain18", "resnet18", "resnet34"])
    parser.add_argument("--photos", type=int, default=400, help="validation photos, drawn with a fixed seed")
    parser.add_argument("--pads", type=int, nargs="+", default=[0, 8, 40], help="border widths in pixels")
    parser.add_argument("--border", choices=list(BORDERS), default="reflect",
                        help="reflect: the view's content mirrored (default); mean: flat mean pixels (the old probe)")
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
        try:
            with torch.no_grad():
                errors = [100 * (model(bordered(batch, pad, args.border)).argmax(1) != labels).float().mean().item()
                          for pad in args.pads]
        except ValueError as error:
            parser.error(str(error))
        rows.append(f"| {name} | " + " | ".join(f"{error:.2f}" for error in errors)
                    + f" |  ({time.perf_counter() - started:.0f} s)")
    print(f"{len(photos)} Imagenette validation photos (seed {args.seed}); top-1 error (%) of the centre view with "
          f"{BORDERS[args.border]} k pixels wide on every side")
    print("| net | " + " | ".join(f"k={pad} ({side + 2 * pad} px)" for pad in args.pads) + " |")
    print("|---|" + "---|" * len(args.pads))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
