"""Time to accuracy on Imagenette from run directories made here with known curves: minutes and epoch of the first
evaluation at or below 20%, 15% and 10% ("not reached" otherwise), final error as mean ± std over seeds, one row per
recipe and network; issue #35's two targets as verdicts that flip with the numbers; a missing recipe folder skipped
and said so; tuning probes in their own table only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resnets.analysis.time_to_accuracy import last_epoch_training
from resnets.analysis.time_to_accuracy_imagenette import (
    deeper_verdict,
    imagenette_time_to_accuracy_section,
    target_verdict,
)
from resnets.models import model_spec
from resnets.runs import RunDirectoryError, RunRecord
from resnets.train.recipes import get_recipe

from .test_time_to_accuracy import HARDWARE, ITERATIONS_PER_EPOCH

CPU = "CPU x86_64, 2 threads, torch 2.x (AVX512, native bf16)"


def write_run(path: Path, model: str, seed: int, recipe: str, errors: dict[int, float], minutes: list[float],
              rates: list[float], key: str = "test_error", final: float | None = None, **changes: Any) -> Path:
    """An Imagenette run directory as `resnets experiment imagenette` leaves it (residual nets with option A
    shortcuts, Table 2's): one metrics line per epoch (len(minutes) epochs), with `key` error at the epochs `errors`
    names; the summary's final error is `final` (the last error if None)."""
    epochs = len(minutes)
    iterations = epochs * ITERATIONS_PER_EPOCH
    held_out = 1000 if key == "val_error" else 0
    data = {"dataset": "imagenette", "source": "synthetic", "train_images": 9469 - held_out, "test_images": 3925,
            "val_images": held_out}
    spec = model_spec(model)
    config = {"options": {"model": model, "dataset": "imagenette", "seed": seed, "out": str(path)},
              "recipe": {**get_recipe(recipe).to_dict(), "epochs": epochs, "val_split": held_out, **changes},
              "model_config": {**spec.to_config(), **({"shortcut": "A"} if spec.residual else {})}, "data": data,
              "iterations": iterations,
              "iterations_per_epoch": ITERATIONS_PER_EPOCH, "hardware": HARDWARE}
    summary = {"model": model, "dataset": "imagenette", "data": data, "recipe": recipe, "iterations": iterations,
               "scheduled_iterations": iterations, "epochs": float(epochs), "wall_seconds": minutes[-1] * 60 + 5,
               "test_top1_error": errors[epochs] if final is None else final, "test_images": 3925,
               "complete": True, "hardware": HARDWARE, "precision": "bf16"}
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    lines = [{"iteration": e * ITERATIONS_PER_EPOCH, "epoch": float(e), "lr": 0.1, "train_loss": 1.0,
              "train_error": 30.0, "images_per_s": rates[e - 1], "elapsed_s": minutes[e - 1] * 60,
              **({key: errors[e]} if e in errors else {})} for e in range(1, epochs + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """The old recipe (evaluated every epoch): ResNet-18 seed 0 never reaches 20% (21.1 at the end), seed 1 reaches
    it at epoch 2 (22 min); plain-18 one run. No imagenette-fast folder yet."""
    root = tmp_path / "results"
    old = root / "imagenette"
    write_run(old / "resnet18-s0", "resnet18", 0, "imagenette", {1: 40.0, 2: 25.0, 3: 21.1}, [10, 20, 30], [60, 70, 80])
    write_run(old / "resnet18-s1", "resnet18", 1, "imagenette", {1: 38.0, 2: 19.5, 3: 18.5}, [11, 22, 33], [50] * 3)
    write_run(old / "plain18-s0", "plain18", 0, "imagenette", {1: 45.0, 2: 30.0, 3: 26.0}, [10, 20, 30], [90] * 3)
    return root


def fast_runs(root: Path, second_final: float = 10.6, deep_final: float = 7.5) -> None:
    """imagenette-fast, evaluated every 2 epochs: ResNet-18 seed 0 at 16.0 then 9.0 (24 and 48 min), seed 1 at
    exactly 20.0 then `second_final` (26 and 52 min); ResNet-34 seed 0 at 17.0 then `deep_final` (40 and 80 min)."""
    new = root / "imagenette-fast"
    write_run(new / "resnet18-s0", "resnet18", 0, "imagenette-fast", {2: 16.0, 4: 9.0}, [12, 24, 36, 48], [200] * 4)
    write_run(new / "resnet18-s1", "resnet18", 1, "imagenette-fast", {2: 20.0, 4: second_final}, [13, 26, 39, 52],
              [180] * 4)
    write_run(new / "resnet34-s0", "resnet34", 0, "imagenette-fast", {2: 17.0, 4: deep_final}, [20, 40, 60, 80],
              [100] * 4)


def draw_into(folder: Path, made: dict[str, Any]) -> Any:
    """A stand-in for ReportWriter.plot: draws the figure into `folder` and keeps its data in `made`."""
    def plot(draw: Any, data: Any, name: str, caption: str) -> str:
        made[name] = data
        draw(data, folder / name)
        return f"![{caption}](figures/{name})"
    return plot


def section(results: Path, tmp_path: Path, made: dict[str, Any] | None = None) -> str:
    return "\n\n".join(imagenette_time_to_accuracy_section(results / "imagenette",
                                                           draw_into(tmp_path, {} if made is None else made)))


def test_rows_per_recipe_and_network(results: Path, tmp_path: Path) -> None:
    fast_runs(results)
    made: dict[str, Any] = {}
    text = section(results, tmp_path, made)
    # old ResNet-18: rates 70 and 50 (60 ± 14.1); wall (1805 + 1985) / 2 s = 31.6 min; at the median rate
    # 30 it. x 128 images / 70 and / 50 img/s, mean 65.8 s = 1.1 min; final 21.1 and 18.5: 19.80 ± 1.84
    assert ("| imagenette, 3 epochs | ResNet-18 | 2 (0, 1) | 3 | 60 ± 14 | 31.6 min (1.1 min) | 22.0 min (epoch 2.0); "
            f"not reached in 1 of 2 runs | not reached | not reached | 19.80 ± 1.84 | {CPU} |") in text
    # new ResNet-18: 20% at 24 and 26 min (seed 1 at exactly 20.0 counts), 15% at 48 and 52, 10% only seed 0;
    # rates 200 and 180; wall (2885 + 3125) / 2 s = 50.1 min; 40 it. x 64 images / 200 and / 180, mean 13.5 s
    assert ("| imagenette-fast, 4 epochs | ResNet-18 | 2 (0, 1) | 4 | 190 ± 14 | 50.1 min (14 s) | "
            "25.0 ± 1.4 min (epoch 2.0 ± 0.0) | 50.0 ± 2.8 min (epoch 4.0 ± 0.0) | 48.0 min (epoch 4.0); not reached "
            f"in 1 of 2 runs | 9.80 ± 1.13 | {CPU} |") in text
    assert "| imagenette, 3 epochs | plain-18 | 1 (0) | 3 | 90 | 30.1 min (43 s) | not reached | not reached" in text
    assert "| imagenette-fast, 4 epochs | ResNet-34 | 1 (0) | 4 | 100 |" in text
    assert "`imagenette-fast` trained on random-resized 112 px crops (area 25%-100%)" in text
    assert "tested on the centre 128x128 of the photo at shorter side 128, evaluated every 2 epochs" in text
    assert "independent script (issue #35) | ResNet-18 |" in text and "| 8.4 (91.6% accuracy) | GPUs |" in text
    data = made["time-to-accuracy-imagenette.png"]
    assert list(data["recipes"]) == ["imagenette, 3 epochs: plain-18", "imagenette, 3 epochs: ResNet-18",
                                     "imagenette-fast, 4 epochs: ResNet-18", "imagenette-fast, 4 epochs: ResNet-34"]
    assert data["recipes"]["imagenette-fast, 4 epochs: ResNet-18"]["resnet18-s1"] == [
        {"epoch": 2.0, "minutes": 26.0, "test_error": 20.0}, {"epoch": 4.0, "minutes": 52.0, "test_error": 10.6}]
    assert data["ylabel"] == "validation error (%)" and "reference" not in data
    assert (tmp_path / "time-to-accuracy-imagenette.png").stat().st_size > 10_000


def test_targets_met_and_their_flips(results: Path, tmp_path: Path) -> None:
    fast_runs(results)
    text = section(results, tmp_path)
    assert ("- ResNet-18 at most 10% validation error within 60 minutes of training (`imagenette-fast`): met (final "
            "9.80 ± 1.13% after 50.0 ± 2.8 min, 2 runs).") in text  # the mean over seeds decides, not each run
    # 7.50 vs 9.80: noise 200 sqrt((0.075 x 0.925 + 0.098 x 0.902) / 3925) = 1.27 points, the gap 2.30 beyond it
    assert ("- ResNet-34 lower than ResNet-18 under `imagenette-fast`: yes, 2.30 points lower (ResNet-34 7.50% final, "
            "1 run; ResNet-18 9.80 ± 1.13% final, 2 runs).") in text
    flipped = tmp_path / "flipped"
    fast_runs(flipped / "results", second_final=11.4, deep_final=10.5)  # mean 10.2; ResNet-34 now above it
    (flipped / "results" / "imagenette").mkdir()
    text = section(flipped / "results", tmp_path)
    assert "(`imagenette-fast`): missed by 0.20 points (final 10.20 ± 1.70% after 50.0 ± 2.8 min, 2 runs)." in text
    # 10.50 vs 10.20: noise 200 sqrt((0.105 x 0.895 + 0.102 x 0.898) / 3925) = 1.375 points, the gap 0.30 inside it
    assert ("under `imagenette-fast`: level, 0.30 points higher, within the 3,925 validation photos' sampling noise "
            "(1.38 points: two standard errors of the difference) (ResNet-34 10.50% final, 1 run; ResNet-18 10.20 ± "
            "1.70% final, 2 runs).") in text
    worse = tmp_path / "worse"
    fast_runs(worse / "results", second_final=11.4, deep_final=13.0)  # noise 1.44 points, the gap 2.80 beyond it
    (worse / "results" / "imagenette").mkdir()
    assert ("under `imagenette-fast`: no, 2.80 points higher (ResNet-34 13.00% final, 1 run; ResNet-18 10.20 ± 1.70% "
            "final, 2 runs).") in section(worse / "results", tmp_path)


def point(minutes: float, error: float, epoch: float = 0.0) -> dict[str, float]:
    return {"epoch": epoch, "minutes": minutes, "test_error": error}


def test_the_time_budget_is_part_of_the_target() -> None:
    slow = {"final_error": 9.0, "points": [point(40, 16.0, 2), point(80, 9.0, 4)]}
    assert target_verdict([slow]) == (
        "ResNet-18 at most 10% validation error within 60 minutes of training (`imagenette-fast`): missed by 6.00 "
        "points (16.00% at the last evaluation within 60 min; final 9.00% after 80.0 min; 1 run).")
    early = {"final_error": 9.0, "points": [point(55, 9.5, 2), point(80, 9.0, 4)]}
    assert "met (9.50% at the last evaluation within 60 min; final 9.00% after 80.0 min; 1 run)." in \
        target_verdict([early])
    late = {"final_error": 9.0, "points": [point(61, 9.0, 40)]}
    assert target_verdict([late]).endswith(": missed, no evaluation within 60 minutes (final 9.00% after 61.0 min, "
                                           "1 run).")


def test_equal_errors_are_not_lower_and_missing_runs_are_not_measured() -> None:
    same = [{"final_error": 12.0}]
    # noise 200 sqrt(2 x 0.12 x 0.88 / 3925) = 1.467 points
    assert (": level, 0.00 points higher, within the 3,925 validation photos' sampling noise (1.47 points: two "
            "standard errors of the difference) (ResNet-34 12.00% final, 1 run; ResNet-18 12.00% final, 1 run).") in \
        deeper_verdict(same, same, 3925)
    assert deeper_verdict(same, [], 3925).endswith(": not measured yet (no finished `imagenette-fast` resnet34 run).")
    assert target_verdict([]).endswith(": not measured yet (no finished `imagenette-fast` resnet18 run).")


def test_missing_new_recipe_is_said_and_not_measured(results: Path, tmp_path: Path) -> None:
    text = section(results, tmp_path)
    assert (f"- `{results / 'imagenette-fast'}`: no finished {{plain18,plain34,resnet18,resnet34}}-s<seed> run "
            "recorded yet; no row, no curve.") in text
    assert "(`imagenette-fast`): not measured yet (no finished `imagenette-fast` resnet18 run)." in text
    assert "under `imagenette-fast`: not measured yet (no finished `imagenette-fast` resnet18 or resnet34 run)." in text
    assert "| imagenette-fast" not in text
    assert section(tmp_path / "nothing", tmp_path) == ""


def test_tuning_probes_stay_out_of_the_main_table(results: Path, tmp_path: Path) -> None:
    write_run(results / "tuning-imagenette" / "lr04", "resnet18", 0, "imagenette-fast", {1: 30.0, 2: 14.0},
              [4, 8], [190] * 2, key="val_error", final=33.33, lr=0.4)
    made: dict[str, Any] = {}
    text = section(results, tmp_path, made)
    main, probes = text.split("Tuning probes (held-out 1,000 training images)")
    assert ("| `lr04` | ResNet-18 | imagenette-fast | lr=0.4 | 2 | 8,469 / 1,000 | 190 | a CPU of unrecorded model "
            "(AVX512, native bf16), bf16 | 8.1 min | 8.0 min (epoch 2.0) | 8.0 min (epoch 2.0) | not reached | 14.00 |"
            ) in probes
    assert "lr04" not in main and "14.00" not in main
    assert "33.33" not in text  # the probe's validation error (its summary) is shown nowhere
    assert all("lr04" not in runs for runs in made["time-to-accuracy-imagenette.png"]["recipes"].values())


def test_last_epoch_training_is_weighted_by_the_iterations_each_row_covers(tmp_path: Path) -> None:
    rows = [{"iteration": 50, "train_loss": 2.0, "train_error": 50.0, "iterations": 50},
            {"iteration": 100, "train_loss": 1.0, "train_error": 10.0, "iterations": 50},
            {"iteration": 130, "train_loss": 0.4, "train_error": 2.0, "iterations": 30, "test_error": 20.0}]
    config = {"iterations_per_epoch": 80}  # the last epoch: iterations 51-130, the last two rows
    run = RunRecord(tmp_path, {"epochs": 2}, config, rows)
    assert last_epoch_training(run) == pytest.approx({"train_loss": 62 / 80, "train_error": 7.0})
    untrained = [{"iteration": 130, "test_error": 20.0}]
    assert last_epoch_training(RunRecord(tmp_path, {"epochs": 2}, config, untrained)) is None


def test_a_deeper_net_that_loses_is_called_under_trained_or_over_fitted_from_its_training_loss() -> None:
    shallow = [{"final_error": 13.5, "last_epoch_training": {"train_loss": 0.67, "train_error": 6.0}}]
    deep = [{"final_error": 17.0, "last_epoch_training": {"train_loss": 0.70, "train_error": 8.0}}]
    assert deeper_verdict(shallow, deep, 3925).endswith(
        " Why, measured: over the last epoch, training loss 0.700 vs 0.670 and training error 8.00% vs 6.00% (on the "
        "augmented crops, label smoothing in the loss), ResNet-34 vs ResNet-18: it fits its training photos worse "
        "too, so at this length it is under-trained; its validation error is further above its training error (9.00 "
        "vs 7.50 points).")
    deep = [{"final_error": 17.0, "last_epoch_training": {"train_loss": 0.60, "train_error": 4.0}}]
    assert "it fits its training photos better and tests worse: it over-fits" in deeper_verdict(shallow, deep, 3925)
    assert "Why" not in deeper_verdict(shallow, [{"final_error": 12.0, "last_epoch_training": None}], 3925)
    assert "Why" not in deeper_verdict(deep, shallow, 3925)  # the deeper net wins: nothing to explain


def with_shortcut(run: Path, option: str) -> Path:
    """The run as `resnets train --shortcut OPTION` leaves it: its model config names the option."""
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["shortcut"] = option
    (run / "config.json").write_text(json.dumps(config))
    return run


def option_b_runs(root: Path, shallow_final: float, deep_final: float) -> Path:
    folder = root / "imagenette-fast" / "option-B"
    with_shortcut(write_run(folder / "resnet18-s0", "resnet18", 0, "imagenette-fast",  # evaluated every epoch
                            {1: 30.0, 2: 15.0, 3: 12.0, 4: shallow_final},
                            [14, 28, 42, 56], [150] * 4), "B")
    with_shortcut(write_run(folder / "resnet34-s0", "resnet34", 0, "imagenette-fast", {2: 14.0, 4: deep_final},
                            [25, 50, 75, 100], [90] * 4), "B")
    return folder


def test_projection_shortcut_runs_get_their_own_rows_and_verdicts(results: Path, tmp_path: Path) -> None:
    fast_runs(results, deep_final=12.0)  # option A: ResNet-34 12.00% above ResNet-18's 9.80 ± 1.13%
    option_b_runs(results, shallow_final=9.7, deep_final=7.0)
    made: dict[str, Any] = {}
    text = section(results, tmp_path, made)
    assert "| imagenette-fast, 4 epochs, option B | ResNet-18 | 1 (0) | 4 | 150 |" in text
    assert "| imagenette-fast, 4 epochs, option B | ResNet-34 | 1 (0) | 4 | 90 |" in text
    assert "| imagenette-fast, 4 epochs | ResNet-34 | 1 (0) | 4 | 100 |" in text  # option A's row keeps its runs
    # noise 200 sqrt((0.12 x 0.88 + 0.098 x 0.902) / 3925) = 1.41 points; option B's: (0.07 x 0.93 + 0.097 x 0.903),
    # 1.25 points
    assert ("- ResNet-34 lower than ResNet-18 under `imagenette-fast`: no, 2.20 points higher (ResNet-34 12.00% final, "
            "1 run; ResNet-18 9.80 ± 1.13% final, 2 runs).") in text
    assert ("- ResNet-34 lower than ResNet-18 under `imagenette-fast`, both with option B shortcuts: yes, 2.70 points "
            "lower (ResNet-34 7.00% final, 1 run; ResNet-18 9.70% final, 1 run).") in text
    assert ("- ResNet-18 at most 10% validation error within 60 minutes of training (`imagenette-fast`, with option B "
            "shortcuts): met (final 9.70% after 56.0 min, 1 run).") in text
    assert "option-C" not in text  # an option nobody trained is not said to be missing
    assert "shorter side 128, evaluated every 2 epochs or once per epoch." in text
    assert "imagenette-fast, 4 epochs, option B: ResNet-34" in made["time-to-accuracy-imagenette.png"]["recipes"]
    flipped = tmp_path / "flipped" / "results"
    fast_runs(flipped)
    (flipped / "imagenette").mkdir()
    option_b_runs(flipped, shallow_final=7.0, deep_final=9.7)
    assert "both with option B shortcuts: no, 2.70 points higher (ResNet-34 9.70% final, 1 run; ResNet-18 7.00% final" \
        in section(flipped, tmp_path)


def test_a_folder_mixing_shortcut_options_is_refused(results: Path, tmp_path: Path) -> None:
    folder = option_b_runs(results, shallow_final=9.7, deep_final=9.2)
    with_shortcut(folder / "resnet18-s0", "A")
    with pytest.raises(RunDirectoryError, match="different recipes, lengths or shortcut options"):
        section(results, tmp_path)
