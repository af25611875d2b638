"""ONNX (through onnxruntime) and TorchScript round trips on real photos, with a dynamic batch dimension."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.data.preprocess import Preprocessing
from resnets.deploy.export import ExportError, export_model, read_metadata, run_exported
from resnets.deploy.predict import Predictor, load_images, load_predictor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(imagenet_sample_dir: Path) -> list[Path]:
    files = sorted(imagenet_sample_dir.glob("*.JPEG"))
    return files[::67][:3]  # three classes, photos of different sizes


def calibrated(name: str, images: torch.Tensor) -> resnets.ResNet:
    """A random network whose BN statistics come from real photos, so its logits have a trained net's scale."""
    model = resnets.create_model(name)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        model.train()(images)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    images = torch.stack([t for _, t in load_images(photos, Preprocessing.default("imagenet", 1000))[0]])
    return resnets.save_weights(calibrated("resnet18", images), path, {"dataset": "test"})


def photo_batch(predictor: Predictor, photos: list[Path]) -> torch.Tensor:
    return torch.stack([t for _, t in load_images(photos, predictor.preprocess)[0]])


def check_against_pytorch(predictor: Predictor, got: torch.Tensor, inputs: torch.Tensor) -> None:
    with torch.no_grad():
        expected = predictor.model.eval()(inputs)
    assert got.shape == expected.shape
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert float((got - expected).abs().max()) < 1e-4


def test_onnx_round_trip_on_photos_with_dynamic_batch(tmp_path: Path, resnet18_file: Path,
                                                      photos: list[Path]) -> None:
    predictor = load_predictor(resnet18_file)
    out, check = export_model(predictor, tmp_path / "r18.onnx", "onnx", images=photos)
    assert check is not None and check.runtime == "onnxruntime" and check.top1_agree == 3
    inputs = photo_batch(predictor, photos)
    for batch in (inputs[:1], inputs):  # batch 1 and batch 3 through the same file
        check_against_pytorch(predictor, run_exported(out, "onnx", batch), batch)
    meta = read_metadata(out)
    assert json.loads(meta["resnets.preprocess"]) == predictor.preprocess.to_json()
    assert json.loads(meta["resnets.preprocess"])["crop"] == 224
    assert len(json.loads(meta["resnets.classes"])) == 1000 and meta["resnets.model"] == "resnet18"
    assert [p.name for p in tmp_path.iterdir()] == ["r18.onnx"]  # no temporary file left behind


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip_with_dynamic_batch(tmp_path: Path, resnet18_file: Path, photos: list[Path]) -> None:
    predictor = load_predictor(resnet18_file)
    out, check = export_model(predictor, tmp_path / "r18.pt", "torchscript", images=photos)
    assert check is not None and check.runtime == "torch.jit"
    module = torch.jit.load(str(out))
    inputs = photo_batch(predictor, photos)
    with torch.no_grad():
        for batch in (inputs[:1], inputs):
            check_against_pytorch(predictor, module(batch), batch)
    assert json.loads(read_metadata(out)["resnets.preprocess"])["mean"] == [0.485, 0.456, 0.406]


def test_failed_verification_writes_nothing(tmp_path: Path, resnet18_file: Path, photos: list[Path]) -> None:
    predictor = load_predictor(resnet18_file)
    with pytest.raises(ExportError, match="verification failed"):
        export_model(predictor, tmp_path / "r18.onnx", "onnx", images=photos, atol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_cifar_onnx(tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture) -> None:
    weights = resnets.save_weights(resnets.create_model("resnet20").eval(), tmp_path / "r20.pt",
                                   {"preprocess": {"kind": "cifar", "size": 32, "mean": [0.5, 0.5, 0.5], "std": None}})
    out = tmp_path / "exported" / "r20.onnx"
    code = main(["export", "--pretrained", str(weights), "--format", "onnx", "--out", str(out), "--opset", "17",
                 "--verify-images", *map(str, photos)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "verified: onnxruntime: 3/3 top-1 agree" in printed and "centre crop 32" in printed
    assert json.loads(read_metadata(out)["resnets.preprocess"])["mean"] == [0.5, 0.5, 0.5]
    assert run_exported(out, "onnx", torch.zeros(5, 3, 32, 32)).shape == (5, 10)


def test_export_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--pretrained", str(tmp_path / "missing.pt"), "--format", "onnx",
                 "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.pt does not exist" in err


def test_onnxruntime_sessions_do_not_spin_after_a_run() -> None:
    """Spinning workers take the cores from the PyTorch code that runs next (see ort_session's docstring)."""
    pytest.importorskip("onnxruntime")
    from resnets.deploy.onnx import onnx_bytes, ort_session

    model = resnets.create_model("resnet8").eval()
    session = ort_session(onnx_bytes(model, torch.zeros(1, 3, 32, 32)), threads=2)
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
