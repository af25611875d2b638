"""Every weight file shipped in the package loads with `create_model("MODEL.TAG")` and reproduces its stated
accuracy on a 1,000-image test subset of the CIFAR-10 JPEG copy.

The stated 10,000-image error cannot be held to 1 point on 1,000 images (its standard error alone is ~0.9 points
at 10% error), so `resnets analyze ship` stores the error on a fixed 1,000-image subset (100 images per class,
`spread_indices`) beside it: that number must be reproduced within 1 point, and the 10,000-image one within
sampling error. Every shipped net on every test image: test_shipped_check.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnets import create_model, list_pretrained, preprocess
from resnets.analysis.ship import subset_error
from resnets.data.folder import read_image
from resnets.deploy.export import run_exported

from .test_train import run_cli

SHIPPED = list_pretrained()
NAMES = sorted(n for n in SHIPPED if SHIPPED[n]["dataset"] != "imagenette") or [pytest.param(
    None, marks=pytest.mark.skip(reason="no weights shipped yet (resnets analyze ship RUN_DIR puts them in "
                                        "src/resnets/assets/weights)"))]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_reach_their_stated_accuracy(name: str, cifar10_jpeg_dir: Path) -> None:
    stated = SHIPPED[name]
    check = stated["check_subset"]
    if "JPEG" not in check.get("source", ""):
        pytest.skip(reason=f"{name}'s check subset was measured on {check.get('source')}, not the JPEG copy here")
    model = create_model(name)
    measured = subset_error(model, cifar10_jpeg_dir, images=check["images"], device="cpu")
    assert measured["images"] == check["images"] == 1000
    assert abs(measured["top1_error"] - check["top1_error"]) <= 1.0, (name, measured, check)
    p = stated["test_top1_error"] / 100
    standard_error = 100 * math.sqrt(p * (1 - p) / check["images"])
    assert abs(measured["top1_error"] - stated["test_top1_error"]) <= 1.0 + 4 * standard_error, (name, measured)


def test_unknown_tag_names_what_ships() -> None:
    model_name = next((meta["model"] for meta in SHIPPED.values()), None)
    if model_name is None:
        pytest.skip(reason="no weights shipped yet")
    with pytest.raises(ValueError, match=f"no shipped weights {model_name}.nosuch; {model_name} ships {model_name}."):
        create_model(model_name, pretrained="nosuch")


def test_shipped_resnet20_gives_one_answer_through_eval_predict_and_onnx(cifar10_jpeg_dir: Path,
                                                                         tmp_path: Path) -> None:
    """500 real test images (50 per class) through `resnets eval`, `resnets predict` and the ONNX export in
    onnxruntime: the same top-1 class for every image, so the same error, near the error the weights state."""
    if "resnet20.paper" not in SHIPPED:
        pytest.skip(reason="resnet20 is not shipped")
    folder = tmp_path / "cifar-500"
    files = []
    for class_dir in sorted((cifar10_jpeg_dir / "test").iterdir()):
        (folder / "test" / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:50]:
            (folder / "test" / class_dir.name / image.name).symlink_to(image.resolve())
            files.append(folder / "test" / class_dir.name / image.name)
    per_image = tmp_path / "eval.jsonl"
    evaluated = run_cli("eval", "--pretrained", "resnet20.paper", "--data", str(folder), "--predictions",
                        str(per_image), "--json")
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in per_image.read_text().splitlines()]
    by_eval = [row["top1"] for row in rows]
    predicted = run_cli("predict", *map(str, files), "--pretrained", "resnet20", "--topk", "1", "--json")
    by_predict = [json.loads(line)["top"][0]["index"] for line in predicted.stdout.splitlines()]
    assert len(by_eval) == 500 and by_predict == by_eval
    onnx_file = tmp_path / "resnet20.onnx"
    run_cli("export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--out", str(onnx_file))
    model = create_model("resnet20", pretrained=True)  # the default tag, paper, like the two commands above
    inputs = preprocess(model, torch.stack([read_image(path) for path in files]))
    by_onnx = run_exported(onnx_file, "onnx", inputs).argmax(1).tolist()
    assert by_onnx == by_eval
    wrong = sum(row["top1"] != row["label"] for row in rows)
    assert report["top1_error"] == pytest.approx(100 * wrong / 500)
    assert abs(report["top1_error"] - SHIPPED["resnet20.paper"]["test_top1_error"]) <= 3.0, report
