"""Where in the net does the loss at a larger input live? The whole-photo error at one side with the BatchNorm
statistics re-estimated there in one stage only (the stem, layer1 ... layer4), the others as trained.

`benchmarks/whole_photo_sizes.py --recalibrate-bn N` shows that most of a net's loss at sides 160-192 is a BN
statistics mismatch (FixRes). This splits that mismatch by stage, so that "why is ResNet-34 more fragile than
ResNet-18" is answered by a measurement: the stage whose statistics alone recover most of the loss is where the
train/test mismatch is. Same public path as whole_photo_sizes.py (`create_model` + `preprocess` + the model), the same
seeded draw of N training photos resized whole to SxS; the validation photos are a spread of `--photos` (paired: every
row sees the same photos).

    RESNETS_DATASETS=../shared/datasets python benchmarks/batchnorm_by_stage.py resnet18.imagenette-fast \
        resnet34.imagenette-fast --side 192 --photos 1000 --recalibrate-bn 256 [--json FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torchvision.transforms.v2 import functional as TF

from resnets.data.decoded import spread_indices
from resnets.data.paths import datasets_root
from resnets.data.preprocess import preprocessing_of
from resnets.evaluate.recalibrate import BatchNormState, batchnorm_state, per_scale_batchnorm, training_photos
from resnets.io import update_json
from resnets.runtime import cpu_model

# a sibling script: run this one as python benchmarks/batchnorm_by_stage.py
from whole_photo_sizes import errors_by_side, load


def stage_of(buffer: str) -> str:
    """`bn1.running_mean` -> stem, `layer3.4.bn2.running_var` -> layer3 (torchvision's state_dict names)."""
    first = buffer.split(".", 1)[0]
    return first if first.startswith("layer") else "stem"


def stage_states(own: BatchNormState, recalibrated: BatchNormState) -> dict[str, BatchNormState]:
    """The trained statistics with one stage's replaced by the re-estimated ones, per stage; and "none", "all"."""
    stages = sorted({stage_of(name) for name in own}, key=lambda s: (s != "stem", s))
    states = {"none": own, **{stage: {name: recalibrated[name] if stage_of(name) == stage else value
                                      for name, value in own.items()} for stage in stages}}
    states["all"] = recalibrated
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="shipped MODEL.TAG names or run directories")
    parser.add_argument("--side", type=int, default=192)
    parser.add_argument("--photos", type=int, default=1000, help="validation photos, spread over the classes")
    parser.add_argument("--recalibrate-bn", type=int, default=256, metavar="N", help="training photos (seeded draw)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (merged with the file's)")
    args = parser.parse_args()
    folder = datasets_root() / "imagenette" / "val"
    photos = sorted(folder.rglob("*.JPEG"))
    if not photos:
        parser.error(f"no *.JPEG photos under {folder}; set RESNETS_DATASETS to the folder that holds imagenette/")
    photos = [photos[i] for i in spread_indices(len(photos), args.photos)]
    train = training_photos(folder.parent / "train", args.recalibrate_bn, seed=0)
    train = [TF.resize(photo, [224, 224], antialias=True) for photo in train]
    table = {}
    print(f"{len(photos)} validation photos, whole at {args.side}; BN statistics re-estimated on {len(train)} training "
          "photos in one stage at a time: top-1 error (%)")
    for name in args.weights:
        started = time.perf_counter()
        model = load(name)
        own = batchnorm_state(model)
        normalize = preprocessing_of(model).normalize_any_size
        recalibrated = per_scale_batchnorm(model, train, [args.side], normalize=normalize)[args.side]
        errors, center = {}, None
        for stage, state in stage_states(own, recalibrated).items():  # the centre view once, with the first row
            result = errors_by_side(model, photos, [args.side], {args.side: state}, center=center is None)
            errors[stage], center = result[str(args.side)], result.get("center", center)
            print(f"{name}: {stage:>6}: {errors[stage]:.2f}", flush=True)
        table[name] = {"side": args.side, "photos": len(photos), "training_photos": len(train), "center": center,
                       "stages": errors, "cpu": cpu_model()}
        print(f"{name}: center {center:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.json:
        update_json(args.json, table)


if __name__ == "__main__":
    main()
