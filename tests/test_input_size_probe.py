"""benchmarks/input_size_probe.py grows the centre view by real-looking content: a reflected border (the view's own
pixels mirrored at its edges), not a flat one; the flat mean border stays an option."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load_benchmark("input_size_probe")


def test_the_default_border_mirrors_the_view(probe: ModuleType) -> None:
    torch.manual_seed(0)
    view = torch.randn(2, 3, 6, 7)
    out = probe.bordered(view, 2)  # the default border
    assert out.shape == (2, 3, 10, 11)
    assert torch.equal(out[..., 2:8, 2:9], view)  # the view itself, unchanged in the middle
    # mirrored about the edge pixel, which is not repeated: columns 1, 0 are the view's columns 1, 2
    assert torch.equal(out[..., 2:8, 1], view[..., :, 1]) and torch.equal(out[..., 2:8, 0], view[..., :, 2])
    assert torch.equal(out[..., 2:8, 9], view[..., :, 5]) and torch.equal(out[..., 2:8, 10], view[..., :, 4])
    assert torch.equal(out[..., 1, 2:9], view[..., 1, :]) and torch.equal(out[..., 8, 2:9], view[..., 4, :])
    assert torch.equal(out[..., 0, 0], view[..., 2, 2])  # a corner: mirrored both ways
    assert float(out[..., :2, :].abs().min()) > 0  # no flat (zero) pixel anywhere in the border rows


def test_the_mean_border_is_zero_and_bad_borders_are_refused(probe: ModuleType) -> None:
    view = torch.randn(1, 3, 6, 6)
    flat = probe.bordered(view, 3, "mean")
    assert torch.equal(flat[..., 3:9, 3:9], view) and float(flat[..., :3, :].abs().max()) == 0
    assert probe.bordered(view, 0) is view
    with pytest.raises(ValueError, match="needs views larger than 6 px"):
        probe.bordered(view, 6)
    with pytest.raises(ValueError, match="--border must be one of"):
        probe.bordered(view, 1, "wrap")


def test_batchnorm_by_stage_replaces_one_stage_at_a_time() -> None:
    """benchmarks/batchnorm_by_stage.py: each row keeps the trained statistics but one stage's (torchvision's names)."""
    module = load_benchmark("batchnorm_by_stage")
    from resnets import create_model
    from resnets.evaluate.recalibrate import batchnorm_state

    own = batchnorm_state(create_model("resnet34", num_classes=10))
    other = {name: value + 1 for name, value in own.items()}
    states = module.stage_states(own, other)
    assert list(states) == ["none", "stem", "layer1", "layer2", "layer3", "layer4", "all"]
    assert states["none"] is own and states["all"] is other
    for stage in ("stem", "layer1", "layer2", "layer3", "layer4"):
        changed = {name for name, value in states[stage].items() if not torch.equal(value, own[name])}
        assert changed == {name for name in own if name.startswith(stage if stage != "stem" else "bn1.")}, stage
    assert module.stage_of("layer3.4.bn2.running_var") == "layer3" and module.stage_of("bn1.running_mean") == "stem"
