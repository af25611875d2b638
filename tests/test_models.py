"""The model zoo against the paper's own numbers (Table 1, Table 3 options, Table 6) and torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision

import resnets
from resnets.models.blocks import ZeroPadShortcut

IMAGENET_PARAMS_B = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
IMAGENET_PARAMS_A_M = {18: 11.52, 34: 21.62, 50: 22.78, 101: 41.77, 152: 57.42}
IMAGENET_PARAMS_C_M = {18: 12.04, 34: 22.72, 50: 40.13, 101: 76.98, 152: 107.34}
GMACS_V1 = {18: 1.81, 34: 3.66, 50: 3.86, 101: 7.57, 152: 11.28}
GMACS_V15 = {18: 1.81, 34: 3.66, 50: 4.09, 101: 7.80, 152: 11.51}
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", IMAGENET_PARAMS_B)
def test_imagenet_param_counts_option_b_exact(depth: int) -> None:
    assert n_params(resnets.create_model(f"resnet{depth}")) == IMAGENET_PARAMS_B[depth]


@pytest.mark.parametrize("depth", IMAGENET_PARAMS_B)
def test_imagenet_param_counts_options_a_and_c(depth: int) -> None:
    a = n_params(resnets.create_model(f"resnet{depth}", shortcut="A"))
    c = n_params(resnets.create_model(f"resnet{depth}", shortcut="C"))
    assert round(a / 1e6, 2) == IMAGENET_PARAMS_A_M[depth]
    assert round(c / 1e6, 2) == IMAGENET_PARAMS_C_M[depth]


@pytest.mark.parametrize("depth", CIFAR_PARAMS)
def test_cifar_param_counts_exact(depth: int) -> None:
    assert n_params(resnets.create_model(f"resnet{depth}")) == CIFAR_PARAMS[depth]


@pytest.mark.parametrize("depth", IMAGENET_PARAMS_B)
def test_multiply_adds_within_one_percent_of_paper(depth: int) -> None:
    v1 = resnets.complexity(resnets.create_model(f"resnet{depth}"), 224).gmacs
    v15 = resnets.complexity(resnets.create_model(f"resnet{depth}", stride_in_1x1=False), 224).gmacs
    assert abs(v1 - GMACS_V1[depth]) / GMACS_V1[depth] < 0.01
    assert abs(v15 - GMACS_V15[depth]) / GMACS_V15[depth] < 0.01


def test_complexity_per_layer_sums_to_total_and_counts_the_stem_by_hand() -> None:
    cost = resnets.complexity(resnets.create_model("resnet18"))
    assert sum(layer.macs for layer in cost.layers) == cost.macs
    stem = cost.layers[0]
    assert stem.name == "conv1" and stem.output_shape == (64, 112, 112)
    assert stem.macs == 64 * 112 * 112 * 3 * 7 * 7
    assert cost.layers[-1].name == "fc" and cost.layers[-1].macs == 512 * 1000


def test_models_cli_table_shows_papers_flops(capsys: pytest.CaptureFixture[str]) -> None:
    from resnets.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("resnet", "plain"))}
    assert set(resnets.list_models()) <= set(rows)
    for depth, paper in {18: "1.8", 34: "3.6", 50: "3.8", 101: "7.6", 152: "11.3"}.items():
        assert paper in rows[f"resnet{depth}"]
    assert "60,192,808" in rows["resnet152"] and "269,722" in rows["resnet20"]


@pytest.mark.parametrize("depth", [18, 50, 152])
def test_torchvision_weights_import_gives_identical_outputs(depth: int) -> None:
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    for m in reference.modules():  # non-trivial BN statistics so that a mis-mapped BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    ours = resnets.create_model(f"resnet{depth}", stride_in_1x1=False)
    resnets.import_state_dict(ours, reference.state_dict()).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() < 1e-5
    assert resnets.infer_spec(reference.state_dict()).depth == depth


def test_torchvision_file_loads_as_v15(tmp_path) -> None:
    reference = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50-tv.pth"
    torch.save(reference.state_dict(), path)
    model = resnets.load_model(path).eval()
    assert model.spec.depth == 50 and model.spec.stride_in_1x1 is False and model.spec.shortcut == "B"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_import_with_wrong_shapes_or_shortcut_gives_one_clear_error() -> None:
    state_b = resnets.create_model("resnet34").state_dict()
    with pytest.raises(ValueError, match=r"shortcut option differs"):
        resnets.import_state_dict(resnets.create_model("resnet34", shortcut="A"), state_b)
    with pytest.raises(ValueError, match=r"another shape.*fc.weight"):
        resnets.import_state_dict(resnets.create_model("resnet34", num_classes=10), state_b)


def test_option_a_is_parameter_free_and_pads_zeros() -> None:
    model = resnets.create_model("resnet20")
    shortcuts = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2  # conv3_1 and conv4_1 only
    assert all(not list(s.parameters()) for s in shortcuts)
    x = torch.randn(2, 16, 8, 8)
    y = shortcuts[0](x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    # No projection anywhere in an option-A CIFAR net: its parameters are the paper's 269,722.
    assert not any(".downsample." in k for k in model.state_dict())


def test_option_a_padded_channels_are_zero_before_the_addition() -> None:
    model = resnets.create_model("resnet20").eval()
    block = model.layer2[0]
    seen = {}
    block.downsample.register_forward_hook(lambda _m, _i, out: seen.setdefault("shortcut", out))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert seen["shortcut"].shape[1] == 32
    assert torch.count_nonzero(seen["shortcut"][:, 16:]) == 0


def test_option_b_and_c_place_projections_as_the_paper_says() -> None:
    def projections(model: torch.nn.Module) -> int:
        return sum(k.endswith("downsample.0.weight") for k in model.state_dict())

    assert projections(resnets.create_model("resnet34", shortcut="B")) == 3
    assert projections(resnets.create_model("resnet50", shortcut="B")) == 4  # conv2_1 widens 64 -> 256
    assert projections(resnets.create_model("resnet34", shortcut="C")) == 16
    assert projections(resnets.create_model("resnet56", shortcut="C")) == 27


def test_plain_nets_have_no_shortcut_and_do_not_add_the_input() -> None:
    plain = resnets.create_model("plain20").eval()
    assert all(not getattr(m, "residual", False) for m in plain.modules())
    assert all(getattr(m, "downsample", None) is None for m in plain.modules())
    block = plain.layer1[0]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(block.residual_function(x)))
    assert resnets.create_model("plain34").spec.shortcut == "none"


def test_v1_puts_the_stride_on_the_first_1x1() -> None:
    v1 = resnets.create_model("resnet50").layer2[0]
    v15 = resnets.create_model("resnet50", stride_in_1x1=False).layer2[0]
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)


def test_he_init_and_zero_init_residual() -> None:
    torch.manual_seed(0)
    conv = resnets.create_model("resnet56").layer2[0].conv1  # 3x3, 16 -> 32: fan_in 9 * 16, fan_out 9 * 32
    assert abs(conv.weight.std().item() - (2 / (9 * 32)) ** 0.5) < 0.004  # fan-out (torchvision), 0.083
    conv = resnets.create_model("resnet56", init_mode="fan_in").layer2[0].conv1
    assert abs(conv.weight.std().item() - (2 / (9 * 16)) ** 0.5) < 0.004  # fan-in (Caffe's MSRAFiller), 0.118
    zero = resnets.create_model("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for stage in (zero.layer1, zero.layer4) for b in stage)


def test_feature_api_strides_and_channels() -> None:
    model = resnets.create_model("resnet50").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
    assert list(feats) == ["conv2", "conv3", "conv4", "conv5", "pool"]
    assert [tuple(f.shape[1:]) for f in list(feats.values())[:4]] == [
        (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert feats["pool"].shape == (1, 2048)
    assert [i["stride"] for i in model.feature_info] == [4, 8, 16, 32]
    cifar = resnets.create_model("resnet20")
    assert [i["stride"] for i in cifar.feature_info] == [1, 2, 4]


@pytest.mark.parametrize("name", [n for n in resnets.list_models() if n != "resnet1202"])
def test_every_model_runs_forward_and_backward(name: str) -> None:
    model = resnets.create_model(name, num_classes=7)
    size = 32 if model.spec.family == "cifar" else 64
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet1202_builds_and_takes_one_step() -> None:
    model = resnets.create_model("resnet1202")
    assert len([m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]) == 1201
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = model.fc.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.fc.weight)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: resnets.create_model("resnet19"), r"unknown model 'resnet19'; valid names: resnet18"),
        (lambda: resnets.create_model("cifar_resnet21"), r"unknown model"),
        (lambda: resnets.create_model("resnet34", shortcut="D"), r"valid options: A, B, C, none"),
        (lambda: resnets.create_model("plain34", shortcut="B"), r"plain network"),
        (lambda: resnets.create_model("resnet20", stride_in_1x1=False), r"basic blocks"),
    ],
)
def test_bad_names_and_options_give_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_cifar_alias_reaches_depths_that_collide_with_table_1() -> None:
    assert resnets.create_model("cifar_resnet50").spec.family == "cifar"
    assert resnets.create_model("resnet50").spec.family == "imagenet"
    assert resnets.create_model("resnet8").spec.stages == (1, 1, 1)


def test_fcn_form_equals_pooled_form() -> None:
    model = resnets.create_model("resnet18").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        scores = model.forward_fcn(x)
        assert scores.shape == (1, 1000, 7, 7)
        assert torch.allclose(scores.mean((2, 3)), model(x), atol=1e-4)
