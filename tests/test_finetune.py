"""Fine-tuning on a folder of photos (`resnets train --dataset folder --pretrained ...`): the classifier replaced for
the folder's classes and the rest loaded, the weights' own preprocessing, a lower lr for the body, a recorded held-out
split, a run that ships like any other, and one error line for each kind of bad folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import resnets
from resnets.cli import main
from resnets.data.decoded import read_image_folder
from resnets.data.paths import CACHE_ENV
from resnets.models import create_model, load_model
from resnets.runtime import setup_runtime
from resnets.train.classify import ClassificationTask, train
from resnets.train.data import FOLDER_VAL_FRACTION, hold_out
from resnets.train.loop import Run
from resnets.train.plan import resolve_run

from .conftest import smooth_photos

SHIPPED = "resnet18.imagenette"
CASTS = {"cats": (60.0, -40.0, -20.0), "dogs": (-40.0, 10.0, 60.0), "owls": (10.0, 50.0, -50.0)}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # decoded photos of one test never serve another


def write_photos(root: Path, split: str, per_class: int, classes: tuple[str, ...] = ("cats", "dogs"),
                 seed: int = 0) -> Path:
    """Photos of several sizes and shapes (portrait, landscape, square), each class a colour cast of its own."""
    generator = torch.Generator().manual_seed(seed)
    for label, name in enumerate(classes):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        photos = smooth_photos(per_class, size=160, seed=seed + 11 * label).float()
        photos = (photos + torch.tensor(CASTS[name])[:, None, None] + 6 * torch.randn(photos.shape,
                                                                                     generator=generator))
        for index, photo in enumerate(photos.clamp(0, 255).round().to(torch.uint8)):
            height, width = ((160, 120), (120, 160), (140, 140))[index % 3]
            pixels = photo[:, :height, :width].permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / split / name / f"{name}_{index:03d}.jpg", quality=92)
    return root


def folder_plan(data: Path, out: Path, **flags):
    return resolve_run(dataset="folder", data=str(data), model="resnet18", batch_size=8, out=str(out),
                       progress=False, precision="fp32", **{"pretrained": SHIPPED, **flags})


def built(plan) -> ClassificationTask:
    task = ClassificationTask(plan)
    task.parts = task.build(setup_runtime("cpu"))
    return task


def test_finetune_recipe_is_folders_default_and_refused_elsewhere(tmp_path: Path) -> None:
    plan = folder_plan(tmp_path, tmp_path / "run")
    assert plan.recipe.name == "finetune" and plan.options.model == "resnet18"
    assert plan.recorded_recipe()["body_lr_scale"] == 0.1 and "crop_size" not in plan.recorded_recipe()
    with pytest.raises(ValueError, match="recipe 'finetune' is written for folder, not cifar10"):
        resolve_run("finetune", dataset="cifar10")
    with pytest.raises(ValueError, match=r"recipe 'imagenette' is written for .*not folder.*finetune"):
        resolve_run("imagenette", dataset="folder")
    with pytest.raises(ValueError, match=r"--set body_lr_scale: .*read only when the run starts from --pretrained"):
        resolve_run(dataset="folder", overrides={"body_lr_scale": "0.2"})
    with pytest.raises(ValueError, match=r"--set crop_size: .*--pretrained weights' own preprocessing"):
        resolve_run(dataset="folder", pretrained=SHIPPED, overrides={"crop_size": "224"})
    assert resolve_run(dataset="folder", overrides={"crop_size": "96"}).recipe.crop_size == 96  # from scratch: read


def test_classifier_replaced_body_loaded_and_preprocessing_from_the_weights(tmp_path: Path) -> None:
    data = write_photos(tmp_path / "photos", "train", 10, classes=("cats", "dogs", "owls"))
    task = built(folder_plan(data, tmp_path / "run"))
    model, shipped = task.model, create_model(SHIPPED)
    assert model.fc.out_features == 3 and task.data.classes == ["cats", "dogs", "owls"]
    body = {k: v for k, v in shipped.state_dict().items() if not k.startswith("fc.")}
    state = model.state_dict()
    assert len(body) > 100 and all(torch.equal(state[k], v) for k, v in body.items())  # every trunk tensor, BN too
    # The shipped weights' own input: 112 crops of shorter side 128, minus their mean image (not the photos').
    record = task.data.preprocess
    assert (record.crop, record.resize) == (112, 128)
    assert torch.equal(record.mean_image, resnets.preprocessing_of(shipped).mean_image)
    assert task.data.description["geometry"] == {"stored": 240, "scale": [128, 240], "crop": 112, "resize": 128,
                                                 "from": "the weights"}
    inputs, labels = next(iter(task.data.train))
    assert inputs.shape == (8, 3, 112, 112) and labels.max() < 3


def test_from_scratch_uses_the_recipe_and_the_photos_mean(tmp_path: Path) -> None:
    data = write_photos(tmp_path / "photos", "train", 10)
    task = built(folder_plan(data, tmp_path / "run", pretrained=None))
    assert task.model.fc.out_features == 2 and "started_from" not in task.meta
    shipped = create_model(SHIPPED).state_dict()["conv1.weight"]
    assert not torch.equal(task.model.state_dict()["conv1.weight"], shipped)
    assert (task.data.preprocess.crop, task.data.preprocess.resize) == (112, 128)
    assert not torch.equal(task.data.preprocess.mean_image, resnets.preprocessing_of(create_model(SHIPPED)).mean_image)
    assert {group.get("lr_scale", 1.0) for group in task.parts.optimizer.param_groups} == {1.0}


def test_the_body_trains_at_body_lr_scale_times_the_heads_lr(tmp_path: Path) -> None:
    data = write_photos(tmp_path / "photos", "train", 10)
    plan = folder_plan(data, tmp_path / "run", lr=0.04)
    run = Run(ClassificationTask(plan), setup_runtime("cpu"))
    run.step(next(run.batches()))
    head = {id(p) for p in run.model.fc.parameters()}
    lrs = {("head" if id(group["params"][0]) in head else "body"): group["lr"]
           for group in run.optimizer.param_groups if group["params"]}
    assert lrs["head"] == pytest.approx(run.lr) and run.lr == pytest.approx(0.04)  # cosine at iteration 0
    assert lrs["body"] == pytest.approx(0.1 * run.lr)  # the finetune recipe's body_lr_scale
    # BN and biases are not decayed, in the body and the head alike.
    for group in run.optimizer.param_groups:
        if any(p.ndim <= 1 for p in group["params"]):
            assert group["weight_decay"] == 0.0


def test_held_out_split_is_seeded_per_class_disjoint_and_recorded(tmp_path: Path) -> None:
    data = write_photos(tmp_path / "photos", "train", 20)
    photos = read_image_folder(data, "train", 64, fit=True)
    kept, held, record = hold_out(photos, data)
    assert FOLDER_VAL_FRACTION == 0.1 and len(held) == 4 and held.labels.tolist() == [0, 0, 1, 1]  # 2 of 20 each
    assert set(kept.files).isdisjoint(held.files) and sorted(kept.files + held.files) == sorted(photos.files)
    assert record["files"] == [Path(f).relative_to(data).as_posix() for f in held.files]
    for image, name in zip(held.images, held.files, strict=True):  # the pixels travel with their file
        assert torch.equal(image, photos.images[photos.files.index(name)])
    assert hold_out(photos, data)[2] == record  # seeded: the same photos every time

    task = built(folder_plan(data, tmp_path / "run"))
    assert task.data.train_size == 36 and task.data.description["test_images"] == 4
    assert task.data.description["val_split"]["files"] == record["files"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short fine-tuning run on photos with a val/ folder: (the photos, the run directory)."""
    root = tmp_path_factory.mktemp("finetune")
    data = write_photos(root / "photos", "train", 12)
    write_photos(data, "val", 3, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root / "cache"))
        train(folder_plan(data, root / "run", iterations=4, log_every=2))
    return data, root / "run"


