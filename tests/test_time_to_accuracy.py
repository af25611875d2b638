"""Time to accuracy from run directories made here with known curves: the minutes and epoch of the first evaluation
at or below 15% and 13% ("not reached" otherwise), the final error and median images/s as mean ± std over seeds;
a recipe folder that is missing or unfinished is skipped and said so; tuning probes stay out of the test table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resnets.analysis.time_to_accuracy import (
    contention_notes,
    load_test_series,
    reach_cell,
    run_summary,
    time_to_accuracy_section,
)
from resnets.analysis.time_to_accuracy_depth import deep_time_to_accuracy_section
from resnets.models import model_spec
from resnets.runs import RunDirectoryError, load_run
from resnets.train.recipes import get_recipe

ITERATIONS_PER_EPOCH = 10
HARDWARE = {"device": "cpu", "world_size": 1, "torch": "2.x", "cpu": "x86_64", "threads": 2,
            "cpu_capability": "AVX512", "cpu_native_bf16": True}


def write_run(path: Path, seed: int, errors: list[float], elapsed: list[float], rates: list[float],
              key: str = "test_error", complete: bool = True, model: str = "resnet20", **recipe: Any) -> Path:
    """A run directory as `resnets train` leaves it: one metrics line per epoch with `key` error, elapsed_s and
    images/s; summary and config that `load_run` accepts. `recipe`: fields changed from `fast`."""
    epochs = len(errors)
    iterations = epochs * ITERATIONS_PER_EPOCH
    held_out = 5000 if key == "val_error" else 0
    data = {"dataset": "cifar10", "source": "synthetic", "train_images": 50000 - held_out, "test_images": 10000,
            "val_images": held_out}
    config = {"options": {"model": model, "dataset": "cifar10", "seed": seed, "out": str(path)},
              "recipe": {**get_recipe("fast", depth=20).to_dict(), "epochs": epochs, "val_split": held_out,
                         **recipe},
              "model_config": model_spec(model).to_config(), "data": data, "iterations": iterations,
              "iterations_per_epoch": ITERATIONS_PER_EPOCH, "hardware": HARDWARE}
    summary = {"model": model, "dataset": "cifar10", "data": data, "recipe": config["recipe"]["name"],
               "iterations": iterations, "scheduled_iterations": iterations, "epochs": float(epochs),
               "wall_seconds": elapsed[-1] + 5, "test_top1_error": errors[-1] + (0.5 if key == "val_error" else 0),
               "test_images": 10000, "complete": complete, "hardware": HARDWARE, "precision": "bf16"}
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    lines = [{"iteration": (e + 1) * ITERATIONS_PER_EPOCH, "epoch": float(e + 1), "lr": 0.1, "train_loss": 1.0,
              "train_error": 30.0, "images_per_s": rates[e], "elapsed_s": elapsed[e], key: errors[e]}
             for e in range(epochs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Seed 0 reaches 15% at epoch 3 (3 min) and 13% at epoch 4 (4 min); seed 1 reaches 15.0 exactly at epoch 2
    (3 min) and never 13%. Median rates 350 and 200 img/s."""
    root = tmp_path / "results"
    write_run(root / "depth" / "resnet20-s0", 0, [40.0, 20.0, 14.5, 12.9], [60, 120, 180, 240], [100, 1000, 300, 400])
    write_run(root / "depth" / "resnet20-s1", 1, [40.0, 15.0, 13.5, 13.2], [90, 180, 270, 360], [200] * 4)
    write_run(root / "depth" / "plain20-s0", 0, [50.0, 40.0, 30.0, 25.0], [60, 120, 180, 240], [500] * 4)
    return root


def test_minutes_to_each_threshold_per_run(results: Path) -> None:
    first, second = (run_summary(load_run(results / "depth" / f"resnet20-s{seed}")) for seed in (0, 1))
    assert first["reached"] == {15.0: {"minutes": 3.0, "epoch": 3.0}, 13.0: {"minutes": 4.0, "epoch": 4.0}}
    assert second["reached"] == {15.0: {"minutes": 3.0, "epoch": 2.0}, 13.0: None}  # at or below: 15.0 counts
    assert (first["final_error"], first["images_per_s"]) == (12.9, 350.0)
    assert [p["minutes"] for p in second["points"]] == [1.5, 3.0, 4.5, 6.0]


def test_reach_cell_states_mean_std_and_misses() -> None:
    assert reach_cell([{"minutes": 3.0, "epoch": 3.0}, {"minutes": 5.0, "epoch": 2.0}]) == \
        "4.0 ± 1.4 min (epoch 2.5 ± 0.7)"
    assert reach_cell([{"minutes": 4.0, "epoch": 4.0}, None]) == "4.0 min (epoch 4.0); not reached in 1 of 2 runs"
    assert reach_cell([None, None]) == "not reached"


