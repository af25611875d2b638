"""A resumed run follows the uninterrupted run's lr at every iteration (issue 39, item 3): a step schedule, Sec. 4.2's
ResNet-110 error warm-up and a plateau schedule, each stopped part-way (by a stop signal, as a preempted job is, or by
--max-iterations) and resumed. The warm-up ends and the plateau drops before the stop, so a resume that loses the
schedule's state goes back to the warm-up lr or the undropped lr and fails here."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from resnets.runtime import Preempted
from resnets.train.classify import ClassificationTask, train
from resnets.train.loop import Run, run_task
from resnets.train.plan import RunPlan, resolve_run

from .conftest import write_synthetic_cifar

TOTAL, STOP_AT = 32, 18  # 128 images in batches of 16: 8 iterations per epoch
SCHEDULES = {
    # lr /10 at 10 and 22: one milestone before the stop, one after
    "step": {"schedule": "step", "milestones": "10,22"},
    # lr 0.01 until iteration 10 (the bound; a threshold of 0% is never reached), then 0.1 and the steps
    "error-warmup": {"schedule": "step", "milestones": "24", "error_warmup_lr": 0.01, "error_warmup_threshold": 0,
                     "error_warmup_max_iterations": 10},
    # an evaluation every 4 iterations, lr halved after each one that does not improve; an lr too small to learn
    # keeps the error from improving steadily, so the lr drops before the stop
    "plateau": {"schedule": "plateau", "lr": 1e-3, "gamma": 0.5, "plateau_patience": 1, "eval_every": 4},
}


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    return write_synthetic_cifar(tmp_path_factory.mktemp("tiny-cifar"), train=128, test=64, seed=2)


def make_plan(data: Path, out: Path, schedule: str, **options: Any) -> RunPlan:
    return resolve_run("paper", overrides={"batch_size": 16, **SCHEDULES[schedule]}, iterations=TOTAL,
                       model="resnet8", data=str(data), out=str(out), device="cpu", progress=False,
                       channels_last=False, deterministic=True, seed=5, log_every=1, eval_subset=32, **options)


class StoppedBySignal(ClassificationTask):
    """Sends itself SIGUSR1 after iteration `at`, as a scheduler preempting the job would."""

    def __init__(self, plan: RunPlan, at: int) -> None:
        super().__init__(plan)
        self.at = at

    def after_step(self, run: Run) -> None:
        super().after_step(run)
        if run.iteration == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def logged_lrs(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["iteration"], r["lr"]) for r in records if "lr" in r]


def final_state(out: Path) -> dict[str, Any]:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.parametrize("stop", ["signal", "max-iterations"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_resumed_lr_equals_the_uninterrupted_runs(tiny_cifar: Path, tmp_path: Path, schedule: str, stop: str) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(make_plan(tiny_cifar, whole, schedule))
    expected = logged_lrs(whole)
    assert [t for t, _ in expected] == list(range(1, TOTAL + 1))
    before = dict(expected[:STOP_AT])  # what the schedule did up to the stop, so that losing its state shows
    if schedule == "error-warmup":
        assert set(before[t] for t in range(1, 11)) == {0.01} and before[11] == pytest.approx(0.1)
    if schedule == "plateau":
        assert before[STOP_AT] < 1e-3, f"no plateau drop before iteration {STOP_AT}: {expected}"
        assert final_state(whole)["schedule"]["plateau_drops"] >= 1

    if stop == "signal":
        assert threading.current_thread() is threading.main_thread(), "stop signals are handled on the main thread"
        with pytest.raises(Preempted, match=f"at iteration {STOP_AT}"):
            run_task(StoppedBySignal(make_plan(tiny_cifar, parts, schedule), STOP_AT))
    else:
        train(make_plan(tiny_cifar, parts, schedule, max_iterations=STOP_AT))
    assert final_state(parts)["iteration"] == STOP_AT
    train(make_plan(tiny_cifar, parts, schedule, resume=True))

    assert logged_lrs(parts) == expected  # every iteration, exactly
    ours, theirs = final_state(parts), final_state(whole)
    assert ours["schedule"] == theirs["schedule"]
    different = [k for k in theirs["model"] if not torch.equal(ours["model"][k], theirs["model"][k])]
    assert not different, f"weights differ after the resume: {different[:5]}"
