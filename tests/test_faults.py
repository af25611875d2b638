"""Surviving a cluster, as fast tests on data the tests write: damaged checkpoints, requeue (--resume auto),
preemption signals, two nodes on loopback, and torchrun's elastic restart after a worker is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .test_train import resnets_cmd, run_cli, weights

ITERATIONS = 48  # 1024 images / batch 64 = 16 per epoch, 3 epochs


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "resnet8", "--recipe", "fast", "--no-progress", "--seed", "3", "--data", str(data),
            "--subset", "1024", "--eval-subset", "256", "--epochs", "3", "--batch-size", "64", "--deterministic",
            "--precision", "fp32", "--log-every", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(synthetic_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run every faulted run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli(*train_args(synthetic_cifar, out))
    return weights(out / "model.pt")


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


def flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_flipped_checkpoint_is_refused_and_resume_falls_back_to_the_previous(
        synthetic_cifar: Path, tmp_path: Path, reference: dict[str, torch.Tensor]) -> None:
    out = tmp_path / "run"
    run_cli(*train_args(synthetic_cifar, out, "--max-iterations", "32"))  # evaluations at 16 and 32
    last, previous = out / "checkpoints" / "last.pt", out / "checkpoints" / "previous.pt"
    assert torch.load(previous, weights_only=True)["iteration"] == 16
    flip_bytes(last)
    result = run_cli("eval", "--pretrained", str(last), check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert str(last) in errors[0] and "damaged" in errors[0] and "Traceback" not in result.stderr
    resumed = run_cli(*train_args(synthetic_cifar, out, "--resume"))
    assert f"resuming from the intact checkpoint {previous} (iteration 16)" in resumed.stdout
    assert f"resumed {previous} at iteration 16 " in resumed.stdout
    assert_same_weights(weights(out / "model.pt"), reference)


def test_bad_settings_are_refused_before_any_work(synthetic_cifar: Path, tmp_path: Path) -> None:
    for flag, value in (("--lr", "nan"), ("--lr", "-0.1"), ("--weight-decay", "inf")):
        out = tmp_path / f"run{flag}{value}"
        started = time.monotonic()
        result = run_cli(*train_args(synthetic_cifar, out, flag, value), check=False)
        assert result.returncode == 2 and "is not a finite number" in result.stderr, result.stderr
        assert not out.exists() and time.monotonic() - started < 30
    result = run_cli(*train_args(synthetic_cifar, tmp_path / "m", "--set", "momentum=1.5"), check=False)
    assert result.returncode == 2 and "momentum = 1.5" in result.stderr


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines (process ended: {process.poll()})")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_and_resume_auto_continues_bit_identically(
        synthetic_cifar: Path, tmp_path: Path, reference: dict[str, torch.Tensor], stop_signal: signal.Signals) -> None:
    out = tmp_path / "run"
    args = train_args(synthetic_cifar, out, "--resume", "auto")  # one command for the first start and the requeue
    process = subprocess.Popen(resnets_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / "metrics.jsonl", 20, process)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-2000:]
    assert "--resume auto: no checkpoint yet, starting" in stdout
    stopped_at = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    assert f"stopped by {stop_signal.name} at iteration {stopped_at}; checkpoint written" in stderr
    assert 20 <= stopped_at < ITERATIONS and not (out / "model.pt").exists()
    resumed = run_cli(*args)
    assert f"at iteration {stopped_at} " in next(line for line in resumed.stdout.splitlines()
                                                  if line.startswith("resumed "))
    lines = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == list(range(1, ITERATIONS + 1))
    assert_same_weights(weights(out / "model.pt"), reference)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "resnets"]


def ddp_args(data: Path, out: Path) -> list[str]:
    return [*train_args(data, out), "--device", "cpu", "--checkpoint-every", "4"]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def one_node(synthetic_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of an uninterrupted torchrun run: one node, two CPU processes of one thread each."""
    out = tmp_path_factory.mktemp("one-node") / "run"
    result = subprocess.run([*torchrun("--standalone", "--nproc-per-node", "2"), *ddp_args(synthetic_cifar, out)],
                            capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return weights(out / "model.pt")


def test_two_nodes_on_loopback_equal_two_processes_on_one_node(
        synthetic_cifar: Path, tmp_path: Path, one_node: dict[str, torch.Tensor]) -> None:
    two_nodes, port = tmp_path / "two-nodes", free_port()
    nodes = [subprocess.Popen([*torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                                         "--master-addr", "127.0.0.1", "--master-port", str(port)),
                               *ddp_args(synthetic_cifar, two_nodes)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    config = json.loads((two_nodes / "config.json").read_text())
    assert config["hardware"]["world_size"] == 2 and config["hardware"]["threads"] == 1
    assert json.loads((two_nodes / "summary.json").read_text())["parameters_identical_across_ranks"] is True
    assert_same_weights(weights(two_nodes / "model.pt"), one_node)


def worker_with_rank(agent: int, rank: int) -> int:
    """The pid of the torchrun worker process (a child of the agent) whose environment says RANK=rank."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields["PPid"]) == agent:
                environment = (status.parent / "environ").read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in environment:
                    return int(status.parent.name)
    raise AssertionError(f"torchrun agent {agent} has no worker with RANK={rank}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker to kill through /proc (Linux)")
def test_elastic_restart_after_kill_9_of_one_worker_equals_the_uninterrupted_run(
        synthetic_cifar: Path, tmp_path: Path, one_node: dict[str, torch.Tensor]) -> None:
    out = tmp_path / "elastic"
    agent = subprocess.Popen([*torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "3"),
                              *ddp_args(synthetic_cifar, out), "--resume", "auto"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    wait_for_lines(out / "metrics.jsonl", 22, agent)  # past the checkpoint at iteration 20
    os.kill(worker_with_rank(agent.pid, 1), signal.SIGKILL)
    stdout, stderr = agent.communicate(timeout=600)
    assert agent.returncode == 0, stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 1" in stderr  # torchrun saw the kill, then restarted the group
    resumed = next(line for line in stdout.splitlines() if line.startswith("resumed "))
    assert int(resumed.split(" at iteration ")[1].split()[0]) >= 20, resumed
    lines = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == list(range(1, ITERATIONS + 1))
    assert_same_weights(weights(out / "model.pt"), one_node)
