"""One name for pretrained weights (`model.tag`, as timm writes it), one parser for every `pretrained=` and
`--pretrained`, the old spellings with their deprecation warnings, and the error lines.

Expected values come from the files themselves, read here with torch.load / json (not through resnets): the shipped
file names on disk, their tensors, their .json metadata, and the folder (wnid) of each Imagenette photo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.data.paths import datasets_root
from resnets.deploy.predict import load_predictor
from resnets.models import Pretrained, resolve_pretrained, save_weights, stored_architecture
from resnets.models.pretrained import DEFAULT_TAGS, RUN_WEIGHTS, weight_file
from resnets.runs import RunPaths

from .conftest import skip_without_data

pytestmark = pytest.mark.usefixtures("one_thread")

FOLDER = Path(resnets.__file__).parent / "assets" / "weights"


def on_disk(name: str) -> dict:
    """A shipped file's tensors and metadata, read without resnets."""
    return {"pt": torch.load(FOLDER / f"{name}.pt", weights_only=True),
            "json": json.loads((FOLDER / f"{name}.json").read_text())}


def same_tensors(model: torch.nn.Module, file_name: str) -> bool:
    stored = on_disk(file_name)["pt"]["model"]
    return all(torch.equal(value.float(), stored[key].float()) for key, value in model.state_dict().items())


def shipped_on_disk(task: str | None = "classification") -> dict[str, dict]:
    """`model.tag` -> metadata for every .json in the folder (of `task`, None: all; a detector's says "task":
    "detection"); the paper recipe's old files say "pretrained": true."""
    found = {}
    for path in sorted(FOLDER.glob("*.json")):
        meta = json.loads(path.read_text())
        if task is not None and meta.get("task", "classification") != task:
            continue
        tag = "paper" if meta["pretrained"] is True else meta["pretrained"]
        found[f"{meta['model']}.{tag}"] = meta
    return found


# Spellings ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "model", "name", "file"), [
    ("resnet18.imagenette", None, "resnet18.imagenette", "resnet18-imagenette.pt"),
    ("resnet20.fast", None, "resnet20.fast", "resnet20-fast.pt"),
    ("resnet20.paper", None, "resnet20.paper", "resnet20.pt"),
    ("resnet20", None, "resnet20.paper", "resnet20.pt"),  # a bare model: its default tag
    (True, "resnet20", "resnet20.paper", "resnet20.pt"),
    ("fast", "resnet20", "resnet20.fast", "resnet20-fast.pt"),  # a bare tag of the model
    ("resnet20.fast", "resnet20", "resnet20.fast", "resnet20-fast.pt"),
    (True, "resnet110", "resnet110.fast", "resnet110-fast.pt"),  # one tag shipped: that one
    ("preact_resnet164", None, "preact_resnet164.paper-2ep", "preact_resnet164-paper-2ep.pt"),
])
def test_every_spelling_of_shipped_weights_resolves_to_its_file(value, model, name: str, file: str) -> None:
    resolved = resolve_pretrained(value, model)
    assert (resolved.name, resolved.path, resolved.shipped) == (name, FOLDER / file, True)
    assert resolved.meta["test_top1_error"] == json.loads((FOLDER / file).with_suffix(".json").read_text())[
        "test_top1_error"]
    with pytest.raises(AttributeError):  # frozen
        resolved.tag = "other"  # type: ignore[misc]


def test_files_and_run_directories_resolve_to_the_file_they_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = resnets.save_weights(resnets.create_model("resnet8"), run / "model.pt")
    for value in (run, str(run), final, str(final)):
        resolved = resolve_pretrained(value)
        assert (resolved.path, resolved.tag, resolved.shipped) == (final, None, False)
    unfinished = tmp_path / "unfinished"
    last = resnets.save_weights(resnets.create_model("resnet8"), unfinished / "checkpoints" / "last.pt")
    assert resolve_pretrained(unfinished).path == last
    # models/ cannot import runs/: its names for a run's weights must be the ones runs.py writes.
    paths = RunPaths(tmp_path)
    written = (paths.weights.relative_to(tmp_path), paths.checkpoint("last").relative_to(tmp_path))
    assert tuple(map(str, written)) == RUN_WEIGHTS


def test_weight_file_keeps_the_names_on_disk() -> None:
    assert weight_file("resnet20", "paper") == FOLDER / "resnet20.pt"
    assert weight_file("resnet20", "fast") == FOLDER / "resnet20-fast.pt"
    assert weight_file("resnet18", "imagenette", "/x") == Path("/x/resnet18-imagenette.pt")
    assert list(resnets.list_pretrained()) == sorted(shipped_on_disk())
    listed = resnets.list_pretrained(task=None)  # classifiers and detectors: one naming scheme, one folder
    assert list(listed) == sorted(shipped_on_disk(None)) and "maskrcnn_resnet18.pennfudan" in listed
    assert sorted(weight_file(meta["model"], meta["tag"]).name for meta in listed.values()) == sorted(
        path.name for path in FOLDER.glob("*.pt"))


