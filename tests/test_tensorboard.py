"""`resnets train --tensorboard`: metrics.jsonl's lines as TensorBoard scalars in RUN/tensorboard/, read back with
TensorBoard's own reader; a resumed run holds each step once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from resnets.runs import MetricsLog, read_metrics
from resnets.train.classify import train
from resnets.train.plan import resolve_run

from .conftest import write_synthetic_cifar

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the folder's event files as (step, value), in file order; TensorBoard's purging of steps
    that a restart repeats is off, so that a duplicate on disk shows."""
    reader = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0},
                                                purge_orphaned_data=False)
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def expected(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard should show it: every number of every line under its key, at its iteration."""
    tags: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record.items():
            if key != "iteration":
                tags.setdefault(key, []).append((record["iteration"], value))
    return tags


def assert_same(folder: Path, records: list[dict]) -> None:
    found, wanted = scalars(folder), expected(records)
    assert set(found) == set(wanted)
    for tag, points in wanted.items():
        assert [step for step, _ in found[tag]] == [step for step, _ in points], tag  # each step once, in order
        assert [value for _, value in found[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_resumed_log_rewrites_the_steps_after_the_checkpoint_once(tmp_path: Path) -> None:
    """A process logged iterations 1..8 and was killed; its checkpoint was at 4. The resumed process logs 5..10 again
    (other values): each step is in the event files once, with the resumed run's values."""
    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path, None, tensorboard=True)
    for iteration in range(1, 9):
        first.append({"iteration": iteration, "lr": 0.1, "train_loss": 10.0 + iteration})
    del first
    resumed = MetricsLog(path, 4, tensorboard=True)
    for iteration in range(5, 11):
        resumed.append({"iteration": iteration, "lr": 0.05, "train_loss": 1.0 / iteration,
                        **({"test_error": 20.0} if iteration == 10 else {})})
    records = read_metrics(path)
    assert [r["iteration"] for r in records] == list(range(1, 11))
    assert_same(tmp_path / "tensorboard", records)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert scalars(tmp_path / "tensorboard")["train_loss"][5] == (6, pytest.approx(1 / 6))  # not the stale 16


def test_training_run_writes_what_metrics_jsonl_holds_and_resumes_without_duplicates(tmp_path: Path) -> None:
    data = write_synthetic_cifar(tmp_path / "cifar", train=256, test=64)
    flags = {"model": "resnet8", "data": str(data), "batch_size": 32, "epochs": 2, "log_every": 1,
             "precision": "fp32", "progress": False, "out": str(tmp_path / "run"), "tensorboard": True}
    train(resolve_run("fast", max_iterations=5, **flags))  # stops at 5 of 16 with a checkpoint
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert_same(tmp_path / "run" / "tensorboard", records)
    train(resolve_run("fast", resume=True, **flags))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 17))
    assert_same(tmp_path / "run" / "tensorboard", records)
    assert {"train_loss", "train_error", "lr", "test_error", "test_loss"} <= set(scalars(tmp_path / "run" /
                                                                                         "tensorboard"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["tensorboard"] is True


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else find_spec(name, *a))
    with pytest.raises(ValueError, match=r"--tensorboard needs the tensorboard package: pip install "
                                         r"'resnets\[tensorboard\]'"):
        resolve_run("fast", tensorboard=True)
    resolve_run("fast")  # without --tensorboard nothing needs it
