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
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("resnet", "plain", "preact_"))}
    assert set(resnets.list_models()) <= set(rows)
    for depth, paper in {18: "1.8", 34: "3.6", 50: "3.8", 101: "7.6", 152: "11.3"}.items():
        assert paper in rows[f"resnet{depth}"]
    assert "60,192,808" in rows["resnet152"] and "269,722" in rows["resnet20"]
    assert "1,703,258" in rows["preact_resnet164"] and rows["preact_resnet200"][-2] == "-"  # no paper FLOPs for it


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


# He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016): CIFAR-10 parameter counts computed from the
# architecture (the paper rounds them to 1.7M and 10.2M).
@pytest.mark.parametrize(("name", "params"), [("preact_resnet164", 1_703_258), ("preact_resnet1001", 10_327_706)])
def test_preact_cifar_param_counts_exact(name: str, params: int) -> None:
    with torch.device("meta"):
        model = resnets.create_model(name)
    assert model.spec.block == "bottleneck" and model.spec.preact
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", ["preact_resnet164", "resnet164", "preact_resnet110", "preact_resnet18",
                                  "preact_resnet50", "preact_resnet200", "resnet1001", "preact_resnet1001"])
def test_followup_models_forward_shapes(name: str) -> None:
    # Train mode: BN uses batch statistics. (In eval mode with untrained running statistics a post-activation
    # ResNet-1001 overflows: 333 residual additions of He-initialised branches, nothing normalising them.)
    model = resnets.create_model(name, num_classes=7).train()
    size = model.spec.input_size if model.spec.family == "cifar" else 64
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all() and model.spec.name == name


def test_followup_models_are_listed() -> None:
    listed = resnets.list_models()
    assert {"resnet164", "resnet1001", "preact_resnet164", "preact_resnet1001"} <= set(listed)
    assert {f"preact_resnet{d}" for d in (18, 34, 50, 101, 152, 200)} <= set(listed)


def test_preact_block_order_and_clean_identity_path() -> None:
    """BN -> ReLU -> conv in every unit, a projection on the pre-activated input, nothing after the addition."""
    block = resnets.create_model("preact_resnet164").layer2[0]
    assert block.preact and block.bn1.num_features == block.conv1.in_channels == 64
    x = torch.randn(2, 64, 16, 16)
    activated = torch.relu(block.bn1.eval()(x))
    block.eval()
    out = block.conv1(activated)
    out = block.conv2(torch.relu(block.bn2(out)))
    out = block.conv3(torch.relu(block.bn3(out)))
    with torch.no_grad():
        assert torch.allclose(block(x), out + block.downsample(activated), atol=1e-5)
        # zero_init_residual zeroes each pre-activation block's last conv: the block starts as the identity
        identity = resnets.create_model("preact_resnet164", zero_init_residual=True).layer2[1].eval()
        y = torch.randn(2, 128, 16, 16)
        assert torch.equal(identity(y), y)


def test_preact_nets_fuse_without_folding_bn_into_the_wrong_conv() -> None:
    model = resnets.create_model("preact_resnet164").eval()
    for m in model.modules():  # non-trivial BN statistics, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(resnets.fuse_for_inference(model, channels_last=False)(x), model(x), atol=1e-4)


@pytest.mark.parametrize("name", ["preact_resnet164", "resnet164"])
def test_activation_checkpointing_changes_memory_not_results(name: str) -> None:
    """Same loss, gradients and BN running statistics after one training step, with and without recomputation."""
    states = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = resnets.create_model(name, activation_checkpointing=checkpointing).train()
        inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        loss = torch.nn.functional.cross_entropy(model(inputs), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        states.append((loss.detach(), {k: p.grad for k, p in model.named_parameters()},
                       {k: b.clone() for k, b in model.named_buffers()}))
    (loss_a, grads_a, buffers_a), (loss_b, grads_b, buffers_b) = states
    assert torch.equal(loss_a, loss_b)
    assert all(torch.allclose(grads_a[k], grads_b[k], atol=1e-6, rtol=1e-4) for k in grads_a)
    assert all(torch.equal(buffers_a[k], buffers_b[k]) for k in buffers_a)  # updated once, not twice
