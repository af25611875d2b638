"""`resnets predict` on real photos: JSON output, class names, preprocessing from meta, unreadable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.data.classes import CIFAR10_CLASSES, CIFAR100_CLASSES, imagenet_classes, imagenet_wnids
from resnets.data.preprocess import Preprocessing
from resnets.deploy.predict import load_predictor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(imagenet_sample_dir: Path) -> list[Path]:
    files = sorted(imagenet_sample_dir.glob("*.JPEG"))
    return [files[0], files[100]]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    return resnets.save_weights(resnets.create_model("resnet18").eval(), path, {})


def run_json(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[dict], str]:
    code = main(["predict", *args, "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_predict_json_on_photos(resnet18_file: Path, photos: list[Path], capsys: pytest.CaptureFixture) -> None:
    code, rows, err = run_json([*map(str, photos), "--weights", str(resnet18_file), "--topk", "7"], capsys)
    assert code == 0
    # No meta["preprocess"] in this file: one note saying which defaults were used, no error.
    assert err.strip().splitlines() == [err.strip()] and "note: preprocessing shorter side 256, centre crop 224" in err
    assert [row["image"] for row in rows] == [str(p) for p in photos]
    names = imagenet_classes()
    for row in rows:
        top = row["top"]
        probs = [t["probability"] for t in top]
        assert len(top) == 7 and [t["rank"] for t in top] == list(range(1, 8))
        assert probs == sorted(probs, reverse=True) and all(p > 0 for p in probs) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] == names[t["index"]] for t in top)


def test_unreadable_image_is_reported_and_others_still_predicted(tmp_path: Path, resnet18_file: Path,
                                                                 photos: list[Path],
                                                                 capsys: pytest.CaptureFixture) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    missing = tmp_path / "missing.png"
    code, rows, err = run_json([str(photos[0]), str(corrupt), str(missing), str(photos[1]),
                                "--weights", str(resnet18_file), "--topk", "3"], capsys)
    assert code != 0
    assert [row["image"] for row in rows] == [str(photos[0]), str(photos[1])]
    lines = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(lines) == 2  # one line per bad file
    assert str(corrupt) in lines[0] and "cannot read image" in lines[0]
    assert str(missing) in lines[1]


def test_meta_classes_and_cifar_mean_image_from_a_run_directory(tmp_path: Path, photos: list[Path],
                                                                capsys: pytest.CaptureFixture) -> None:
    names = [f"thing{i}" for i in range(10)]
    # What the training loop stores for CIFAR: a per-pixel mean image (0..1) and std None.
    meta = {"classes": names, "preprocess": {"kind": "cifar", "size": 32, "mean_image": torch.full((3, 32, 32), 0.45),
                                             "mean": [0.45] * 3, "std": None}}
    resnets.save_weights(resnets.create_model("resnet20").eval(), tmp_path / "run" / "model.pt", meta)
    code, rows, _ = run_json([str(photos[0]), "--checkpoint", str(tmp_path / "run"), "--topk", "10"], capsys)
    assert code == 0 and sorted(t["class"] for t in rows[0]["top"]) == sorted(names)
    assert abs(sum(t["probability"] for t in rows[0]["top"]) - 1) < 1e-5  # all 10 classes: sums to 1
    predictor = load_predictor(checkpoint=tmp_path / "run")
    assert predictor.preprocess.mean_image is not None and predictor.preprocess.crop == 32
    assert "per-pixel mean image" in predictor.preprocess.describe()


def test_default_class_names_and_preprocessing_per_family() -> None:
    assert len(imagenet_classes()) == 1000 and imagenet_classes()[0] == "tench"
    wnids = imagenet_wnids()
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert len(CIFAR10_CLASSES) == 10 and len(set(CIFAR100_CLASSES)) == 100
    pre = Preprocessing.from_meta({}, "cifar", 100)
    assert (pre.resize, pre.crop, pre.std) == (32, 32, None) and pre.mean[0] == pytest.approx(0.5071)
    pre = Preprocessing.from_meta({"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}, "imagenet",
                                  1000)
    assert (pre.resize, pre.crop) == (256, 224)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx((0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="mean_image has shape"):
        Preprocessing.from_meta({"mean_image": torch.zeros(3, 28, 28)}, "cifar", 10)


def test_sample_photo_names_match_shipped_class_names(imagenet_sample_dir: Path) -> None:
    folder = imagenet_sample_dir
    names, wnids = imagenet_classes(), imagenet_wnids()
    for path in sorted(folder.glob("*.JPEG")):
        wnid, name = path.stem.split("_", 1)
        assert names[wnids.index(wnid)].replace(" ", "_") == name


def test_predict_cli_argument_errors(resnet18_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "x.jpg", "--model", "resnet18"]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert main(["predict", "x.jpg", "--weights", str(resnet18_file), "--tag", "fast"]) == 2
    assert "--pretrained and --tag go with --model NAME" in capsys.readouterr().err
    assert main(["predict", "x.jpg", "--weights", str(resnet18_file), "--topk", "0"]) == 2
    assert "--topk must be >= 1" in capsys.readouterr().err
