"""`resnets bench` and the measuring functions behind it: timings that match known work, consistent summaries."""

from __future__ import annotations

import json
import statistics
import time

import pytest
import torch

from resnets.cli import main
from resnets.deploy.bench import BenchConfig, build_step, measure, time_interleaved


@pytest.fixture(autouse=True)
def _restore_threads():
    """In-process runs with --threads set torch's thread count for the whole process; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_cli_both_modes_in_subprocesses(capsys: pytest.CaptureFixture) -> None:
    code = main(["bench", "--model", "resnet20", "--batch-size", "8", "--repeats", "1", "--warmup", "1",
                 "--threads", "1", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["mode"] for r in rows] == ["inference", "train"]
    for row in rows:
        assert row["images_per_s"] > 0 and len(row["runs"]) == 1 and row["threads_used"] == 1
        assert row["peak_rss_mb"] > 0 and row["peak_memory_mb"] >= 0
        assert "fresh subprocess" in row["memory_method"]


def test_bench_cli_text_fused_channels_last(capsys: pytest.CaptureFixture) -> None:
    code = main(["bench", "--model", "resnet20", "--batch-size", "4", "--repeats", "2", "--warmup", "0",
                 "--threads", "1", "--mode", "inference", "--fused", "--channels-last", "--in-process"])
    out = capsys.readouterr().out
    assert code == 0 and "fused channels_last" in out and "images/s (median of 2" in out


def test_measure_bf16_fused_and_interleaved_timing() -> None:
    result = measure(BenchConfig(model="resnet20", batch_size=4, precision="bf16", fused=True, warmup=1, repeats=3,
                                 threads=1))
    assert len(result.runs) == 3 and result.images_per_s == pytest.approx(statistics.median(result.runs))
    steps = {name: build_step(BenchConfig(model="resnet20", batch_size=2, mode=mode))
             for name, mode in (("a", "inference"), ("b", "train"))}
    times = time_interleaved(steps, warmup=0, repeats=2)
    assert set(times) == {"a", "b"} and all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_interleaved_timing_measures_the_work_it_times() -> None:
    """Steps of known length (sleeps of 20 and 60 ms) are timed as such, in alternating rounds."""
    order: list[str] = []

    def sleeper(name: str, seconds: float):
        return (lambda: (order.append(name), time.sleep(seconds))), torch.device("cpu")

    times = time_interleaved({"short": sleeper("short", 0.02), "long": sleeper("long", 0.06)}, warmup=1, repeats=3)
    assert order == ["short", "long"] + ["short", "long"] * 3  # warm-ups first, then alternating rounds
    assert all(0.02 <= t < 0.05 for t in times["short"]) and all(0.06 <= t < 0.09 for t in times["long"])


@pytest.mark.parametrize(("settings", "message"), [
    ({"fused": True, "mode": "train"}, "--fused with training"),
    ({"impl": "torchvision", "model": "resnet20"}, "torchvision has no resnet20"),
    ({"backend": "inductor"}, "without --fused"),
    ({"precision": "fp16"}, "precision 'fp16'"),
])
def test_bad_settings_fail_clearly(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_step(BenchConfig(**{"model": "resnet20", **settings}))