def draw_into(folder: Path, made: dict[str, Any]) -> Any:
    """A stand-in for ReportWriter.plot: draws the figure into `folder` and keeps its data in `made`."""
    def plot(draw: Any, data: Any, name: str, caption: str) -> str:
        made[name] = data
        draw(data, folder / name)
        return f"![{caption}](figures/{name})"
    return plot


def test_section_rows_figure_and_missing_recipe(results: Path, tmp_path: Path) -> None:
    write_run(results / "cifar-fast" / "resnet20-s0", 0, [30.0, 14.0], [30, 60], [900] * 2, complete=False,
              name="cifar-fast")
    made: dict[str, Any] = {}
    text = "\n\n".join(time_to_accuracy_section(results / "depth", draw_into(tmp_path, made)))
    # wall time: (245 + 365) / 2 s; at the median rate: 40 it. x 128 images / 350 and / 200 img/s, mean 20.1 s
    assert ("| fast, 4 epochs | 2 (0, 1) | 4 | 275 ± 106 | 5.1 min (20 s) | 3.0 ± 0.0 min (epoch 2.5 ± 0.7) | "
            "4.0 min (epoch 4.0); not reached in 1 of 2 runs | 13.05 ± 0.21 | CPU x86_64, 2 threads, torch 2.x "
            "(AVX512, native bf16) |") in text
    assert f"`{results / 'cifar-fast'}`: resnet20-s0 not finished, left out." in text
    assert f"`{results / 'cifar-fast'}`: no finished resnet20-s<seed> run recorded yet; no row, no curve." in text
    data = made["time-to-accuracy.png"]
    assert list(data["recipes"]) == ["fast, 4 epochs"] and list(data["recipes"]["fast, 4 epochs"]) == [
        "resnet20-s0", "resnet20-s1"]
    assert data["recipes"]["fast, 4 epochs"]["resnet20-s1"][1] == {"epoch": 2.0, "minutes": 3.0, "test_error": 15.0}
    assert (tmp_path / "time-to-accuracy.png").stat().st_size > 10_000
    meta = json.loads((Path(__file__).resolve().parents[1] / "src/resnets/assets/weights/resnet20.json").read_text())
    assert data["reference"]["test_error"] == round(meta["test_top1_error"], 3)
    assert f"| ≤ {meta['wall_seconds'] / 60:.1f} min (final only) | ≤ " in text  # below 15% and 13% by its end


def test_tuning_probes_are_listed_apart(results: Path, tmp_path: Path) -> None:
    write_run(results / "tuning-cifar14" / "lr04", 0, [30.0, 16.0, 14.9], [60, 120, 180], [1400] * 3,
              key="val_error", lr=0.4)
    text = "\n\n".join(time_to_accuracy_section(results / "depth", draw_into(tmp_path, {})))
    _, probes = text.split("Tuning probes (held-out 5,000 training images)")
    assert ("| `lr04` | fast | lr=0.4 | 3 | 45,000 / 5,000 | 1,400 | a CPU of unrecorded model (AVX512, native bf16), "
            "bf16 | 3.1 min | 3.0 min (epoch 3.0) | not reached | 14.90 |") in probes
    assert "15.40" not in text  # the probe's test error (its summary) is shown nowhere


def test_one_folder_one_recipe_and_nothing_to_show(results: Path, tmp_path: Path) -> None:
    write_run(results / "depth" / "resnet20-s2", 2, [40.0, 14.0], [60, 120], [300] * 2)  # 2 epochs, not 4
    with pytest.raises(RunDirectoryError, match=r"depth: its resnet20 runs used different recipes, lengths"):
        load_test_series([results / "depth"])
    assert time_to_accuracy_section(tmp_path / "nothing" / "depth", draw_into(tmp_path, {})) == []


def test_a_finished_new_recipe_gets_its_row_and_curve(results: Path, tmp_path: Path) -> None:
    # wall: 60 + 5 s; at the median rate: 20 it. x 128 images / 900 img/s = 2.8 s
    write_run(results / "cifar-fast" / "resnet20-s0", 0, [30.0, 12.5], [30, 60], [900] * 2, name="cifar-fast")
    made: dict[str, Any] = {}
    text = "\n\n".join(time_to_accuracy_section(results / "depth", draw_into(tmp_path, made)))
    assert ("| cifar-fast, 2 epochs | 1 (0) | 2 | 900 | 1.1 min (3 s) | 1.0 min (epoch 2.0) | 1.0 min (epoch 2.0) | "
            "12.50 |") in text
    assert list(made["time-to-accuracy.png"]["recipes"]) == ["fast, 4 epochs", "cifar-fast, 2 epochs"]
    assert "no finished resnet20" not in text


