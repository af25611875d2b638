"""The training loop end to end on real CIFAR-10 images: learning, exact resume after kill -9, torchrun DDP,
NaN handling, and `resnets eval`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnets.data.cifar import load_cifar
from resnets.data.decoded import spread_indices
from resnets.data.loader import TensorBatchLoader
from resnets.evaluate.metrics import evaluate_batches
from resnets.models.weights import extract_state_dict, model_from_weight_data, read_weight_file

SMOKE = ["--model", "resnet8", "--recipe", "fast", "--no-progress", "--seed", "3"]


def resnets_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "resnets", *args]


def run_cli(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(resnets_cmd(*args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"resnets {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return extract_state_dict(read_weight_file(path))


def train_images(data: Path) -> int:
    """Training images for the learning test: all 2,048 of the synthetic set, 4,000 of the real one."""
    return 2048 if (data / "data_batch_1.bin").is_file() else 4000


def test_short_real_run_learns_and_eval_agrees(cifar_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    images = train_images(cifar_data)
    result = run_cli("train", *SMOKE, "--data", str(cifar_data), "--subset", str(images), "--epochs", "6",
                     "--batch-size", "128", "--lr", "0.4", "--precision", "fp32", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_top1_error"] < 60, summary  # chance is 90%
    assert "test error:" in result.stdout.splitlines()[-1]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iteration"] == summary["iterations"] == 6 * (images // 128)
    assert [r["test_error"] for r in records if "test_error" in r][-1] < records[0]["train_error"]
    for name in ("config.json", "curves.png", "model.pt", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    recorded = json.loads((out / "config.json").read_text())["recipe"]  # only what a CIFAR run reads
    assert recorded["pad"] == 4 and "crop_size" not in recorded and "lighting_pca" not in recorded
    # `resnets eval` on the finished run sees the same test images with the same preprocessing: the same error.
    evaluated = run_cli("eval", "--pretrained", str(out), "--data", str(cifar_data), "--json")
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert report["images"] == summary["test_images"]
    assert abs(report["top1_error"] - summary["test_top1_error"]) <= 0.01, (report, summary)


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", *SMOKE, "--data", str(data), "--subset", "1024", "--eval-subset", "256", "--epochs", "3",
            "--batch-size", "64", "--deterministic", "--precision", "fp32", "--checkpoint-every", "3",
            "--log-every", "1", "--out", str(out)]


def test_resume_after_kill_9_is_bit_identical(cifar_data: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_cli(*_train_args(cifar_data, reference))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(resnets_cmd(*_train_args(cifar_data, interrupted)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 300
    killed_at = 0
    while time.monotonic() < deadline and process.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= 22:  # mid-epoch 2 (16 iterations per epoch), between checkpoints or not
            os.kill(process.pid, signal.SIGKILL)
            killed_at = len(lines)
            break
        time.sleep(0.02)
    process.wait()
    assert killed_at, "the run finished or stalled before it could be killed"
    assert not (interrupted / "model.pt").exists()
    saved_at = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    resumed = run_cli(*_train_args(cifar_data, interrupted), "--resume")
    # A resume, not a restart: it announces the checkpoint's iteration and appends only the remaining steps.
    announced = [line for line in resumed.stdout.splitlines() if line.startswith("resumed ")]
    assert len(announced) == 1 and f"at iteration {saved_at} " in announced[0], resumed.stdout[-2000:]
    assert 0 < saved_at < 48

    ours, theirs = weights(interrupted / "model.pt"), weights(reference / "model.pt")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert iterations == list(range(1, 49))  # --log-every 1: one line per step, none repeated or lost


def test_torchrun_two_cpu_processes(cifar_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "resnets", "train", *SMOKE, "--data", str(cifar_data), "--subset", "1024",
               "--eval-subset", "256", "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["hardware"]["world_size"] == 2
    # each rank takes half the global batch of 64: 1024 / 64 = 16 iterations per epoch
    assert config["iterations_per_epoch"] == 16 and config["iterations"] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 32 and summary["test_top1_error"] < 90
    assert summary["parameters_identical_across_ranks"] is True  # gradients were averaged: one model, two copies
    assert result.stdout.count("test error:") == 1  # only rank 0 reports
    # Each rank evaluated half of the 256 test images; summed, they match one process evaluating the saved weights.
    assert summary["test_images"] == 256
    contents = read_weight_file(out / "model.pt")
    model = model_from_weight_data(contents)
    test = load_cifar(cifar_data, "cifar10", "test")
    chosen = spread_indices(len(test.labels), 256)
    loader = TensorBatchLoader(test.images[chosen], test.labels[chosen], batch_size=100,
                               mean=contents["meta"]["preprocess"]["mean_image"])
    alone = evaluate_batches(model, loader, torch.device("cpu"))
    assert alone["images"] == 256
    assert abs(alone["top1_error"] - summary["test_top1_error"]) <= 100 / 256 + 1e-9  # at most one image flips


def test_nan_loss_stops_with_one_clear_line_and_keeps_the_checkpoint(cifar_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    args = ["train", *SMOKE, "--data", str(cifar_data), "--subset", "512", "--eval-subset", "128",
            "--batch-size", "64", "--epochs", "3", "--precision", "fp32", "--out", str(out)]
    run_cli(*args, "--epochs", "1")
    good = weights(out / "checkpoints" / "last.pt")
    result = run_cli(*args, "--resume", "--set", "lr=1e12", check=False)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "loss became" in error_lines[0] and "last good checkpoint" in error_lines[0]
    kept = weights(out / "checkpoints" / "last.pt")
    assert all(torch.equal(kept[k], good[k]) for k in good)


def test_bad_inputs_give_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("train", *SMOKE, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2
    assert "not found" in result.stderr and "--data" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "--model", "resnet21", "--out", str(tmp_path / "y"), check=False)
    assert result.returncode == 2 and "unknown model 'resnet21'" in result.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    result = run_cli("eval", "--pretrained", str(corrupt), check=False)
    assert result.returncode == 2 and "corrupt.pt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--resume"])
def test_resume_refuses_another_architecture(synthetic_cifar: Path, tmp_path: Path, option: str) -> None:
    out = tmp_path / "arch"
    base = ["train", "--recipe", "fast", "--no-progress", "--data", str(synthetic_cifar), "--subset", "256",
            "--eval-subset", "64", "--batch-size", "64", "--epochs", "1", "--out", str(out)]
    run_cli(*base, "--model", "resnet8")
    result = run_cli(*base, "--model", "resnet8", "--shortcut", "B", option, check=False)
    assert result.returncode == 2 and "another architecture" in result.stderr and "shortcut" in result.stderr
