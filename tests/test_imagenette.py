"""Imagenette-style training (photos decoded once, Sec. 3.4's augmentation per batch) and its evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import resnets
from resnets.analysis.ship import ship_weights
from resnets.data.classes import class_names
from resnets.data.folder import read_image
from resnets.data.loader import TensorBatchLoader
from resnets.data.paths import CACHE_ENV
from resnets.data.transforms import Normalize, PaperTrainTransform, ScaleCropFlip, TrainViewParams
from resnets.models import weights as weights_module

from .conftest import smooth_photos, write_synthetic_imagenette
from .test_train import run_cli

PLAIN = Normalize((0.0, 0.0, 0.0), None)


def test_batched_scale_crop_flip_reads_the_region_the_per_image_transform_reads() -> None:
    photos = smooth_photos(16)
    batched = ScaleCropFlip((224, 224), (128, 240), 112, lighting_std=0, normalize=PLAIN)
    params = batched.draw(len(photos), torch.Generator().manual_seed(1))
    assert params["flips"].any() and not params["flips"].all()
    assert int(params["shorter"].min()) >= 128 and int(params["shorter"].max()) <= 240
    views = batched(photos.float() / 255, params)
    assert views.shape == (16, 3, 112, 112)
    per_image = PaperTrainTransform((128, 240), 112, lighting_std=0)
    for index, photo in enumerate(photos):
        view = TrainViewParams(int(params["shorter"][index]), int(params["top"][index]), int(params["left"][index]),
                               bool(params["flips"][index]), (0.0, 0.0, 0.0))
        expected = per_image.geometry(photo, view).float() / 255
        assert (views[index] - expected).abs().mean() < 1.5 / 255, index  # a box off by a pixel or two fails


def test_lighting_and_mean_are_applied_per_image() -> None:
    photos = smooth_photos(4)
    mean = torch.full((3, 112, 112), 0.25)
    batched = ScaleCropFlip((224, 224), (128, 240), 112, lighting_std=0.1, normalize=Normalize(mean, None))
    params = batched.draw(4, torch.Generator().manual_seed(2))
    lit = batched(photos.float() / 255, params)
    unlit = ScaleCropFlip((224, 224), (128, 240), 112, lighting_std=0, normalize=PLAIN)(photos.float() / 255, params)
    shift = batched.lighting.rgb_shift(params["alpha"])  # one RGB vector per image, added to every pixel
    torch.testing.assert_close(lit, unlit + shift[:, :, None, None] - 0.25, atol=1e-5, rtol=0)


def test_loader_with_batched_scale_augmentation_resumes_bit_identically() -> None:
    photos = smooth_photos(40)
    augment = ScaleCropFlip((224, 224), (128, 240), 112, normalize=PLAIN)

    def loader() -> TensorBatchLoader:
        return TensorBatchLoader(photos, torch.arange(40), batch_size=8, shuffle=True, augment=augment,
                                 drop_last=True, seed=5)

    first = loader()
    first.set_epoch(3)
    batches = list(first)
    resumed = loader()
    resumed.load_state_dict({"epoch": 3, "position": 2})
    rest = list(resumed)
    assert len(batches) == 5 and len(rest) == 3
    for (ours, labels), (theirs, their_labels) in zip(rest, batches[2:], strict=True):
        assert torch.equal(ours, theirs) and torch.equal(labels, their_labels)
    assert batches[0][0].shape == (8, 3, 112, 112)


def test_imagenette_recipe_learns_from_batched_augmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = write_synthetic_imagenette(tmp_path / "data")
    out = tmp_path / "run"
    run_cli("train", "--dataset", "imagenette", "--data", str(data), "--model", "resnet18", "--shortcut", "A",
            "--recipe", "imagenette", "--iterations", "24", "--batch-size", "8", "--precision", "fp32",
            "--lr", "0.01",  # the recipe's 0.05 is for batch 128: at batch 8 its loss spikes throw BN's running
            # statistics about, so training error reached 0 while one thread's eval-mode test error stayed at 50%
            "--set", "eval_every=24", "--log-every", "4", "--no-progress", "--out", str(out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_error"] >= 25 and records[-1]["train_error"] <= 25, records  # two colour casts
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] == 8 and summary["test_top1_error"] <= 25
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["crop_size"] == 112 and config["recipe"]["scale_min"] == 128


def test_imagenette_experiment_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`resnets experiment imagenette` trains, tests with the three protocols and copies the records; `resnets
    report --imagenette` makes Tables 2 and 3 and Fig. 4 from the records alone; a second call only re-reads."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = write_synthetic_imagenette(tmp_path / "data", train_per_class=64, val_per_class=3)
    command = ["experiment", "imagenette", "--models", "plain18", "resnet18", "--data", str(data), "--epochs", "2",
               "--out", str(tmp_path / "runs"), "--records", str(tmp_path / "records"), "--no-progress"]
    first = run_cli(*command)
    assert "resnet18-s0 10crop: top-1" in first.stdout
    assert "multi-scale testing is better than 10-crop: " in first.stdout
    again = run_cli(*command).stdout  # complete and tested: neither trained nor tested again
    assert "resnet18-s0: complete" in again and "10crop: top-1" not in again
    records = tmp_path / "records" / "resnet18-s0"
    protocols = json.loads((records / "protocols.json").read_text())
    assert {name: result["views_per_image"] for name, result in protocols["protocols"].items()} == {
        "center": 1, "10crop": 10, "multiscale": 10}
    assert json.loads((records / "config.json").read_text())["options"]["shortcut"] == "A"  # Table 2: option A
    # the training loop's evaluation sees exactly the `center` protocol's view of every validation photo
    summary = json.loads((records / "summary.json").read_text())
    assert protocols["protocols"]["center"]["top1_error"] == pytest.approx(summary["test_top1_error"])
    report = tmp_path / "REPRODUCTION.md"
    run_cli("report", "--imagenette", str(tmp_path / "records"), "--out", str(report))
    text = report.read_text()
    assert "## ImageNet in miniature" in text and "| ResNet-18 |" in text and "| plain-18 |" in text
    assert f"{protocols['protocols']['10crop']['top1_error']:.2f}" in text
    assert "10-crop testing is better than a single centre crop: " in text
    per_scale = protocols["protocols"]["multiscale"]["per_scale_top1_error"]
    assert protocols["protocols"]["multiscale"]["fcn_reduction"] == "mean_then_softmax"  # the record names it
    assert list(per_scale) == ["112", "128", "192", "240", "320"]
    assert "each scale alone" in text and f"{per_scale['320']:.2f}" in text
    assert (tmp_path / "figures" / "imagenette-fig4.png").is_file()
    shipped_weights_agree_with_a_create_model_and_preprocess_loop(tmp_path, data, monkeypatch)
    (records / "protocols.json").unlink()
    refused = run_cli("report", "--imagenette", str(tmp_path / "records"), "--out", str(report), check=False)
    assert refused.returncode != 0 and "protocols.json" in refused.stderr


def shipped_weights_agree_with_a_create_model_and_preprocess_loop(tmp_path: Path, data: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ship the trained ResNet-18 as pretrained="imagenette" (into a scratch weights folder), then evaluate it with
    nothing but create_model and preprocess: the error in its metadata comes back."""
    folder = tmp_path / "weights"
    path = ship_weights(tmp_path / "runs" / "resnet18-s0", weights_dir=folder, data=data, device="cpu")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.name == "resnet18-imagenette.pt" and meta["check_subset"]["images"] == 6
    assert torch.load(path, weights_only=True)["model"]["conv1.weight"].dtype == torch.float16  # half the bytes
    run = tmp_path / "runs" / "resnet18-s0"
    rates = sorted(r["images_per_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if r.get("images_per_s"))
    middle = len(rates) // 2  # the median logged rate, and the run's wall time in minutes, travel with the weights
    assert meta["images_per_s"] == pytest.approx(rates[middle] if len(rates) % 2 else sum(rates[middle - 1:middle + 1])
                                                 / 2, abs=0.05)
    assert meta["train_minutes"] == pytest.approx(json.loads((run / "summary.json").read_text())["wall_seconds"] / 60,
                                                  abs=0.05)
    monkeypatch.setattr(weights_module, "pretrained_dir", lambda: folder)
    model = resnets.create_model("resnet18", pretrained="imagenette").eval()
    assert (model.spec.shortcut, model.spec.num_classes) == ("A", 2)  # the shipped architecture, not the default
    assert class_names(model.meta, model.spec) == ["tench", "English springer"]  # what `predict` prints
    photos = sorted((data / "val").rglob("*.JPEG"))
    with torch.no_grad():
        scores = model(resnets.preprocess(model, [read_image(photo) for photo in photos]))
    labels = torch.tensor([meta["classes"].index(photo.parent.name) for photo in photos])
    error = 100 * (scores.argmax(1) != labels).float().mean().item()
    assert error == pytest.approx(meta["check_subset"]["top1_error"], abs=1e-6)
    assert error == pytest.approx(meta["test_top1_error"], abs=1e-6)


def test_table2_verdicts_compare_equal_depths_and_read_the_curves() -> None:
    """Residual vs plain at each depth on 10-crop top-1 (Table 2's column), and how often the deeper net's training
    curve lies above the shallower one's; hand-made records, expected lines written out by hand."""
    from types import SimpleNamespace

    from resnets.analysis.imagenette import curve_comparisons, same_depth_verdicts

    def train_row(model: str, label: str, depth: int, residual: bool, train: float) -> dict:
        return {"model": model, "label": label, "depth": depth, "residual": residual, "final_train_error": train}

    train_rows = [train_row("plain18", "plain-18", 18, False, 21.0), train_row("resnet18", "ResNet-18", 18, True, 21.5),
                  train_row("resnet34", "ResNet-34", 34, True, 26.0)]
    test_rows = [{"model": "plain18", "10crop_top1_error": 19.7}, {"model": "resnet18", "10crop_top1_error": 20.1},
                 {"model": "resnet34", "10crop_top1_error": 23.0}]
    assert same_depth_verdicts(train_rows, test_rows) == [
        "at 18 layers the residual net beats the plain one (ImageNet: 27.88% vs 27.94%): no (ResNet-18 20.10% vs "
        "plain-18 19.70% 10-crop top-1; final training error 21.50% vs 21.00%)"]  # no plain-34: no line for 34

    def run(*train_errors: float) -> SimpleNamespace:
        return SimpleNamespace(metrics=[{"iteration": 10 * (i + 1), "train_error": e}
                                        for i, e in enumerate(train_errors)])

    series = {"plain18": [run(50, 40, 30, 20)], "resnet18": [run(60, 40, 30, 20)],
              "resnet34": [run(70, 50, 25, 30)]}
    assert curve_comparisons(series, train_rows) == [
        "along the run (Fig. 4), ResNet-34's training error is above ResNet-18's at 3 of 4 logged points "
        "(last quarter: 30.00% vs 20.00%)"]  # one plain depth only: no plain line