def test_finetuned_run_ships_like_any_other_model(finetuned: tuple[Path, Path]) -> None:
    data, run = finetuned
    config, summary = (json.loads((run / name).read_text()) for name in ("config.json", "summary.json"))
    assert config["options"]["pretrained"] == SHIPPED and summary["test_images"] == 6  # the val/ photos
    assert "val_split" not in config["data"]
    model = create_model("resnet18", pretrained=str(run)).eval()
    assert model.spec.num_classes == 2 and model.meta["classes"] == ["cats", "dogs"]
    assert model.meta["started_from"] == SHIPPED and model.meta["dataset"] == "folder"
    record = resnets.preprocessing_of(model)
    assert (record.crop, record.resize) == (112, 128)
    assert torch.equal(record.mean_image, resnets.preprocessing_of(create_model(SHIPPED)).mean_image)
    photo = Image.open(data / "val" / "dogs" / "dogs_000.jpg")
    probabilities = model(resnets.preprocess(model, [photo])).softmax(1)
    assert probabilities.shape == (1, 2) and torch.allclose(probabilities.sum(), torch.tensor(1.0))
    assert load_model(str(run)).meta["classes"] == ["cats", "dogs"]


def test_fresh_classifier_for_other_classes_even_as_many(finetuned: tuple[Path, Path], tmp_path: Path) -> None:
    """From the 2-class run: photos of 2 other classes get a new classifier, photos of its own 2 keep it."""
    data, run = finetuned
    trained_fc = create_model("resnet18", pretrained=str(run)).fc.weight
    others = write_photos(tmp_path / "others", "train", 10, classes=("dogs", "owls"))
    assert not torch.equal(built(folder_plan(others, tmp_path / "a", pretrained=str(run))).model.fc.weight,
                           trained_fc)
    same = built(folder_plan(data, tmp_path / "b", pretrained=str(run)))
    assert torch.equal(same.model.fc.weight, trained_fc)


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["train", "--no-progress", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_folders_and_weights_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def train_on(data: Path, *extra: str) -> str:
        return cli_error(capsys, "--dataset", "folder", "--data", str(data), "--pretrained", SHIPPED,
                         "--out", str(tmp_path / "run"), *extra)

    assert "none does not exist; --dataset folder expects PATH/train/<class>/" in train_on(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    assert "empty has no train/ folder; --dataset folder expects PATH/train/<class>/" in train_on(tmp_path / "empty")
    loose = write_photos(tmp_path / "loose", "train", 3)
    (loose / "train" / "stray.jpg").write_bytes((loose / "train" / "cats" / "cats_000.jpg").read_bytes())
    assert "train/stray.jpg is a file, and train/ must hold one folder per class" in train_on(loose)
    hollow = write_photos(tmp_path / "hollow", "train", 3)
    (hollow / "train" / "zebras").mkdir()
    assert "zebras holds no images" in train_on(hollow)
    lonely = write_photos(tmp_path / "lonely", "train", 3, classes=("cats",))
    assert "holds one class folder (cats); a classifier needs at least 2" in train_on(lonely)
    good = write_photos(tmp_path / "good", "train", 3)
    assert ("--pretrained resnet18.imagenette holds weights of resnet18, not of --model resnet34; give --model "
            "resnet18") in train_on(good, "--model", "resnet34")
    other_file = tmp_path / "resnet20.pt"  # a file (or run directory) of another network: checked when loaded
    other_file.write_bytes(resnets.models.pretrained.resolve_pretrained("resnet20.paper").path.read_bytes())
    assert "holds a resnet20 (cifar family), not a resnet18; give --model resnet20" in train_on(
        good, "--pretrained", str(other_file))
    assert "--dataset folder needs --data PATH" in cli_error(capsys, "--dataset", "folder", "--out",
                                                             str(tmp_path / "run"))


def test_resnets_eval_and_predict_read_the_finetuned_run(finetuned: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, run = finetuned
    assert main(["eval", "--pretrained", str(run), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert result["images"] == 6 and result["dataset"] == "folder"
    assert result["top1_error"] == pytest.approx(summary["test_top1_error"], abs=100 / 6 + 1e-6)  # one photo at most
    assert main(["predict", str(data / "val" / "cats" / "cats_000.jpg"), "--pretrained", str(run)]) == 0
    assert {"cats", "dogs"} <= set(capsys.readouterr().out.split())
    assert main(["eval", "--pretrained", str(run)]) == 2
    assert "evaluated on --data PATH" in capsys.readouterr().err