def test_every_shipped_model_has_an_explicit_default_that_ships() -> None:
    models = {meta["model"] for meta in shipped_on_disk().values()}
    assert models <= set(DEFAULT_TAGS)
    assert all(f"{model}.{DEFAULT_TAGS[model]}" in shipped_on_disk() for model in models)
    assert DEFAULT_TAGS["resnet20"] == "paper"


@pytest.mark.parametrize(("call", "file"), [
    (lambda: resnets.create_model("resnet20.fast"), "resnet20-fast"),
    (lambda: resnets.create_model("resnet20", pretrained="fast"), "resnet20-fast"),
    (lambda: resnets.create_model("resnet20", pretrained="resnet20.fast"), "resnet20-fast"),
    (lambda: resnets.create_model("resnet20.paper"), "resnet20"),
    (lambda: resnets.create_model("resnet20", pretrained=True), "resnet20"),
    (lambda: resnets.create_model("resnet20", pretrained=FOLDER / "resnet20-fast.pt"), "resnet20-fast"),
    (lambda: resnets.load_model("resnet20.fast"), "resnet20-fast"),
    (lambda: resnets.load_model(str(FOLDER / "resnet20.pt")), "resnet20"),
])
def test_create_model_and_load_model_load_the_named_file(call, file: str) -> None:
    model = call()
    assert same_tensors(model, file)
    assert model.meta["test_top1_error"] == on_disk(file)["json"]["test_top1_error"]


def test_a_tagged_name_takes_the_shipped_architecture() -> None:
    model = resnets.create_model("resnet18.imagenette")
    config = on_disk("resnet18-imagenette")["pt"]["model_config"]
    assert (model.spec.shortcut, model.spec.num_classes) == (config["shortcut"], config["num_classes"]) == ("A", 10)
    assert same_tensors(model, "resnet18-imagenette") and model.meta["pretrained"] == "resnet18.imagenette"
    fresh = resnets.create_model("resnet18.imagenette", pretrained=False)  # timm: the tag's architecture, no weights
    assert fresh.spec == model.spec and not same_tensors(fresh, "resnet18-imagenette") and fresh.meta == {}
    assert not same_tensors(resnets.create_model("resnet20"), "resnet20")  # no tag, no pretrained: He init
    assert stored_architecture("resnet18.imagenette") == model.spec  # read from the file, the net not built


def test_stored_architecture_reads_the_shortcut_option_a_file_was_trained_with(tmp_path: Path) -> None:
    for shortcut in ("A", "B"):
        save_weights(resnets.create_model("resnet20", shortcut=shortcut), tmp_path / f"{shortcut}.pt")
        assert stored_architecture(tmp_path / f"{shortcut}.pt").shortcut == shortcut


def test_another_class_count_gets_a_new_classifier_on_the_pretrained_trunk() -> None:
    torch.manual_seed(0)
    model = resnets.create_model("resnet18", pretrained="imagenette", num_classes=5)
    stored = on_disk("resnet18-imagenette")["pt"]["model"]
    assert model.fc.weight.shape == (5, 512) and stored["fc.weight"].shape == (10, 512)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, stored[k].float()) for k, v in trunk.items())
    assert "classes" not in model.meta and model.meta["preprocess"]["crop"] == 112


# Old spellings -------------------------------------------------------------------------------------------------------

def test_load_predictor_old_keywords_warn_and_still_work(tmp_path: Path) -> None:
    path = resnets.save_weights(resnets.create_model("resnet8"), tmp_path / "run" / "model.pt")
    with pytest.warns(FutureWarning, match=rf"load_predictor\(weights=...\) is deprecated; write "
                                           rf"load_predictor\('{path}'\)"):
        assert load_predictor(weights=path).source == str(path)
    with pytest.warns(FutureWarning, match=r"load_predictor\(checkpoint=...\) is deprecated"):
        assert load_predictor(checkpoint=tmp_path / "run").source == str(path)


