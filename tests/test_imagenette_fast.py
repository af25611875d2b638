"""The `imagenette-fast` recipe's parts beyond the paper: random-resized crops made per batch, a test crop larger than
the training crop (train at 112, test the whole 128 px photo), per-channel normalisation and a held-out tuning split."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resnets.analysis.depth import load_series
from resnets.data.paths import CACHE_ENV
from resnets.data.transforms import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, Normalize, RandomResizedCropFlip
from resnets.runs import RunDirectoryError
from resnets.train.recipes import apply_overrides, get_recipe

from .conftest import smooth_photos, write_synthetic_imagenette
from .test_train import run_cli

PLAIN = Normalize((0.0, 0.0, 0.0), None)


def test_random_resized_crops_read_the_box_torchvision_crops() -> None:
    photos = smooth_photos(16, size=128)
    augment = RandomResizedCropFlip((128, 128), (0.25, 1.0), crop_size=112, normalize=PLAIN)
    params = augment.draw(len(photos), torch.Generator().manual_seed(3))
    views = augment(photos.float() / 255, params)
    assert views.shape == (16, 3, 112, 112)
    assert params["flips"].any() and not params["flips"].all()
    for index, photo in enumerate(photos):
        x1, y1, x2, y2 = params["boxes"][index].tolist()
        top, left = round(y1), round(x1)
        expected = TF.resized_crop(photo, top, left, round(y2) - top, round(x2) - left, [112, 112], antialias=False)
        if params["flips"][index]:
            expected = expected.flip(-1)
        # a box misread (x for y, a flip missed, a pixel scale wrong) is off by far more than rounding the box
        assert (views[index] - expected.float() / 255).abs().mean() < 2.0 / 255, index


def test_random_resized_crops_keep_to_their_area_and_aspect_ranges() -> None:
    augment = RandomResizedCropFlip((128, 160), (0.25, 0.5), ratio=(3 / 4, 4 / 3), crop_size=112, normalize=PLAIN)
    boxes = augment.draw(4000, torch.Generator().manual_seed(0))["boxes"].double()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160 + 1e-3).all() and (boxes[:, 3] <= 128 + 1e-3).all()
    area = width * height / (128 * 160)
    unclipped = height < 128 - 1e-3  # a box taller than the photo is clipped to it, as the docstring says
    assert area.max() <= 0.5 + 1e-4 and area[unclipped].min() >= 0.25 - 1e-4
    assert 0.33 < area.mean() < 0.42  # uniform in [0.25, 0.5], less the few clipped
    aspect = (width / height)[unclipped]
    assert aspect.min() >= 0.75 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert abs(float(aspect.log().mean())) < 0.02  # log-uniform: as many wide boxes as tall ones
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert centres.min() < 60 and centres.max() > 100  # positions spread over the photo


def test_a_recipe_with_bad_crops_is_refused_in_one_line() -> None:
    recipe = get_recipe("imagenette-fast")
    with pytest.raises(ValueError, match=r"crop_area must be two fractions .*got \(0\.5, 1\.5\).*--set crop_area"):
        apply_overrides(recipe, {"crop_area": "0.5,1.5"}).validate()
    with pytest.raises(ValueError, match=r"eval_crop \(160\) must be at most eval_resize \(128\)"):
        apply_overrides(recipe, {"eval_crop": "160"}).validate()
    assert apply_overrides(recipe, {"crop_area": "0.08,1"}).validate().crop_area == (0.08, 1.0)
    # the scale augmentation's range is not read when random-resized crops replace it
    assert "scale_min" in recipe.unused_fields("imagenette") and "scale_min" not in get_recipe(
        "imagenette").unused_fields("imagenette")
    assert "crop_area" in recipe.record("imagenette") and "scale_max" not in recipe.record("imagenette")


def test_imagenette_fast_trains_at_112_tests_whole_photos_and_holds_out_a_tuning_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = write_synthetic_imagenette(tmp_path / "data")
    out = tmp_path / "run"
    run_cli("train", "--dataset", "imagenette", "--data", str(data), "--model", "resnet18", "--recipe",
            "imagenette-fast", "--iterations", "12", "--batch-size", "8", "--precision", "fp32", "--lr", "0.02",
            "--set", "val_split=6", "--set", "eval_every=12", "--no-progress", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["data"]["train_images"], summary["data"]["val_images"]) == (18, 6)  # 24 training photos
    evaluations = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_error" in r]
    assert evaluations and math.isfinite(evaluations[-1]["val_error"])  # chosen on the held-out photos, not test
    assert not any("test_error" in r for r in evaluations)
    # ... and so does the run's final number: the test (official validation) photos stay unseen by tuning runs
    assert summary["val_images"] == 6 and math.isfinite(summary["val_top1_error"]) and "test_top1_error" not in summary
    refused = run_cli("analyze", "ship", str(out), "--weights-dir", str(tmp_path / "shipped"), check=False)
    assert refused.returncode != 0 and "is a tuning run (6 training images held out" in refused.stderr
    refused = run_cli("report", str(out), "--out", str(tmp_path / "report.md"), check=False)
    assert refused.returncode != 0 and "is a tuning run (6 training images held out" in refused.stderr
    assert not (tmp_path / "report.md").exists()
    shutil.copytree(out, tmp_path / "series" / "resnet18-s0")  # a series folder (Table 2, Fig. 6) refuses it too
    with pytest.raises(RunDirectoryError, match=r"is a tuning run .* a series compares test errors"):
        load_series(tmp_path / "series")
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["crop_area"] == [0.25, 1.0] and "scale_min" not in config["recipe"]
    meta = torch.load(out / "model.pt", weights_only=True)["meta"]["preprocess"]
    # tested on the whole photo at 128 (not the 112 training crop), normalised per channel with torchvision's values
    assert (meta["resize"], meta["crop"], meta["train_crop"]) == (128, 128, 112) and "mean_image" not in meta
    assert meta["mean"] == pytest.approx(IMAGENET_RGB_MEAN) and meta["std"] == pytest.approx(IMAGENET_RGB_STD)


def test_imagenet_folders_refuse_random_resized_crops(tmp_path: Path) -> None:
    data = write_synthetic_imagenette(tmp_path / "data")
    result = run_cli("train", "--dataset", "imagenet", "--data", str(data), "--model", "resnet18", "--recipe",
                     "imagenette-fast", "--iterations", "2", "--no-progress", "--out", str(tmp_path / "run"),
                     check=False)
    assert result.returncode != 0 and "random-resized crops (crop_area)" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "model.pt").exists()


def test_the_imagenette_series_trains_with_the_fast_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`resnets experiment imagenette --recipe imagenette-fast`: every network on the fast recipe, and the `center`
    protocol sees what the training loop's evaluation saw (the whole photo at 128, not a 112 crop). `--shortcut B`
    trains Table 3's projection-shortcut row (tests/test_imagenette.py runs the default, option A)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = write_synthetic_imagenette(tmp_path / "data", train_per_class=40, val_per_class=3)  # one batch of 64
    run_cli("experiment", "imagenette", "--recipe", "imagenette-fast", "--models", "resnet18", "--data", str(data),
            "--epochs", "1", "--out", str(tmp_path / "runs"), "--records", str(tmp_path / "records"), "--no-progress",
            "--shortcut", "B")
    records = tmp_path / "records" / "resnet18-s0"
    config = json.loads((records / "config.json").read_text())
    assert config["recipe"]["name"] == "imagenette-fast" and config["model_config"]["shortcut"] == "B"
    protocols = json.loads((records / "protocols.json").read_text())["protocols"]
    summary = json.loads((records / "summary.json").read_text())
    assert protocols["center"]["top1_error"] == pytest.approx(summary["test_top1_error"])
    result = run_cli("experiment", "imagenette", "--recipe", "fast", "--out", str(tmp_path / "x"), check=False)
    assert result.returncode != 0 and "invalid choice: 'fast'" in result.stderr
    result = run_cli("experiment", "imagenette", "--models", "plain34", "--shortcut", "B", "--out", str(tmp_path / "x"),
                     check=False)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].endswith(
        "--shortcut B is for residual nets (Table 3); plain34 has no shortcut: train it in the option A series")
    assert not (tmp_path / "x").exists()
