"""BN folding: the fused model computes what the eval-mode model computes, for every architecture of the paper."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resnets
from resnets.deploy.fuse import compile_for_inference, fold_batchnorms_, fold_conv_bn, fuse_for_inference

pytestmark = pytest.mark.usefixtures("one_thread")


# Relative to the largest logit: random BN statistics give logits of very different scales across depths.
RTOL = 1e-4


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding has something to fold."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def assert_same_logits(model: nn.Module, fused: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, got = model(x), fused(x)
    scale = max(1.0, float(expected.abs().max()))
    assert float((got.float() - expected).abs().max()) <= RTOL * scale
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_fused_equals_unfused_imagenet(depth: int) -> None:
    model = randomize_bn(resnets.create_model(f"resnet{depth}"), seed=depth)
    bns = count(model, nn.BatchNorm2d)
    fused = fuse_for_inference(model)
    assert count(fused, nn.BatchNorm2d) == 0
    # Every BN became an Identity, the projection shortcuts' included.
    assert count(fused, nn.Identity) - count(model, nn.Identity) == bns
    assert all(m.bias is not None for m in fused.modules() if isinstance(m, nn.Conv2d))
    assert fused.layer2[0].downsample[0].bias is not None and isinstance(fused.layer2[0].downsample[1], nn.Identity)
    assert fused.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    assert_same_logits(model, fused, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))


def test_fused_equals_unfused_cifar_option_a() -> None:
    model = randomize_bn(resnets.create_model("resnet20"))  # option A: zero-padding shortcuts, no projection BN
    fused = fuse_for_inference(model)
    assert count(fused, nn.BatchNorm2d) == 0
    assert_same_logits(model, fused, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_fused_equals_unfused_option_c(name: str) -> None:
    model = randomize_bn(resnets.create_model(name, shortcut="C"), seed=3)
    # Option C projects in every block: each one must fold.
    projections = sum(1 for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                      and isinstance(m[1], nn.BatchNorm2d))
    assert projections == sum(model.spec.stages)
    fused = fuse_for_inference(model)
    assert count(fused, nn.BatchNorm2d) == 0
    assert_same_logits(model, fused, torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)))


def test_plain_net_and_torchvision_model_fold() -> None:
    plain = randomize_bn(resnets.create_model("plain18"))
    assert_same_logits(plain, fuse_for_inference(plain), torch.randn(1, 3, 64, 64))
    tv = randomize_bn(torchvision.models.resnet18(weights=None))  # same attribute names: folds by structure
    fused = fuse_for_inference(tv)
    assert count(fused, nn.BatchNorm2d) == 0
    assert_same_logits(tv, fused, torch.randn(1, 3, 64, 64))


def test_fold_conv_bn_matches_sequence_with_conv_bias() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(6)))[0]
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_fuse_leaves_original_untouched_and_refuses_training_mode() -> None:
    model = resnets.create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_for_inference(model)
    assert model.training and count(model, nn.BatchNorm2d) == 19
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms_(model)


def test_bf16_weights_accept_fp32_input() -> None:
    model = randomize_bn(resnets.create_model("resnet20"))
    fused = fuse_for_inference(model, dtype=torch.bfloat16)
    assert fused.conv1.weight.dtype == torch.bfloat16
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        got, expected = fused(x), model(x)
    assert got.dtype == torch.bfloat16
    assert float((got.float() - expected).abs().max()) < 0.1 * max(1.0, float(expected.abs().max()))


def test_jit_backend_matches_and_rejects_unknown_backend() -> None:
    model = randomize_bn(resnets.create_model("resnet20"))
    x = torch.randn(3, 3, 32, 32)
    compiled = compile_for_inference(model, "jit", example=x)
    assert_same_logits(model, compiled, x)
    with pytest.raises(ValueError, match="valid: eager, jit, inductor"):
        compile_for_inference(model, "tensorrt")  # type: ignore[arg-type]


def test_check_catches_bn_applied_before_conv() -> None:
    class PreActivation(nn.Module):  # BN before its conv: folding by name would be wrong, the check must say so
        def __init__(self) -> None:
            super().__init__()
            self.bn1 = nn.BatchNorm2d(3)
            self.conv1 = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv1(self.bn1(x))

    model = randomize_bn(PreActivation())
    with pytest.raises(ValueError, match="conv -> BN order"):
        fuse_for_inference(model)
    fuse_for_inference(model, check=False)  # the caller's own responsibility then