def test_old_cli_flags_print_one_warning_naming_the_new_spelling(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.pt"
    for command in (["predict", "x.jpg"], ["export", "--format", "onnx", "--out", str(tmp_path / "x.onnx")],
                    ["eval"]):
        for flag in ("--weights", "--checkpoint"):
            assert main([*command, flag, str(missing)]) == 2
            warning, error = capsys.readouterr().err.strip().splitlines()
            assert warning == (f"resnets {command[0]}: warning: {flag} {missing} is deprecated and goes in the next "
                               f"release; write --pretrained {missing}")
            assert error.startswith(f"resnets {command[0]}: error: {missing} does not exist")
    assert main(["analyze", "responses", "--checkpoint", str(missing)]) == 2
    assert "warning: --checkpoint" in capsys.readouterr().err


def test_old_tag_flag_predicts_the_same_as_the_new_name(capsys: pytest.CaptureFixture) -> None:
    photo = imagenette_photos()[0]
    assert main(["predict", str(photo), "--model", "resnet18", "--pretrained", "--tag", "imagenette", "--json"]) == 0
    old = capsys.readouterr()
    assert old.err.strip() == ("resnets predict: warning: --model resnet18 --pretrained --tag imagenette is deprecated "
                               "and goes in the next release; write --pretrained resnet18.imagenette")
    assert main(["predict", str(photo), "--pretrained", "resnet18.imagenette", "--json"]) == 0
    new = capsys.readouterr()
    assert new.err == "" and json.loads(new.out) == json.loads(old.out)


# Error lines ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "model", "message"), [
    ("resnet20.nosuch", None, "no shipped weights resnet20.nosuch; resnet20 ships resnet20.paper, resnet20.fast"),
    ("nosuch", "resnet18", "no shipped weights resnet18.nosuch; resnet18 ships resnet18.imagenette"),
    ("resnet50.imagenette", None, "no shipped weights for 'resnet50'; `resnets models --pretrained` lists"),
    ("resnet21", None, "no shipped weights for 'resnet21'; `resnets models --pretrained` lists"),
    (True, "resnet50", "no shipped weights for 'resnet50'; `resnets models --pretrained` lists"),
    (True, None, "pretrained=True needs a model: name the weights as MODEL.TAG"),
    ("fast", None, "'fast' is a tag: name the model too, e.g. resnet110.fast, resnet20.fast, resnet56.fast"),
    ("resnet20-fast", None, "'resnet20-fast' is the file's name; the weights are named resnet20.fast"),
    ("resnet18.imagenette", "resnet20", "pretrained='resnet18.imagenette' names weights of resnet18, not of resnet20; "
                                        "write pretrained='imagenette' or create_model('resnet18.imagenette')"),
    ("runs/nowhere", None, "runs/nowhere does not exist; give a weight file, a run directory or shipped weights"),
])
def test_bad_names_give_one_line_that_says_what_exists(value, model, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)) as raised:
        resolve_pretrained(value, model)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_weights_of_another_network_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"resnet18-imagenette.pt holds a resnet18 \(imagenet family\), not a "
                                         r"resnet34"):
        resnets.create_model("resnet34", pretrained=FOLDER / "resnet18-imagenette.pt")
    with pytest.raises(ValueError, match="names two sets of weights"):
        resnets.create_model("resnet20.fast", pretrained="paper")
    with pytest.raises(ValueError, match=r"pretrained='': give True, a tag"):
        resolve_pretrained("", "resnet20")
    assert isinstance(resolve_pretrained(resolve_pretrained("resnet20.fast"), "resnet20"), Pretrained)


# The CLI on real photos and the listing ------------------------------------------------------------------------------

def imagenette_photos() -> list[Path]:
    """The first validation photo (sorted) of each of the 10 Imagenette classes."""
    folder = datasets_root() / "imagenette" / "val"
    if not folder.is_dir():
        skip_without_data(f"{folder} not found")
    return [sorted(wnid.glob("*.JPEG"))[0] for wnid in sorted(folder.iterdir())]


def test_predict_with_pretrained_name_on_real_photos(capsys: pytest.CaptureFixture) -> None:
    """`resnets predict photo.jpg --pretrained resnet18.imagenette`: each photo's top class is its folder's wnid
    (the shipped net has 21% error; these 10 photos, one per class, are all recognised)."""
    photos = imagenette_photos()
    assert main(["predict", *map(str, photos), "--pretrained", "resnet18.imagenette", "--topk", "1", "--json"]) == 0
    out = capsys.readouterr()
    wnids = on_disk("resnet18-imagenette")["json"]["classes"]
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [wnids[row["top"][0]["index"]] for row in rows] == [photo.parent.name for photo in photos]
    assert rows[0]["top"][0]["class"] == "tench" and out.err == ""


def test_models_pretrained_lists_every_shipped_tag_with_its_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--pretrained"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "." in line.split(" ")[0]}
    shipped = shipped_on_disk()
    assert {"resnet20.paper", "resnet20.fast", "resnet18.imagenette"} <= set(shipped)
    assert set(lines) == set(shipped_on_disk(None))  # the detectors in a table of their own
    for name, meta in shipped.items():
        assert f" {meta['test_top1_error']:.2f}% " in lines[name]
        assert f"{meta['test_images']:,} " in lines[name] and meta["data"] in lines[name]
    assert "*" in lines["resnet20.paper"] and "*" not in lines["resnet20.fast"]
    for name, meta in shipped.items():  # weights trained on from other shipped weights: both runs' epochs
        source = meta.get("started_from")
        epochs = f"{shipped[source]['epochs']:g}+{meta['epochs']:g}" if source else f"{meta['epochs']:g}"
        assert lines[name].endswith(f" {epochs}"), (name, lines[name])
    assert any(meta.get("started_from") for meta in shipped.values())
    assert main(["models", "--pretrained", "--json", "resnet20"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["top1_error"]) for r in rows] == [
        (name, meta["test_top1_error"]) for name, meta in shipped.items() if name.startswith("resnet20.")]
