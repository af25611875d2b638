"""Does a net survive a change of input size? Its error on the whole validation photo resized to several sides, beside
its `center` protocol error, on every Imagenette validation photo.

Only the public path a user has: `resnets.create_model(name, pretrained=...)`, `resnets.preprocess` (the weights' own
record: resize, centre crop, mean) and the model, no BatchNorm recalibration. For side S the photo (224x224) is
resized whole to SxS (antialiased), then normalised as the record says (a per-pixel mean image falls back to its
per-channel average at any other size, as `Normalize` does). Issue #36 asks for a whole-photo error at sides 128-192
no more than 2 points above the centre error.

`--recalibrate-bn N` measures, beside it, how much of a net's loss at each side is a BatchNorm statistics mismatch
(as in FixRes): the same photos with the BN statistics re-estimated at that side on N training photos (a seeded draw
from imagenette/train, each resized whole to SxS; weights untouched; `resnets eval --recalibrate-bn` does the same
per multi-scale scale). The `center` column is never recalibrated.

    RESNETS_DATASETS=../shared/datasets python benchmarks/whole_photo_sizes.py resnet18.imagenette-fast runs/r34 \
        --sides 128 160 192 [--photos N] [--recalibrate-bn N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

import resnets
from resnets.data.decoded import spread_indices
from resnets.data.folder import read_image
from resnets.data.paths import datasets_root
from resnets.data.preprocess import preprocessing_of
from resnets.evaluate.recalibrate import (
    BatchNormState,
    batchnorm_state,
    load_batchnorm_state,
    per_scale_batchnorm,
    training_photos,
)
from resnets.io import update_json

BATCH = 100


def load(name: str) -> torch.nn.Module:
    """A shipped MODEL.TAG, or a run directory (its model named in its summary.json)."""
    run = Path(name)
    if run.is_dir():
        return resnets.create_model(json.loads((run / "summary.json").read_text())["model"], pretrained=run).eval()
    return resnets.create_model(name, pretrained=True).eval()


def errors_by_side(model: torch.nn.Module, photos: list[Path], sides: list[int],
                   batchnorm: dict[int, BatchNormState] | None = None, center: bool = True) -> dict[str, float]:
    """Top-1 error (%) of the `center` protocol (the weights' own preprocessing; left out when not `center`) and of
    the whole photo at each side, run with `batchnorm[side]`'s BN statistics when given (the model's own for `center`,
    and restored after)."""
    own = batchnorm_state(model)
    classes = model.meta["classes"]
    labels = torch.tensor([classes.index(photo.parent.name) for photo in photos])
    normalize = preprocessing_of(model).normalize_any_size
    wrong = dict.fromkeys(["center"] * center + [str(side) for side in sides], 0)
    with torch.inference_mode():
        for start in range(0, len(photos), BATCH):
            images = [read_image(photo) for photo in photos[start:start + BATCH]]
            truth = labels[start:start + BATCH]
            if center:
                load_batchnorm_state(model, own)
                wrong["center"] += int((model(resnets.preprocess(model, images)).argmax(1) != truth).sum())
            for side in sides:
                if batchnorm is not None:
                    load_batchnorm_state(model, batchnorm[side])
                whole = torch.stack([TF.resize(image, [side, side], antialias=True) for image in images])
                inputs = normalize(whole.float().div_(255))
                wrong[str(side)] += int((model(inputs).argmax(1) != truth).sum())
    load_batchnorm_state(model, own)
    return {key: 100 * count / len(photos) for key, count in wrong.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="shipped MODEL.TAG names, run directories or weight files")
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 160, 192])
    parser.add_argument("--photos", type=int, default=None, help="the first N validation photos (default: all)")
    parser.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                        help="also measure each side with BN statistics re-estimated there on N training photos")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the table as JSON here (added to the file's rows for other weights)")
    args = parser.parse_args()
    folder = datasets_root() / "imagenette" / "val"
    photos = sorted(folder.rglob("*.JPEG"))
    if not photos:
        parser.error(f"no *.JPEG photos under {folder}; set RESNETS_DATASETS to the folder that holds imagenette/")
    if args.photos:  # spread over the classes (the folders are sorted by class)
        photos = [photos[i] for i in spread_indices(len(photos), args.photos)]
    table = {}
    print(f"{len(photos)} Imagenette validation photos; top-1 error (%): centre protocol, then the whole photo at "
          "each side (no BN recalibration)")
    print("| weights | center | " + " | ".join(f"whole {side}" for side in args.sides) + " | worst - center |")
    print("|---|---|" + "---|" * len(args.sides) + "---|")
    for name in args.weights:
        started = time.perf_counter()
        try:
            model = load(name)
        except (ValueError, FileNotFoundError, KeyError) as error:
            parser.error(str(error))
        result = errors_by_side(model, photos, args.sides)
        gap = max(result[str(side)] for side in args.sides) - result["center"]
        run = Path(name).is_dir()
        if run:  # a run: named by its folder, with what it trained on from, or how from scratch (the report says so)
            name = f"{model.spec.name} run {Path(name).name}"
        table[name] = {**result, "worst_minus_center": gap, "photos": len(photos),
                       **({"provenance": {key: model.meta[key] for key in ("started_from", "recipe")}}
                          if "started_from" in model.meta else
                          {"trained": {"model": model.spec.name, "recipe": model.meta["recipe"]["name"],
                                       "shortcut": model.spec.shortcut}} if run else {})}
        print(f"| {name} | {result['center']:.2f} | " + " | ".join(f"{result[str(s)]:.2f}" for s in args.sides)
              + f" | {gap:+.2f} |  ({time.perf_counter() - started:.0f} s)", flush=True)
        if args.recalibrate_bn:
            train = training_photos(folder.parent / "train", args.recalibrate_bn, seed=0)
            states = per_scale_batchnorm(model, [TF.resize(photo, [224, 224], antialias=True) for photo in train],
                                         args.sides, normalize=preprocessing_of(model).normalize_any_size)
            again = errors_by_side(model, photos, args.sides, states)
            gap = max(again[str(side)] for side in args.sides) - again["center"]
            table[name]["recalibrated"] = {**{str(s): again[str(s)] for s in args.sides}, "worst_minus_center": gap,
                                           "training_photos": len(train)}
            print(f"| {name}, BN at each side ({len(train)} photos) | {again['center']:.2f} | "
                  + " | ".join(f"{again[str(s)]:.2f}" for s in args.sides) + f" | {gap:+.2f} |", flush=True)
    if args.json:  # weights measured before keep their rows; a weights measured again is replaced
        update_json(args.json, table)


if __name__ == "__main__":
    main()
