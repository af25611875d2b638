"""timm's pre-activation ResNetV2 (BatchNorm) onto our preact_resnet*: same logits after renaming, and one clear
error for the timm variants whose architecture differs from ours (deep stem, GroupNorm/BiT, ...)."""

from __future__ import annotations

import pytest
import torch

import resnets
from resnets.models.weights import IncompatibleWeightsError

timm = pytest.importorskip("timm")


def with_batch_statistics(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BN affine parameters and running statistics from a few random batches, then eval mode: a BN mapped
    onto the wrong one (or weight swapped with bias) changes the logits."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 32, 32))
    return model.eval()


def assert_same_logits(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0 and (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize(("timm_name", "ours_name"), [("resnetv2_18", "preact_resnet18"),
                                                      ("resnetv2_50", "preact_resnet50")])
def test_timm_resnetv2_maps_onto_preact_resnet_with_identical_logits(timm_name: str, ours_name: str) -> None:
    if timm_name not in timm.list_models("resnetv2*"):
        pytest.skip(f"timm {timm.__version__} has no {timm_name} (the basic-block ResNetV2 came in 2025)")
    reference = with_batch_statistics(timm.create_model(timm_name, pretrained=False, num_classes=10), seed=1)
    state = reference.state_dict()
    spec = resnets.infer_spec(state)
    assert (spec.name, spec.preact, spec.shortcut, spec.stride_in_1x1, spec.num_classes) == (
        ours_name, True, "B", False, 10)
    ours = resnets.create_model(ours_name, num_classes=10, stride_in_1x1=False)
    resnets.import_state_dict(ours, state).eval()  # strict: every name and shape checked
    assert_same_logits(ours, reference)


def test_timm_resnetv2_file_loads_as_preact_resnet(tmp_path) -> None:
    reference = with_batch_statistics(timm.create_model("resnetv2_50", pretrained=False), seed=2)
    path = tmp_path / "resnetv2_50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = resnets.load_model(path).eval()
    assert model.spec.name == "preact_resnet50" and model.spec.num_classes == 1000
    assert_same_logits(model, reference)


@pytest.mark.slow
def test_timm_resnetv2_depth_200_maps_too() -> None:
    """timm registers no resnetv2_200; its ResNetV2 class built with the follow-up's stages is our preact_resnet200."""
    from timm.layers import BatchNormAct2d, create_conv2d
    from timm.models.resnetv2 import ResNetV2

    reference = ResNetV2(layers=[3, 24, 36, 3], num_classes=5, conv_layer=create_conv2d, norm_layer=BatchNormAct2d)
    reference = with_batch_statistics(reference, seed=3)
    model = resnets.create_model("preact_resnet200", num_classes=5, stride_in_1x1=False)
    resnets.import_state_dict(model, reference.state_dict()).eval()
    assert_same_logits(model, reference)


@pytest.mark.parametrize(("timm_name", "difference"), [
    ("resnetv2_50d", r"deep 3x3 stem"),
    ("resnetv2_50x1_bit", r"no BatchNorm running statistics \(GroupNorm with weight-standardised"),
    ("resnetv2_50d_frn", r"deep 3x3 stem"),
])
def test_timm_variants_with_another_architecture_are_refused(timm_name: str, difference: str) -> None:
    state = timm.create_model(timm_name, pretrained=False, num_classes=10).state_dict()
    with pytest.raises(IncompatibleWeightsError, match=difference):
        resnets.infer_spec(state)
    with pytest.raises(ValueError, match=difference):
        resnets.import_state_dict(resnets.create_model("preact_resnet50", num_classes=10, stride_in_1x1=False), state)


def test_timm_resnetv2_into_a_stride_in_1x1_model_is_refused() -> None:
    state = timm.create_model("resnetv2_50", pretrained=False, num_classes=10).state_dict()
    with pytest.raises(ValueError, match=r"stride the 3x3; build preact_resnet50 with stride_in_1x1=False"):
        resnets.import_state_dict(resnets.create_model("preact_resnet50", num_classes=10), state)
