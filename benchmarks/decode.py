"""Which library decodes images: Pillow (our `decode_image_bytes`) against torchvision.io, which 0.29 deprecates.

Speed: the encoded bytes of each sample are read into memory first, then every decoder turns them into a uint8
RGB (3, H, W) tensor, one thread, in interleaved rounds (each round times every decoder on every set, in a rotating
order); reported: the median over rounds of the microseconds per image, and the median per-round ratio against
torchvision.io. Sets: CIFAR-10 test JPEGs (32 px), Imagenette validation photos (224 px), imagenet-sample
(full-size photos, ~500x375). simplejpeg and torchcodec are timed too when they are importable (not dependencies).

Pixels (--compare): our decoder against torchvision.io on every CIFAR-10 test JPEG, N Imagenette photos and the
imagenet-sample photos: how many images differ, by how much, and how many carry an EXIF orientation other than 1
(those we turn upright, torchvision did not).

    OMP_NUM_THREADS=1 RESNETS_DATASETS=../shared/datasets python benchmarks/decode.py --rounds 5 --compare
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnets.data.folder import decode_image_bytes
from resnets.data.paths import datasets_root

Decoder = Callable[[bytes], torch.Tensor]


def torchvision_decode(data: bytes) -> torch.Tensor:
    """What `decode_image_bytes` was up to torchvision 0.29: torchvision.io on the bytes, RGB, 16-bit scaled to 8."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return image if image.dtype == torch.uint8 else TF.to_dtype(image, torch.uint8, scale=True)


def pillow_bare(data: bytes) -> torch.Tensor:
    """Pillow with nothing of ours (no EXIF, no mode handling): what our decoder's extra steps cost."""
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy())


def optional_decoders() -> dict[str, Decoder]:
    found: dict[str, Decoder] = {}
    try:
        import simplejpeg

        def simplejpeg_decode(data: bytes) -> torch.Tensor:
            return torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB").transpose(2, 0, 1).copy())

        found[f"simplejpeg {simplejpeg.__version__}"] = simplejpeg_decode
    except ImportError:
        pass
    try:
        import torchcodec
        from torchcodec.decoders import decode_image as codec_decode

        def torchcodec_decode(data: bytes) -> torch.Tensor:
            return codec_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")

        found[f"torchcodec {torchcodec.__version__.split('+')[0]}"] = torchcodec_decode
    except ImportError:
        pass
    return found


def sample_files(root: Path, pattern: str, count: int | None, seed: int) -> list[Path]:
    files = sorted(root.rglob(pattern))
    if not files:
        raise SystemExit(f"no {pattern} files under {root}; set RESNETS_DATASETS to the folder that holds it")
    random.Random(seed).shuffle(files)
    return files if count is None else files[:count]


def time_decoder(decoder: Decoder, blobs: list[bytes]) -> float:
    start = time.perf_counter()
    for data in blobs:
        decoder(data)
    return (time.perf_counter() - start) / len(blobs) * 1e6


def speed(sets: dict[str, list[bytes]], decoders: dict[str, Decoder], rounds: int) -> None:
    times = {(s, d): [] for s in sets for d in decoders}
    names = list(decoders)
    for name in names:  # warm-up: first calls load libraries
        for blobs in sets.values():
            time_decoder(decoders[name], blobs[:5])
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for set_name, blobs in sets.items():
            for name in order:
                times[set_name, name].append(time_decoder(decoders[name], blobs))
    reference = names[0]
    print(f"\nmicroseconds per image, median of {rounds} interleaved rounds (ratio: per-round median vs {reference})")
    print(f"| decoder | {' | '.join(f'{s} ({len(b)} files)' for s, b in sets.items())} |")
    print("|---|" + "---|" * len(sets))
    for name in names:
        cells = []
        for set_name in sets:
            ratios = [r / t for r, t in zip(times[set_name, reference], times[set_name, name], strict=True)]
            cells.append(f"{statistics.median(times[set_name, name]):.1f} us ({statistics.median(ratios):.2f}x)")
        print(f"| {name} | {' | '.join(cells)} |")


def exif_orientation(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(image.getexif().get(0x0112, 1))


def compare(sets: dict[str, list[bytes]]) -> None:
    print("\npixels: decode_image_bytes (Pillow) against torchvision.io")
    print("| set | files | identical | differing | largest difference | EXIF orientation != 1 |")
    print("|---|---|---|---|---|---|")
    for set_name, blobs in sets.items():
        differing, largest, rotated = 0, 0, 0
        for data in blobs:
            ours, theirs = decode_image_bytes(data), torchvision_decode(data)
            rotated += exif_orientation(data) != 1
            if ours.shape != theirs.shape or not torch.equal(ours, theirs):
                differing += 1
                if ours.shape == theirs.shape:
                    largest = max(largest, int((ours.int() - theirs.int()).abs().max()))
                else:
                    largest = -1
        largest_text = "shape" if largest < 0 else str(largest)
        print(f"| {set_name} | {len(blobs)} | {len(blobs) - differing} | {differing} | {largest_text} | {rotated} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cifar", type=int, default=2000, help="CIFAR-10 test JPEGs timed (32 px)")
    parser.add_argument("--imagenette", type=int, default=300, help="Imagenette validation photos timed (224 px)")
    parser.add_argument("--full", type=int, default=200, help="imagenet-sample photos timed (full size)")
    parser.add_argument("--compare", action="store_true", help="also compare pixels with torchvision.io")
    parser.add_argument("--compare-imagenette", type=int, default=500, help="Imagenette photos compared")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = datasets_root()
    files = {"CIFAR-10 32 px": sample_files(root / "cifar10-jpeg" / "test", "*.jpg", None, args.seed),
             "Imagenette 224 px": sample_files(root / "imagenette" / "val", "*.JPEG", None, args.seed),
             "imagenet-sample full size": sample_files(root / "imagenet-sample", "*.JPEG", None, args.seed)}
    counts = dict(zip(files, (args.cifar, args.imagenette, args.full), strict=True))
    sets = {name: [path.read_bytes() for path in paths[:counts[name]]] for name, paths in files.items()}
    decoders: dict[str, Decoder] = {"torchvision.io 0.29": torchvision_decode,
                                    "resnets decode_image_bytes (Pillow)": decode_image_bytes,
                                    "Pillow open+convert, bare": pillow_bare, **optional_decoders()}
    import PIL
    import torchvision
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}, "
          f"threads {torch.get_num_threads()}")
    speed(sets, decoders, args.rounds)
    if args.compare:
        compare({"CIFAR-10 test": [p.read_bytes() for p in files["CIFAR-10 32 px"]],
                 "Imagenette val": [p.read_bytes() for p in files["Imagenette 224 px"][:args.compare_imagenette]],
                 "imagenet-sample": [p.read_bytes() for p in files["imagenet-sample full size"]]})


if __name__ == "__main__":
    main()
