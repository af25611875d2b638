"""`resnets predict` on real photos: JSON output, class names, preprocessing from meta, unreadable files, photos
stored sideways with an EXIF orientation tag, folders into a CSV file."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

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
    code, rows, err = run_json([*map(str, photos), "--pretrained", str(resnet18_file), "--topk", "7"], capsys)
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
                                "--pretrained", str(resnet18_file), "--topk", "3"], capsys)
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
    code, rows, _ = run_json([str(photos[0]), "--pretrained", str(tmp_path / "run"), "--topk", "10"], capsys)
    assert code == 0 and sorted(t["class"] for t in rows[0]["top"]) == sorted(names)
    assert abs(sum(t["probability"] for t in rows[0]["top"]) - 1) < 1e-5  # all 10 classes: sums to 1
    predictor = load_predictor(tmp_path / "run")
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
    assert "--model resnet18 without --pretrained" in capsys.readouterr().err
    assert main(["predict", "x.jpg", "--pretrained", str(resnet18_file), "--tag", "fast"]) == 2
    assert capsys.readouterr().err.strip() == ("resnets predict: error: --tag goes with --model NAME; write "
                                               "--pretrained MODEL.fast")
    assert main(["predict", "x.jpg", "--pretrained", str(resnet18_file), "--topk", "0"]) == 2
    assert "--topk must be >= 1" in capsys.readouterr().err


# Imagenette validation photos that resnet18.imagenette names correctly, with their true classes (the folder's wnid).
VAL = Path("imagenette") / "val"
CHURCH = VAL / "n03028079" / "ILSVRC2012_val_00003682.JPEG"  # seen sideways, it is a "gas pump" to this model
LABELLED = {CHURCH: "church", VAL / "n03888257" / "ILSVRC2012_val_00001440.JPEG": "parachute",
            VAL / "n02102040" / "ILSVRC2012_val_00004650.JPEG": "English springer",
            VAL / "n03394916" / "ILSVRC2012_val_00001492.JPEG": "French horn"}


@pytest.fixture(scope="module")
def imagenette_root() -> Path:
    from resnets.data.paths import datasets_root

    from .conftest import skip_without_data

    root = datasets_root()
    if not (root / CHURCH).is_file():
        skip_without_data(f"Imagenette validation photos not found under {root / VAL}")
    return root


def stored_sideways(upright: Image.Image, path: Path, orientation: int, **save: object) -> Path:
    """What a phone writes: the sensor's pixels (the scene turned a quarter) and the EXIF tag that tells viewers how
    to turn it back: 6 = turn 90 degrees clockwise to view, 8 = counter-clockwise."""
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, **save)
    return path


def test_a_photo_stored_sideways_with_its_exif_tag_gets_the_class_of_the_upright_one(
        imagenette_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    original = imagenette_root / CHURCH
    upright = Image.open(original).convert("RGB")
    upright.save(tmp_path / "upright.png")
    lossless = stored_sideways(upright, tmp_path / "tagged-8.png", 8)
    phone = stored_sideways(upright, tmp_path / "tagged-6.jpg", 6, quality=95)
    untagged = tmp_path / "untagged.png"
    upright.transpose(Image.Transpose.ROTATE_90).save(untagged)  # the same pixels as tagged-6, no tag
    code, rows, _ = run_json([str(original), str(tmp_path / "upright.png"), str(lossless), str(phone), str(untagged),
                              "--pretrained", "resnet18.imagenette", "--topk", "10"], capsys)
    assert code == 0
    probs = [{t["class"]: t["probability"] for t in row["top"]} for row in rows]
    assert [row["top"][0]["class"] for row in rows[:4]] == ["church"] * 4
    assert probs[2] == pytest.approx(probs[1], abs=1e-6)  # lossless: the very pixels of the upright photo
    assert probs[3] == pytest.approx(probs[0], abs=0.02)  # re-encoded as JPEG once more: near-identical
    assert probs[0]["church"] > 0.9
    assert rows[4]["top"][0]["class"] != "church"  # the check can fail: seen sideways, the photo is something else


@pytest.fixture(scope="module")
def predictions_folder(imagenette_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos at three depths and in two formats, beside files that are not photos or are hidden."""
    folder = tmp_path_factory.mktemp("photos")
    church, parachute, springer, horn = LABELLED
    (folder / "b" / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    shutil.copy(imagenette_root / church, folder / "church.JPEG")
    shutil.copy(imagenette_root / parachute, folder / "b" / "parachute.jpg")
    Image.open(imagenette_root / springer).save(folder / "b" / "deeper" / "springer.png")
    shutil.copy(imagenette_root / horn, folder / ".hidden" / "horn.jpg")
    shutil.copy(imagenette_root / horn, folder / ".horn.jpg")
    (folder / "b" / "notes.txt").write_text("not a photo")
    return folder


def test_predict_a_folder_into_a_csv_file(predictions_folder: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("an older file: replaced whole")
    assert main(["predict", str(predictions_folder), "--pretrained", "resnet18.imagenette", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "wrote 3 rows to" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no temporary file left
    with out.open(newline="") as file:
        table = list(csv.reader(file))
    assert table[0] == ["path", "top1_class", "top1_probability", "top2_class", "top2_probability", "top3_class",
                        "top3_probability", "top4_class", "top4_probability", "top5_class", "top5_probability"]
    rows = table[1:]
    assert [row[0] for row in rows] == [str(predictions_folder / "b" / "deeper" / "springer.png"),
                                        str(predictions_folder / "b" / "parachute.jpg"),
                                        str(predictions_folder / "church.JPEG")]
    assert [row[1] for row in rows] == ["English springer", "parachute", "church"]
    for row in rows:
        probabilities = [float(p) for p in row[2::2]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
        assert len(set(row[1::2])) == 5 and all(len(p.split(".")[1]) == 6 for p in row[2::2])
    # The same numbers as the JSON lines of the same photos.
    _, lines, _ = run_json([rows[2][0], "--pretrained", "resnet18.imagenette"], capsys)
    assert float(rows[2][2]) == pytest.approx(lines[0]["top"][0]["probability"], abs=1e-6)


def test_predict_folder_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no photos here")
    assert main(["predict", str(tmp_path / "empty"), "--pretrained", "resnet20.fast", "--out", "x.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"resnets predict: error: folder {tmp_path / 'empty'} holds no image files (.jpg, .jpeg, .png, "
                   ".webp, .gif, .bmp, .tif, .tiff), also in its subfolders")
    assert main(["predict", "x.jpg", "--pretrained", "resnet20.fast", "--out", "x.csv", "--json"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not Path("x.csv").exists()


def test_inputs_of_any_size_are_normalised_by_the_mean_image_s_channel_average() -> None:
    image = torch.stack([torch.full((32, 32), value) for value in (0.1, 0.2, 0.3)])
    image[0, :16] = 0.5  # channel 0: half 0.5, half 0.1 -> average 0.3
    pre = Preprocessing.from_meta({"mean_image": image, "size": 32}, "cifar", 10)
    whole = torch.full((1, 3, 40, 48), 0.3)
    assert torch.allclose(pre.normalize_any_size(whole)[0, :, 0, 0], torch.tensor([0.0, 0.1, 0.0]), atol=1e-6)
    assert torch.equal(pre.normalize(whole), pre.normalize_any_size(whole))  # what Normalize falls back to
    assert not torch.equal(pre.normalize(torch.full((1, 3, 32, 32), 0.3)),
                           pre.normalize_any_size(torch.full((1, 3, 32, 32), 0.3)))
