"""The ImageNet path of the one training loop and of `resnets eval`, on real full-size photos."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision

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
            str(tmp_path / "data"), "--iterations", "40", "--batch-size", "20", "--lr", "0.05", "--precision", "bf16",
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
    link_photos(imagenet_sample_dir, tmp_path / "photos", 3)
    weights = tmp_path / "resnet18-tv.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    for protocol, views in (("center", 1), ("10crop", 10), ("multiscale", 10)):
        result = run_cli("eval", "--checkpoint", str(weights), "--dataset", "imagenet", "--data",
                         str(tmp_path / "photos"), "--protocol", protocol, "--workers", "0", "--json")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["images"] == 3 and report["views_per_image"] == views
        assert 0 <= report["top1_error"] <= 100 and report["top5_error"] <= report["top1_error"]
        assert report["protocol"] == protocol and report["images_per_s"] > 0
