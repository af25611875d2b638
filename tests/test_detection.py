"""Detection backbones (Sec. 4.3): torchvision checkpoint compatibility on real photos, the C4 form's conv5_x head,
frozen BN and trainable stages, and a tiny end-to-end run that resumes bit-exactly and predicts boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

import resnets
from resnets.analysis.report import write_report
from resnets.cli import main
from resnets.data.folder import read_image
from resnets.data.paths import datasets_root
from resnets.detection import (
    DetectionOptions,
    DetectionRecipe,
    build_detector,
    make_synthetic_detection,
    train_detector,
)
from resnets.detection.backbones import ResNetC4Head, freeze_batchnorm
from resnets.detection.experiment import run_detection_series

from .conftest import resume_detection_at_iteration_2, skip_without_data

PHOTOS = ("n01440764_tench.JPEG", "n01530575_brambling.JPEG")
SMALL = {"min_size": 224, "max_size": 320, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100,
         "box_score_thresh": 0.0}


def real_photos() -> list[torch.Tensor]:
    folder = datasets_root() / "imagenet-sample"
    if not folder.is_dir():
        skip_without_data(f"needs the real photos of {folder}")
    return [read_image(folder / name).float() / 255 for name in PHOTOS]


def randomise_batchnorm(model: torch.nn.Module) -> None:
    """Statistics and affine parameters away from 0/1, so that a BN loaded into the wrong place changes the boxes."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for tensor, low, high in ((m.weight.data, 0.5, 1.5), (m.bias.data, -0.2, 0.2),
                                      (m.running_mean, -0.1, 0.1), (m.running_var, 0.5, 2.0)):
                tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))


@pytest.mark.parametrize(("frozen_bn", "kind"), [(False, "faster_rcnn"), (True, "faster_rcnn"), (False, "mask_rcnn")])
def test_torchvision_resnet50_fpn_detectors_load_strictly_and_give_the_same_boxes(frozen_bn: bool, kind: str) -> None:
    images = real_photos()
    torch.manual_seed(0)
    make = maskrcnn_resnet50_fpn if kind == "mask_rcnn" else fasterrcnn_resnet50_fpn
    reference = make(weights=None, weights_backbone=None, **SMALL).eval()
    randomise_batchnorm(reference)
    ours = build_detector(resnets.create_model("resnet50", stride_in_1x1=False), num_classes=91, form="fpn",
                          kind=kind, frozen_bn=frozen_bn, **SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        expected, got = reference(images), ours.eval()(images)
    for want, have in zip(expected, got, strict=True):
        assert len(want["boxes"]) == len(have["boxes"]) > 10
        if not frozen_bn:  # the same operations in the same order: the same detections
            assert torch.equal(want["labels"], have["labels"])
            assert torch.allclose(want["boxes"], have["boxes"], atol=1e-4, rtol=0)
            assert torch.allclose(want["scores"], have["scores"], atol=1e-5, rtol=0)
            if kind == "mask_rcnn":  # the same per-pixel mask probabilities
                assert want["masks"].shape == have["masks"].shape and len(want["masks"]) == len(want["boxes"])
                assert torch.allclose(want["masks"], have["masks"], atol=1e-4, rtol=0)
            continue
        # Frozen BN folds its statistics in another order of float operations: near-tied scores may swap places,
        # so each detection is matched to one of the same class within a few thousandths of a pixel.
        assert torch.allclose(want["scores"].sort().values, have["scores"].sort().values, atol=1e-3, rtol=0)
        same_class = want["labels"][None, :] == have["labels"][:, None]
        distance = (have["boxes"][:, None, :] - want["boxes"][None, :, :]).abs().amax(-1)
        assert distance.masked_fill(~same_class, float("inf")).amin(1).max() < 0.05


def test_c4_form_shares_conv4_and_runs_conv5_per_region() -> None:
    classifier = resnets.create_model("resnet18", num_classes=10).eval()
    randomise_batchnorm(classifier)
    detector = build_detector(classifier, num_classes=11, form="c4", frozen_bn=False)
    keys = detector.state_dict().keys()
    assert any(k.startswith("backbone.layer3.") for k in keys)
    assert not any(k.startswith("backbone.layer4.") for k in keys)
    assert any(k.startswith("roi_heads.box_head.layer4.") for k in keys)
    assert detector.backbone.out_channels == 256 and detector.roi_heads.box_predictor.cls_score.in_features == 512
    # The head is the classifier's conv5_x followed by global average pooling, on 14x14 pooled regions.
    regions = torch.randn(3, 256, 14, 14)
    with torch.no_grad():
        expected = torch.flatten(classifier.avgpool(classifier.layer4(regions)), 1)
        assert torch.allclose(ResNetC4Head(classifier).eval()(regions), expected, atol=1e-5)
    photos = real_photos()
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 140.0]]), "labels": torch.tensor([3])} for _ in photos]
    losses = detector.train()(photos, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_frozen_batchnorm_keeps_the_statistics_and_only_the_top_stages_train() -> None:
    classifier = resnets.create_model("resnet18")
    randomise_batchnorm(classifier)
    detector = build_detector(classifier, num_classes=5, trainable_layers=2)
    body = detector.backbone.body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    frozen = body.layer1[0].bn1
    assert isinstance(frozen, FrozenBatchNorm2d)
    assert torch.equal(frozen.running_var, classifier.layer1[0].bn1.running_var)
    trained = {name.split(".")[0] for name, p in detector.backbone.body.named_parameters() if p.requires_grad}
    assert trained == {"layer3", "layer4"}
    assert all(p.requires_grad for p in detector.backbone.fpn.parameters())
    # The classifier handed in is left as it was.
    assert isinstance(classifier.layer1[0].bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in classifier.parameters())
    assert isinstance(freeze_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))[0], FrozenBatchNorm2d)