def test_rates_are_compared_only_on_one_kind_of_machine() -> None:
    """A run at half the rate of another on the same CPU and precision shared its CPU; a run on another CPU (or in
    another precision) is slower for its own reasons and is not called contended."""
    xeon = {"cpu_model": "Intel Xeon", "cpu_capability": "AVX512", "cpu_native_bf16": False}
    epyc = {"cpu_capability": "AVX512", "cpu_native_bf16": True}  # an older record: no CPU model
    records = {"fast": {"images_per_s": 1000, "hardware": epyc, "precision": "bf16"},
               "shared": {"images_per_s": 500, "hardware": epyc, "precision": "bf16"},
               "xeon-fp32": {"images_per_s": 460, "hardware": xeon, "precision": "fp32"},
               "xeon-bf16": {"images_per_s": 40, "hardware": xeon, "precision": "bf16"}}
    notes = contention_notes(records)
    assert len(notes) == 1 and "shared (500)" in notes[0] and "xeon" not in notes[0]
    assert "on a CPU of unrecorded model (AVX512, native bf16), bf16 (1,000 img/s, fast)" in notes[0]
    records["slower"] = {"images_per_s": 300, "hardware": xeon, "precision": "fp32"}
    assert any("on Intel Xeon, fp32 (460 img/s, xeon-fp32)" in note and "slower (300)" in note
               for note in contention_notes(records))
    # two CPUs of one name but another family/model: each compared only with its own kind
    older = {"cpu_model": "AMD EPYC", "cpu_generation": "family 25 model 1"}
    newer = {"cpu_model": "AMD EPYC", "cpu_generation": "family 25 model 17"}
    mixed = {"older": {"images_per_s": 110, "hardware": older, "precision": "bf16"},
             "newer": {"images_per_s": 59, "hardware": newer, "precision": "bf16"}}
    assert contention_notes(mixed) == []
    mixed["newer-shared"] = {"images_per_s": 20, "hardware": newer, "precision": "bf16"}
    assert [note for note in contention_notes(mixed) if "older" in note or "newer (" in note] == []
    assert any("on AMD EPYC (family 25 model 17), bf16 (59 img/s, newer)" in note and "newer-shared (20)" in note
               for note in contention_notes(mixed))


# sampling noise, by hand: 200 * sqrt(p1 (1 - p1) / 10,000 + p2 (1 - p2) / 10,000) with p2 = 0.12 (`fast`)
@pytest.mark.parametrize(("new_error", "verdict"), [
    (11.0, "yes, 1.00 points lower"),  # noise 0.90
    (12.5, "level, 0.50 points higher, within the 10,000 test images' sampling noise (0.93 points: two standard "
           "errors of the difference)"),
    (13.5, "no, 1.50 points higher")])  # noise 0.94
def test_deeper_nets_new_recipe_against_old_at_the_same_length(results: Path, tmp_path: Path, new_error: float,
                                                               verdict: str) -> None:
    """ResNet-56 of both recipes (the depth folder: `fast`), ResNet-110 of the old one only; ResNet-20 runs are not
    this section's."""
    write_run(results / "depth" / "resnet56-s0", 0, [30.0, 20.0, 12.0], [60, 120, 180], [300] * 3, model="resnet56")
    write_run(results / "depth" / "resnet110-s0", 0, [35.0, 25.0, 11.5], [90, 180, 270], [150] * 3,
              model="resnet110")
    write_run(results / "cifar-fast" / "resnet56-s0", 0, [28.0, 15.0, new_error], [50, 100, 150], [320] * 3,
              model="resnet56", name="cifar-fast")
    write_run(results / "cifar-fast" / "resnet20-s0", 0, [30.0, 9.0], [30, 60], [900] * 2, name="cifar-fast")
    made: dict[str, Any] = {}
    text = "\n\n".join(deep_time_to_accuracy_section(results / "depth", draw_into(tmp_path, made)))
    assert (f"- ResNet-56: `cifar-fast` better than `fast`: {verdict} (`cifar-fast` {new_error:.2f}% after 3 "
            "epochs, 1 run; `fast` 12.00% after 3 epochs, 1 run; the paper 6.97% after 164 epochs") in text
    assert "- ResNet-110: `cifar-fast` better than `fast`: not measured yet (no finished `cifar-fast` resnet110 run)." \
        in text
    assert "| fast, 3 epochs | ResNet-110 | 1 (0) | 3 | 150 |" in text and "9.00" not in text
    assert list(made["time-to-accuracy-deep.png"]["recipes"]) == [
        "fast, 3 epochs: ResNet-56", "fast, 3 epochs: ResNet-110", "cifar-fast, 3 epochs: ResNet-56"]
    assert deep_time_to_accuracy_section(tmp_path / "nothing" / "depth", draw_into(tmp_path, {})) == []
