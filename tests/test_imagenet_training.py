"""The ImageNet path of the one training loop and of `resnets eval`, on real full-size photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import resnets
from resnets.data.classes import imagenet_wnids
from resnets.data.folder import read_image

from .test_train import run_cli


def link_photos(imagenet_sample_dir: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True)
    photos = sorted(imagenet_sample_dir.glob("*.JPEG"))[:count]
    for photo in photos:
        (target / photo.name).symlink_to(photo.resolve())
    return photos


def test_resnet18_overfits_20_real_photos(imagenet_sample_dir: Path, tmp_path: Path) -> None:
    link_photos(imagenet_sample_dir, tmp_path / "data" / "train", 20)
    link_photos(imagenet_sample_dir, tmp_path / "data" / "val", 20)
    corrupt = tmp_path / "data" / "train" / "n01440764_corrupt.JPEG"  # a class that exists, unreadable bytes
    corrupt.write_bytes(b"\xff\xd8\xff" + bytes(200))
    out = tmp_path / "run"
    run_cli("train", "--dataset", "imagenet", "--model", "resnet18", "--recipe", "step-90", "--data",
            str(tmp_path / "data"), "--iterations", "40", "--batch-size", "20", "--lr", "0.05", "--precision", "fp32",
            "--set", "augment=false", "--set", "crop_size=128", "--set", "eval_resize=146", "--set", "weight_decay=0",
            "--set", "mean_images=20", "--set", "eval_every=40", "--workers", "2", "--log-every", "5",
            "--on-bad-image", "skip",
            "--no-progress", "--out", str(out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_error"] >= 80  # 20 classes: it starts at chance
    assert records[-1]["train_error"] <= 10, records[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_top1_error"] <= 25 and summary["iterations"] == 40
    assert summary["skipped_images"] == [str(corrupt)]  # skipped, named and counted, not silently
    config = json.loads((out / "config.json").read_text())
    assert len(config["data"]["class_to_idx"]) == 20  # the class mapping is stored with the run


def test_eval_protocols_on_a_torchvision_file(imagenet_sample_dir: Path, tmp_path: Path) -> None:
    photos = link_photos(imagenet_sample_dir, tmp_path / "photos", 3)
    wnids = imagenet_wnids()
    expected = [(photo.name.split("_")[0], wnids.index(photo.name.split("_")[0])) for photo in photos]
    weights = tmp_path / "resnet18-tv.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    for protocol, views in (("center", 1), ("10crop", 10), ("multiscale", 10)):
        per_image = tmp_path / f"{protocol}.jsonl"
        result = run_cli("eval", "--pretrained", str(weights), "--dataset", "imagenet", "--data",
                         str(tmp_path / "photos"), "--protocol", protocol, "--workers", "0", "--json",
                         "--predictions", str(per_image))
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["images"] == 3 and report["views_per_image"] == views
        assert report["top5_error"] <= report["top1_error"]
        rows = [json.loads(line) for line in per_image.read_text().splitlines()]
        assert [Path(row["image"]).name.split("_")[0] for row in rows] == [wnid for wnid, _ in expected]
        assert [row["label"] for row in rows] == [label for _, label in expected]  # wnid -> ImageNet index
        assert report["top1_error"] == pytest.approx(100 * sum(r["top1"] != r["label"] for r in rows) / 3)
        assert report["protocol"] == protocol and report["images_per_s"] > 0


def test_predict_eval_and_preprocess_agree_image_by_image_after_training(imagenet_sample_dir: Path,
                                                                         tmp_path: Path) -> None:
    """A run trained with the per-pixel mean image (Sec. 3.4) is served with that mean by `predict`, `eval` and
    `resnets.preprocess` alike: the same top-1 class for every photo (predict once fell back to a channel mean)."""
    photos = link_photos(imagenet_sample_dir, tmp_path / "data" / "train", 20)
    link_photos(imagenet_sample_dir, tmp_path / "data" / "val", 20)
    out = tmp_path / "run"
    run_cli("train", "--dataset", "imagenet", "--model", "resnet18", "--recipe", "step-90", "--data",
            str(tmp_path / "data"), "--iterations", "20", "--batch-size", "20", "--precision", "fp32",
            "--set", "crop_size=64", "--set", "scale_min=72", "--set", "scale_max=80", "--set", "eval_resize=72",
            "--set", "mean_images=20", "--workers", "0", "--no-progress", "--out", str(out))
    predictions = tmp_path / "eval.jsonl"
    evaluated = run_cli("eval", "--pretrained", str(out), "--dataset", "imagenet", "--data", str(tmp_path / "data"),
                        "--protocol", "center", "--workers", "0", "--predictions", str(predictions), "--json")
    by_eval = {Path(row["image"]).name: row["top1"] for row in map(json.loads, predictions.read_text().splitlines())}
    predicted = run_cli("predict", *map(str, photos), "--pretrained", str(out), "--topk", "1", "--json")
    by_predict = {Path(row["image"]).name: row["top"][0]["index"]
                  for row in map(json.loads, predicted.stdout.splitlines())}
    assert len(by_eval) == 20 and by_predict == by_eval
    model = resnets.load_model(out / "model.pt").eval()
    with torch.no_grad():
        logits = model(resnets.preprocess(model, [read_image(photo) for photo in photos]))
    assert {photo.name: int(top) for photo, top in zip(photos, logits.argmax(1), strict=True)} == by_eval
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    wrong = sum(by_eval[photo.name] != label for photo, label in zip(photos, labels_of(out, photos), strict=True))
    assert report["top1_error"] == pytest.approx(100 * wrong / 20, abs=1e-9)  # the same count; float rounding


def labels_of(run: Path, photos: list[Path]) -> list[int]:
    class_to_idx = json.loads((run / "config.json").read_text())["data"]["class_to_idx"]
    return [class_to_idx[photo.name.split("_")[0]] for photo in photos]
