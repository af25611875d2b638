"""Fig. 7 layer responses: the std of exactly the tensors the paper describes (after BN, before addition/ReLU),
checked against values computed by hand on a two-block net; then the CLI on real weight files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets import create_model, save_weights
from resnets.analysis.responses import conv_bn_pairs, layer_responses, response_verdicts
from resnets.cli import main
from resnets.data.cifar import load_cifar
from resnets.data.decoded import per_pixel_mean, spread_indices
from resnets.models.blocks import BasicBlock, conv3x3


class TwoBlockNet(nn.Module):
    """Stem + an identity block + a downsampling block with a projection (its 1x1 conv and BN are not 3x3 layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 4)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.block1 = BasicBlock(4, 4, shortcut="A")
        self.block2 = BasicBlock(4, 8, stride=2, shortcut="B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(self.relu(self.bn1(self.conv1(x)))))


def randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that each BN output has its own std and mean."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def population_std(parts: list[torch.Tensor]) -> float:
    return torch.cat([p.flatten() for p in parts]).double().std(correction=0).item()


def test_two_block_net_matches_hand_computed_stds() -> None:
    torch.manual_seed(0)
    net = randomised(TwoBlockNet())
    generator = torch.Generator().manual_seed(1)
    # Batches of different sizes and scales: an average of per-batch stds would not match the pooled one.
    batches = [(torch.randn(5, 3, 8, 8, generator=generator), None),
               (3 * torch.randn(2, 3, 8, 8, generator=generator) + 1, None)]
    relu = nn.functional.relu
    expected: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for x, _ in batches:
            stem = net.bn1(net.conv1(x))
            h = relu(stem)
            b1 = net.block1
            b1_1 = b1.bn1(b1.conv1(h))
            b1_2 = b1.bn2(b1.conv2(relu(b1_1)))
            h1 = relu(b1_2 + h)
            b2 = net.block2
            b2_1 = b2.bn1(b2.conv1(h1))
            b2_2 = b2.bn2(b2.conv2(relu(b2_1)))
            # Hook placement: what goes into each block's addition is its residual function's output.
            assert torch.allclose(b1_2, b1.residual_function(h)) and torch.allclose(b2_2, b2.residual_function(h1))
            for name, value in (("bn1", stem), ("block1.bn1", b1_1), ("block1.bn2", b1_2),
                                ("block2.bn1", b2_1), ("block2.bn2", b2_2)):
                expected.setdefault(name, []).append(value)

    output_before = net(batches[0][0]).clone()
    responses = layer_responses(net, batches)
    assert [r.name for r in responses] == list(expected)  # network order; the projection's BN is left out
    assert [r.conv for r in responses] == ["conv1", "block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2"]
    assert [r.index for r in responses] == [1, 2, 3, 4, 5]
    for response in responses:
        parts = expected[response.name]
        assert response.std == pytest.approx(population_std(parts), rel=1e-9, abs=1e-12), response.name
        assert response.elements == sum(p.numel() for p in parts)
    # The test can tell the pooled std from an average of per-batch stds.
    batch_average = {r.name: sum(p.double().std(correction=0).item() for p in expected[r.name]) / 2 for r in responses}
    assert max(abs(r.std - batch_average[r.name]) for r in responses) > 0.05
    # The hooks observe without changing anything, and are gone afterwards.
    assert torch.equal(net(batches[0][0]), output_before)
    assert all(not m._forward_hooks for m in net.modules())


def test_pairs_in_plain_residual_and_bottleneck_nets() -> None:
    resnet, plain = create_model("resnet8"), create_model("plain8")
    expected = ["bn1"] + [f"layer{s}.0.bn{i}" for s in (1, 2, 3) for i in (1, 2)]
    assert [bn for _c, bn in conv_bn_pairs(resnet)] == expected
    assert [bn for _c, bn in conv_bn_pairs(plain)] == expected
    with torch.device("meta"):
        resnet50 = create_model("resnet50", shortcut="C")
    pairs = conv_bn_pairs(resnet50)  # the 7x7 stem, 1x1 convs and projections are not 3x3 layers
    assert len(pairs) == 16 and all(c.endswith("conv2") and b.endswith("bn2") for c, b in pairs)


def test_fig7_verdicts_check_every_resnet_depth() -> None:
    stds = {"resnet20": 1.0, "resnet56": 0.9, "resnet110 (runs/x)": 0.95, "plain20": 1.2, "plain56": 0.8}
    assert response_verdicts(stds) == [
        "resnet20 responds less than plain20: yes (mean std 1.000 vs 1.200)",
        "resnet56 responds less than plain56: no (mean std 0.900 vs 0.800)",
        "deeper ResNet has smaller responses, at every depth: no "
        "(resnet20 1.000 -> resnet56 0.900 -> resnet110 (runs/x) 0.950)"]  # 110 above 56 breaks the order
    stds["resnet110 (runs/x)"] = 0.85
    assert response_verdicts(stds)[-1].startswith("deeper ResNet has smaller responses, at every depth: yes")
    assert response_verdicts({"resnet20": 1.0, "vgg": 2.0}) == []  # one ResNet, no plain twin: nothing to claim


def test_spread_indices_take_every_class_of_a_sorted_folder() -> None:
    assert spread_indices(10_000, 1000).tolist()[:3] == [0, 10, 20]
    assert len(set((spread_indices(10_000, 1000) // 1000).tolist())) == 10
    assert spread_indices(50, None).tolist() == list(range(50))


def test_cli_writes_csv_and_both_figures(cifar10_jpeg_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    test = load_cifar(cifar10_jpeg_dir, "cifar10", "test")  # any mean image will do: only the plumbing is tested
    meta = {"dataset": "cifar10", "preprocess": {"mean_image": per_pixel_mean(test.images[:2000])}}
    files = []
    for name in ("plain8", "resnet8"):
        torch.manual_seed(0)
        files.append(save_weights(create_model(name), tmp_path / f"{name}.pt", meta))
    out = tmp_path / "responses"
    assert main(["analyze", "responses", "--pretrained", str(files[0]), "--pretrained", str(files[1]), "--data",
                 str(cifar10_jpeg_dir), "--subset", "200", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "responses.csv").read_text().splitlines()))
    assert [r["model"] for r in rows] == ["plain8"] * 7 + ["resnet8"] * 7
    assert [int(r["layer_index"]) for r in rows[:7]] == list(range(1, 8))
    assert [r["layer_name"] for r in rows[:2]] == ["bn1", "layer1.0.bn1"]
    assert all(float(r["std"]) > 0 for r in rows)
    for png in ("responses_by_layer.png", "responses_sorted.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    provenance = json.loads((out / "responses.json").read_text())
    assert provenance["command"].startswith("resnets analyze responses --pretrained")
    assert provenance["test_images"] == 200
    capsys.readouterr()
    assert main(["analyze", "responses", "--pretrained", str(tmp_path / "nowhere.pt"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "nowhere.pt" in error and len(error.strip().splitlines()) == 1
