"""`resnets experiment degradation` on a tiny budget: trains, resumes an interrupted run, skips complete ones, refuses
a directory made under another budget, plots Fig. 6 and writes the verdict."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.analysis.experiments import degradation_command, final_train_error, run_degradation
from resnets.cli import build_parser, main
from resnets.data.cifar import FORMATS, load_cifar
from resnets.data.decoded import spread_indices

MODELS = ["plain8", "plain14", "resnet8", "resnet14"]


def write_tiny_cifar(source: Path, folder: Path, train: int = 128, test: int = 100) -> Path:
    """Real CIFAR-10 images in the official binary layout: reading these takes milliseconds, where each run would
    otherwise spend seconds listing the 60,000 files of the JPEG copy. Both splits are drawn, disjoint and spread
    over the classes, from the JPEG copy's test split (listing its 10,000 files is the cheaper half)."""
    fmt = FORMATS["cifar10"]
    folder.mkdir(parents=True, exist_ok=True)
    arrays = load_cifar(source, "cifar10", "test")
    splits = {"train": spread_indices(len(arrays), train) + 1, "test": spread_indices(len(arrays), test)}
    for split, chosen in splits.items():
        records = torch.cat([arrays.labels[chosen, None].to(torch.uint8), arrays.images[chosen].flatten(1)], 1)
        for part, file in zip(np.array_split(records.numpy(), len(fmt.files[split])), fmt.files[split], strict=True):
            part.tofile(folder / file)
    (folder / fmt.names_file).write_text("\n".join(arrays.classes) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_cifar(cifar10_jpeg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar(cifar10_jpeg_dir, tmp_path_factory.mktemp("tiny-cifar"))


def test_recorded_command_parses_back_to_the_same_experiment() -> None:
    command = degradation_command("runs/x", ["plain20", "resnet20"], 12.0, "bf16", "/data", None, 500, True)
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.out, args.models, args.budget, args.precision, args.data, args.subset, args.eval_subset,
            args.compile) == ("runs/x", ["plain20", "resnet20"], 12.0, "bf16", "/data", None, 500, True)
    assert not build_parser().parse_args(shlex.split(degradation_command("o", ["a"], None, "fp32", None, None,
                                                                         None))[1:]).compile


def test_final_train_error_averages_the_last_epoch_by_iterations() -> None:
    records = [{"iteration": 4, "train_error": 90.0, "iterations": 4}, {"iteration": 5, "test_error": 50.0},
               {"iteration": 8, "train_error": 80.0, "iterations": 4},
               {"iteration": 9, "train_error": 60.0, "iterations": 1}, {"iteration": 12, "train_error": 40.0,
                                                                        "iterations": 3}]
    assert final_train_error(records, iterations_per_epoch=4) == pytest.approx((60 * 1 + 40 * 3) / 4)


def test_degradation_trains_resumes_skips_and_states_the_verdict(tiny_cifar: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "degradation"
    common = {"out": out, "models": MODELS, "budget": 2, "data": tiny_cifar, "progress": False, "device": "cpu"}
    first = run_degradation(**common, max_iterations=1, log=lambda _line: None)  # 1 of 2 iterations: interrupted
    assert set(first["status"].values()) == {"trained"}
    assert not any(run["complete"] for run in first["runs"].values())

    capsys.readouterr()
    second = run_degradation(**common, log=lambda _line: None)
    assert set(second["status"].values()) == {"resumed"}
    # Each network announces the checkpoint's iteration: a resume, not a restart that rewrote metrics.jsonl.
    announced = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resumed ")]
    assert len(announced) == len(MODELS) and all(line.endswith(" at iteration 1 of 2") for line in announced), announced
    for name in MODELS:
        iterations = [json.loads(line)["iteration"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert iterations == [1, 2], name  # continued from the checkpoint, not restarted
        assert second["runs"][name]["complete"] and second["runs"][name]["iterations"] == 2
    weights_before = {name: (out / name / "model.pt").stat().st_mtime_ns for name in MODELS}

    # The CLI: everything is complete, so nothing trains; the figure and the verdict are rewritten.
    code = main(["experiment", "degradation", "--out", str(out), "--models", *MODELS, "--budget", "2", "--data",
                 str(tiny_cifar), "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.count("skipped") == 4
    assert weights_before == {name: (out / name / "model.pt").stat().st_mtime_ns for name in MODELS}
    assert "budget: 2 epochs = 2 iterations" in printed and "shorter than the paper's 164 epochs" in printed

    document = json.loads((out / "degradation.json").read_text())
    assert document["budget"]["epochs"] == 2 and document["budget"]["paper_iterations"] == 64_000
    assert document["command"].startswith("resnets experiment degradation --out")
    runs, verdict = document["runs"], document["verdict"]
    plain8, plain14 = runs["plain8"]["final_train_error"], runs["plain14"]["final_train_error"]
    assert verdict["plain"]["deeper_has_higher_train_error"] == (plain14 > plain8)
    answer = "yes" if plain14 > plain8 else "no"
    assert verdict["lines"][0] == (f"deeper plain net has higher training error than the shallower one: {answer} "
                                   f"(plain-14 {plain14:.2f}% vs plain-8 {plain8:.2f}%)")
    for name in MODELS:
        summary = json.loads((out / name / "summary.json").read_text())
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert runs[name]["final_test_error"] == summary["test_top1_error"]
        assert runs[name]["final_train_error"] == pytest.approx(records[-1]["train_error"], abs=1e-3)
    resnet = verdict["resnet"]
    assert resnet["deeper_has_lower_test_error"] == (runs["resnet14"]["final_test_error"]
                                                     < runs["resnet8"]["final_test_error"])
    assert any(line.startswith("deeper ResNet has lower training error: ") for line in verdict["lines"])
    assert (out / "degradation.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ValueError, match="another recipe/budget"):
        run_degradation(**{**common, "budget": 3}, log=lambda _line: None)
