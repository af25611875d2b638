"""Recipe values against the paper's text (Sec. 3.4, 4.2) and the schedule they produce."""

from __future__ import annotations

import pytest

from resnets.train.recipes import apply_overrides, get_recipe, parse_assignments, read_toml, stretch
from resnets.train.schedule import LrSchedule


def test_paper_cifar_recipe_is_section_4_2() -> None:
    r = get_recipe("paper", depth=20)
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert r.weight_decay_on_bn and not r.nesterov and r.label_smoothing == 0 and r.ema_decay is None
    assert (r.schedule, tuple(r.milestones), r.gamma, r.iterations, r.epochs) == ("step", (32000, 48000), 0.1,
                                                                                  64000, None)
    assert r.pad == 4 and r.augment and r.error_warmup_lr is None


def test_paper_cifar_schedule_values() -> None:
    schedule = LrSchedule(get_recipe("paper", depth=56), 64000)
    lrs = {t: schedule.lr(t) for t in (0, 31999, 32000, 47999, 48000, 63999)}
    assert lrs == pytest.approx({0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001})


def test_resnet110_warms_up_at_0_01_until_error_below_80_then_returns_to_0_1() -> None:
    recipe = get_recipe("paper", depth=110)
    assert recipe.error_warmup_lr == 0.01 and recipe.error_warmup_threshold == 80
    schedule = LrSchedule(recipe, 64000)
    assert schedule.lr(0) == 0.01
    assert not schedule.observe_train_error(300, 85.0)
    assert schedule.lr(300) == 0.01
    assert schedule.observe_train_error(400, 79.0)
    # back to 0.1 (the popular re-implementation's bug was to stay at 0.01), then the normal steps
    assert schedule.lr(401) == 0.1 and schedule.lr(32000) == pytest.approx(0.01)
    restored = LrSchedule(recipe, 64000)
    restored.load_state_dict(schedule.state_dict())
    assert restored.lr(401) == 0.1
    assert get_recipe("paper", depth=56).error_warmup_lr is None


def test_fast_recipe_warms_resnet110_up_too_then_follows_its_one_cycle() -> None:
    recipe = get_recipe("fast", depth=110)
    assert recipe.error_warmup_lr == 0.01
    schedule = LrSchedule(recipe, 11700)
    assert schedule.lr(0) == 0.01 and schedule.lr(200) == 0.01
    assert schedule.observe_train_error(250, 75.0)
    # one-cycle from lr/10 = 0.02 to 0.2 over 15% (1755 iterations): at 250 it is 0.02 + 0.18 * 250/1755
    assert schedule.lr(250) == pytest.approx(0.2 * (0.1 + 0.9 * 250 / 1755))
    assert get_recipe("fast", depth=56).error_warmup_lr is None
    assert get_recipe("paper-imagenet", depth=152).error_warmup_lr is None


def test_a_stretched_paper_recipe_keeps_its_shape() -> None:
    # The paper's lr /10 at 32k and 48k of 64k iterations: 2 epochs of 390 iterations drop at 390 and 585.
    recipe = stretch(get_recipe("paper", depth=164), 2)
    schedule = LrSchedule(recipe, 780)
    schedule.error_warmup = False
    assert [schedule.lr(i) for i in (0, 389, 390, 584, 585, 779)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert recipe.error_warmup_lr == 0.01  # ResNet-164 keeps the warm-up of depth >= 110
    assert stretch(get_recipe("step-90"), 9).milestones == get_recipe("step-90").milestones  # fractions already
    assert stretch(get_recipe("paper"), None) == get_recipe("paper")


def test_imagenet_recipes() -> None:
    paper = get_recipe("paper-imagenet")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay, paper.iterations) == (
        256, 0.1, 0.9, 1e-4, 600_000)
    schedule = LrSchedule(paper, paper.iterations)
    for error in (50, 40, 41, 42, 43):  # three evaluations without improvement -> /10
        schedule.observe_eval_error(error)
    assert schedule.lr(0) == pytest.approx(0.01)
    step90 = get_recipe("step-90")
    assert step90.epochs == 90
    schedule = LrSchedule(step90, 9000)
    assert [schedule.lr(t) for t in (2999, 3000, 6000)] == pytest.approx([0.1, 0.01, 0.001])


def test_onecycle_rises_then_falls_to_zero() -> None:
    schedule = LrSchedule(get_recipe("fast"), 1000)
    # Its definition: lr/10 at the start, linear up to lr at 15% of the run, linear down to 0 at the end.
    assert schedule.lr(0) == pytest.approx(0.02) and schedule.lr(75) == pytest.approx(0.11)
    assert schedule.lr(150) == pytest.approx(0.2) == max(schedule.lr(t) for t in range(1000))
    assert schedule.lr(575) == pytest.approx(0.1) and schedule.lr(999) == pytest.approx(0.2 / 850)


def test_overrides_types_and_errors(tmp_path) -> None:
    recipe = apply_overrides(get_recipe("paper"), parse_assignments(["lr=0.05", "milestones=100,200", "nesterov=true"]))
    assert recipe.lr == 0.05 and recipe.milestones == (100.0, 200.0) and recipe.nesterov is True
    with pytest.raises(ValueError, match="unknown recipe field 'lrr'"):
        apply_overrides(recipe, {"lrr": 1})
    with pytest.raises(ValueError, match="takes float"):
        apply_overrides(recipe, {"lr": "fast"})
    with pytest.raises(ValueError, match="unknown recipe 'slow'; valid recipes"):
        get_recipe("slow")
    config = tmp_path / "run.toml"
    config.write_text('recipe = "fast"\nlr = 0.2\n')
    assert read_toml(config) == {"recipe": "fast", "lr": 0.2}
    config.write_text("lr = = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_toml(config)
