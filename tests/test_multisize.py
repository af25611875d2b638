"""Multi-size training (`crop_sizes`, beyond the paper): each batch of random-resized crops at one side drawn from a
list, the same on every DDP rank at a step, cut from the photo at the largest side."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch

from resnets.data.loader import TensorBatchLoader
from resnets.data.transforms import Normalize, RandomResizedCropFlip
from resnets.runtime import Runtime
from resnets.train.data import build_data
from resnets.train.recipes import RunOptions, apply_overrides, get_recipe

from .conftest import smooth_photos, write_synthetic_imagenette

PLAIN = Normalize((0.0, 0.0, 0.0), None)


def test_every_global_batch_takes_one_side_from_the_list_on_every_rank() -> None:
    augment = RandomResizedCropFlip((128, 128), sizes=(96, 112, 128), batch_size=8, normalize=PLAIN)
    sides = augment.draw(8 * 300, torch.Generator().manual_seed(0))["side"]
    per_batch = sides.view(300, 8)
    assert (per_batch == per_batch[:, :1]).all()  # one side per batch of 8 consecutive places
    counts = Counter(per_batch[:, 0].tolist())
    assert set(counts) == {96, 112, 128} and min(counts.values()) > 70  # uniform: about 100 each
    # two ranks take places r, r + 2, ... and batches of 4: batch k of each rank lies inside global batch k
    for rank in range(2):
        assert torch.equal(sides[rank::2].view(300, 4)[:, 0], per_batch[:, 0])


def test_a_batch_is_cut_at_its_side_from_the_same_boxes() -> None:
    photos = smooth_photos(8, size=128).float() / 255
    augment = RandomResizedCropFlip((128, 128), sizes=(64, 144), batch_size=8, normalize=PLAIN)
    params = augment.draw(8 * 20, torch.Generator().manual_seed(1))
    seen = set()
    for batch in range(20):
        window = {name: value[batch * 8:(batch + 1) * 8] for name, value in params.items()}
        side = int(window["side"][0])
        views = augment(photos, window)
        assert views.shape == (8, 3, side, side)
        fixed = RandomResizedCropFlip((128, 128), crop_size=side, normalize=PLAIN)  # the one-size crop of each box
        assert torch.equal(views, fixed(photos, {k: v for k, v in window.items() if k != "side"}))
        seen.add(side)
    assert seen == {64, 144}


def test_the_side_stays_on_the_host_where_the_rest_goes_to_the_batch_device() -> None:
    """`int(side)` per batch must not wait for the device (a sync per step on CUDA): the loader keeps a
    BatchAugment's `host_params` on the CPU. The meta device stands in for a GPU here."""
    augment = RandomResizedCropFlip((32, 32), sizes=(16, 24), batch_size=4, normalize=PLAIN)
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device="meta")
    loader = TensorBatchLoader(images, torch.zeros(8, dtype=torch.long, device="meta"), 4, augment=augment)
    params = loader.plan(0).params
    assert params["side"].device.type == "cpu"
    assert {value.device.type for name, value in params.items() if name != "side"} == {"meta"}


def test_crop_sizes_are_whole_sides_and_need_random_resized_crops() -> None:
    recipe = apply_overrides(get_recipe("imagenette-fast"), {"crop_sizes": "112,144, 176"}).validate()
    assert recipe.crop_sizes == (112, 144, 176) and all(isinstance(side, int) for side in recipe.crop_sizes)
    assert recipe.record("imagenette")["crop_sizes"] == [112, 144, 176]
    with pytest.raises(ValueError, match=r"crop_sizes .* need crop_area; fix --set crop_sizes="):
        apply_overrides(get_recipe("imagenette"), {"crop_sizes": "112,144"}).validate()
    with pytest.raises(ValueError, match=r"crop_sizes \(sides from 8 to 1024 px, got \[112, 4\]\)"):
        apply_overrides(get_recipe("imagenette-fast"), {"crop_sizes": "112,4"}).validate()
    with pytest.raises(ValueError, match=r"'crop_sizes' takes comma-separated numbers, got '112,big'"):
        apply_overrides(get_recipe("imagenette-fast"), {"crop_sizes": "112,big"})


def test_imagenette_batches_come_at_every_listed_side_cut_from_the_largest(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_imagenette(tmp_path / "imagenette", train_per_class=32)
    options = RunOptions(dataset="imagenette", data=str(root), seed=1, channels_last=False)
    recipe = dataclasses.replace(get_recipe("imagenette-fast"), batch_size=4, crop_sizes=(96, 160))
    data = build_data(options, recipe, Runtime(torch.device("cpu")))
    loader = data.train
    assert isinstance(loader, TensorBatchLoader)
    # 160 is larger than the 128 px photo the test sees: the crops are cut from the photo held at 160
    assert loader.images.shape[-2:] == (160, 160)
    sides = Counter(inputs.shape[-1] for epoch in range(3) for inputs, _ in _epoch(loader, epoch))
    assert set(sides) == {96, 160}
    assert data.preprocess.crop == 128  # the test still sees the whole photo at 128
    plain = build_data(options, dataclasses.replace(recipe, crop_sizes=()), Runtime(torch.device("cpu")))
    assert plain.train.images.shape[-2:] == (128, 128)
    assert {inputs.shape[-1] for inputs, _ in plain.train} == {112}


def _epoch(loader: TensorBatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)
