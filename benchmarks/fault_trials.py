"""Random kill -9 / resume trials: each trial kills a deterministic training run 1-3 times at random moments,
resumes it with the same command (`--resume auto`) until it finishes, and compares its final weights with an
uninterrupted run's. Prints one line per trial and "N/N bit-identical".

With --elastic each run is two CPU workers under `torchrun --max-restarts 3`: a random worker is killed -9 1-3
times while torchrun keeps going; torchrun restarts the group and the workers resume from the last checkpoint by
themselves. The reference is then the same torchrun command left alone.

    python benchmarks/fault_trials.py --trials 5 --data ../shared/datasets/cifar10-jpeg
    python benchmarks/fault_trials.py --trials 5 --elastic --data ../shared/datasets/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resnets.models.weights import extract_state_dict, read_weight_file


def train_command(data: Path, out: Path, iterations: int, elastic: bool) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts", "3"]
    return [sys.executable, *(launcher if elastic else []), "-m", "resnets", "train",
            "--model", "resnet8", "--recipe", "fast", "--no-progress",
            "--data", str(data), "--subset", "1024", "--eval-subset", "256", "--iterations", str(iterations),
            "--batch-size", "64", "--deterministic", "--precision", "fp32", "--checkpoint-every", "10",
            "--out", str(out), "--resume", "auto", *(["--device", "cpu"] if elastic else [])]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return extract_state_dict(read_weight_file(out / "model.pt"))


def workers_of(agent: int) -> list[int]:
    """The worker processes torchrun's agent `agent` runs now (its children, found through /proc)."""
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            parent = next(line for line in status.read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if int(parent.split()[1]) == agent:
            children.append(int(status.parent.name))
    return children


def run_elastic_with_kills(command: list[str], kills: int, rng: random.Random, env: dict[str, str]) -> int:
    """One torchrun; kill -9 a random worker after a random delay, up to `kills` times. Returns the kills."""
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    done = 0
    for _ in range(kills):
        time.sleep(rng.uniform(6.0, 14.0))  # (re)start and rendezvous take seconds; some kills land before a checkpoint
        workers = workers_of(agent.pid)
        if agent.poll() is not None or not workers:
            break
        os.kill(rng.choice(workers), signal.SIGKILL)
        done += 1
    if agent.wait() != 0:
        raise RuntimeError(f"torchrun ended with status {agent.returncode}: {' '.join(command)}")
    return done


def run_with_kills(command: list[str], kills: int, rng: random.Random, env: dict[str, str]) -> int:
    """Start, kill -9 after a random delay, restart; up to `kills` times, then let it finish. Returns the kills."""
    done = 0
    for _ in range(kills):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(4.0, 12.0))  # start-up takes a few seconds; some kills land before any checkpoint
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        done += 1
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=80)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder (binary or image folders)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--elastic", action="store_true", help="kill one of two torchrun workers instead")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1" if args.elastic else "2"}
    trial_run = run_elastic_with_kills if args.elastic else run_with_kills
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="resnets-faults-") as folder:
        reference = Path(folder) / "reference"
        subprocess.run(train_command(args.data, reference, args.iterations, args.elastic), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        expected = final_weights(reference)
        identical = 0
        for trial in range(1, args.trials + 1):
            out = Path(folder) / f"trial{trial}"
            command = train_command(args.data, out, args.iterations, args.elastic)
            kills = trial_run(command, rng.randint(1, 3), rng, env)
            ours = final_weights(out)
            same = ours.keys() == expected.keys() and all(torch.equal(ours[k], expected[k]) for k in ours)
            identical += same
            print(f"trial {trial}: killed {kills}x, final weights {'bit-identical' if same else 'DIFFERENT'}",
                  flush=True)
    print(f"{identical}/{args.trials} bit-identical")
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