def test_clear_errors_for_what_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="ImageNet-family"):
        build_detector("resnet20", num_classes=3)
    with pytest.raises(ValueError, match="FPN form only"):
        build_detector("resnet18", num_classes=3, form="c4", kind="mask_rcnn")
    with pytest.raises(ValueError, match=r"0\.\.5"):
        build_detector("resnet18", num_classes=3, trainable_layers=6)
    with pytest.raises(ValueError, match="valid forms"):
        build_detector("resnet18", num_classes=3, form="c5")
    masks = build_detector("resnet18", num_classes=3, kind="mask_rcnn", min_size=128, max_size=128)
    with torch.no_grad():
        output = masks.eval()([torch.rand(3, 128, 128)])[0]
    assert "masks" in output


@pytest.fixture(scope="module")
def tiny_detection_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = datasets_root()
    if not (root / "imagenette").is_dir() or not (root / "cifar10-jpeg").is_dir():
        skip_without_data(f"needs Imagenette and CIFAR-10 under {root}")
    out = tmp_path_factory.mktemp("detection") / "data"
    make_synthetic_detection(out, train_images=8, val_images=4, seed=3, progress=False)
    return out


def test_training_resumes_bit_exactly_and_the_cli_predicts_boxes(tiny_detection_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    recipe = DetectionRecipe(iterations=4, batch_size=2, warmup_iterations=2, evaluations=1, rois_per_image=32,
                             proposals_train=100, proposals_test=50)
    whole = tmp_path / "whole"
    options = DetectionOptions(data=str(tiny_detection_data), out=str(whole), deterministic=True, log_every=1,
                               checkpoint_every=2, progress=False, recipe=recipe)
    summary = train_detector(options)
    assert summary["complete"] and summary["val_images"] == 4 and 0 <= summary["val_map_50"] <= 100
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and "val_map" in records[-1]

    # As if killed after the checkpoint at iteration 2 (kept as previous.pt when iteration 4's replaced it).
    resumed = resume_detection_at_iteration_2(options, capsys)
    assert [json.loads(line)["iteration"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4]

    photo = next((tiny_detection_data / "val").iterdir())
    assert main(["detect", "predict", str(photo), "--pretrained", str(whole), "--out", str(tmp_path / "drawn"),
                 "--threshold", "0"]) == 0
    assert "found ->" in capsys.readouterr().out
    drawn = read_image(tmp_path / "drawn" / f"{photo.stem}.png")
    assert drawn.shape == read_image(photo).shape and not torch.equal(drawn, read_image(photo))
    assert main(["detect", "eval", "--pretrained", str(whole), "--data", str(tiny_detection_data)]) == 0
    assert json.loads(capsys.readouterr().out)["map_50"] == pytest.approx(summary["val_map_50"], abs=1e-6)


def test_transfer_series_reports_a_table_curves_and_a_verdict_from_its_records(tiny_detection_data: Path,
                                                                               tmp_path: Path) -> None:
    recipe = DetectionRecipe(iterations=2, batch_size=2, warmup_iterations=1, evaluations=1, rois_per_image=32,
                             proposals_train=100, proposals_test=50)
    records = tmp_path / "records"
    run_detection_series(tmp_path / "runs", tiny_detection_data, ("plain18", "resnet18"), pretrained=None,
                         records=records, recipe=recipe, progress=False, log=lambda _: None)
    assert sorted(p.name for p in records.iterdir()) == ["plain18-s0", "resnet18-s0"]
    assert not list(records.rglob("*.pt"))  # weights and checkpoints stay in the run directories
    maps = {name: json.loads((records / f"{name}-s0" / "summary.json").read_text())["val_map"]
            for name in ("plain18", "resnet18")}
    out = tmp_path / "REPRODUCTION.md"
    write_report([], out, detection=records)
    text = out.read_text()
    assert "--detection" in text and "synthetic composition" in text and (tmp_path / "figures" /
                                                                          "detection-curves.png").is_file()
    expected = "yes" if maps["resnet18"] > maps["plain18"] else "no"
    assert f"residual backbone transfers better (resnet18 vs plain18): {expected}" in text
