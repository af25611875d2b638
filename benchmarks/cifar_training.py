"""Training throughput on CIFAR-10: the resnets trainer vs a conventional PyTorch trainer, same model and precision.

ours:          `resnets.train.classify.train` itself (decoded uint8 tensors in memory, batched pad-crop-flip on the
               training device, channels_last), images/s read from its own metrics log.
conventional:  torchvision ImageFolder over the JPEG files + per-sample RandomCrop(32, 4) / RandomHorizontalFlip /
               ToTensor / Normalize in DataLoader workers, the same model in the default memory format.
model step:    with --ceiling, the forward + backward + SGD step alone on one batch held in memory (no data
               work at all), in the conventional trainer's memory format and in ours (channels_last, optionally
               compiled): the most any trainer could reach with this model and precision on this machine.
Also measures this machine's bf16 matmul peak and reports ours as a fraction of it (training FLOPs taken as
3 x forward multiply-adds x 2).

    python benchmarks/cifar_training.py --models resnet20 resnet56 resnet110 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

import resnets
from resnets.data.paths import datasets_root
from resnets.runtime import autocast
from resnets.train.classify import train
from resnets.train.plan import RunPlan
from resnets.train.recipes import RunOptions, get_recipe

BATCH = 128


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def ours(model: str, precision: str, data: Path, iterations: int, log_every: int, compile: bool = False) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        # a throughput run: the lr does not matter
        recipe = dataclasses.replace(get_recipe("paper", depth=resnets.model_spec(model).depth), error_warmup_lr=None)
        options = RunOptions(model=model, data=str(data), out=out, precision=precision, progress=False,
                             max_iterations=iterations, log_every=log_every, eval_subset=500, compile=compile)
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own report; we print a table
            train(RunPlan(options, recipe))
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    # the first window includes warm-up (allocations, oneDNN primitive creation)
    return [r["images_per_s"] for r in records[1:] if "images_per_s" in r and r["iterations"] == log_every]


def conventional(model_name: str, precision: str, data: Path, iterations: int, log_every: int,
                 workers: int) -> list[float]:
    normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    dataset = torchvision.datasets.ImageFolder(
        str(data / "train"), transform=transforms.Compose([transforms.RandomCrop(32, padding=4),
                                                           transforms.RandomHorizontalFlip(),
                                                           transforms.ToTensor(), normalize]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    return timed_steps(resnets.create_model(model_name), loader, precision, iterations, log_every)


def timed_steps(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str,
                iterations: int, log_every: int, lr: float = 0.1) -> list[float]:
    """images/s of plain SGD training steps over `batches`, per window of `log_every` steps (the first dropped);
    fetching the next batch is inside the timed window."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    device = torch.device("cpu")
    rates, seen, start = [], 0, time.perf_counter()
    for step, (inputs, labels) in enumerate(batches, 1):
        with autocast(device, precision):
            loss = F.cross_entropy(model(inputs).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += labels.numel()
        if step % log_every == 0:
            rates.append(seen / (time.perf_counter() - start))
            seen, start = 0, time.perf_counter()
        if step >= iterations:
            break
    return rates[1:]


def model_step(model_name: str, precision: str, iterations: int, log_every: int, channels_last: bool,
               compile: bool = False) -> list[float]:
    """images/s of the training step alone: one random batch, reused, so that no data work is timed."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = resnets.create_model(model_name).to(memory_format=memory_format)
    inputs = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (BATCH,))
    step_model = torch.compile(model) if compile else model
    return timed_steps(step_model, itertools.repeat((inputs, labels)), precision, iterations, log_every, lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--iterations", type=int, default=60, help="iterations per measurement")
    parser.add_argument("--log-every", type=int, default=10, help="iterations per timed window")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional trainer")
    parser.add_argument("--data", type=Path, default=datasets_root() / "cifar10-jpeg")
    parser.add_argument("--compile", action="store_true", help="also measure ours with torch.compile")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the model step alone (no data work): the bound on any trainer")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    peak = matmul_peak_gflops(torch.bfloat16)
    peak32 = matmul_peak_gflops(torch.float32)
    print(f"matmul peak on this machine: bf16 {peak:.0f} GFLOP/s, fp32 {peak32:.0f} GFLOP/s, "
          f"{torch.get_num_threads()} threads")
    header = f"{'model':<10} {'prec':<7} {'ours img/s':>10} {'conv. img/s':>11} {'ratio':>6} {'GFLOP/s':>8}"
    print(f"{header} {'of peak':>8}  variant")
    results = []
    for model in args.models:
        flops_per_image = 3 * 2 * resnets.complexity(resnets.create_model(model)).macs
        for precision in args.precisions:
            our_rate = statistics.median(ours(model, precision, args.data, args.iterations, args.log_every))
            their_rate = statistics.median(conventional(model, precision, args.data, args.iterations,
                                                        args.log_every, args.workers))
            variants = {"eager": our_rate}
            if args.compile:
                variants["compiled"] = statistics.median(ours(model, precision, args.data, args.iterations,
                                                              args.log_every, compile=True))
            if args.ceiling:
                steps = {"step, default format": (False, False), "step, channels_last": (True, False)}
                if args.compile:
                    steps["step, channels_last, compiled"] = (True, True)
                for variant, (channels_last, compiled) in steps.items():
                    variants[variant] = statistics.median(model_step(model, precision, args.iterations,
                                                                     args.log_every, channels_last, compiled))
            for variant, rate in variants.items():
                gflops = rate * flops_per_image / 1e9
                fraction = gflops / (peak if precision == "bf16" else peak32)
                results.append({"model": model, "precision": precision, "variant": variant, "ours": rate,
                                "conventional": their_rate, "ratio": rate / their_rate, "gflops": gflops,
                                "fraction_of_peak": fraction})
                print(f"{model:<10} {precision:<7} {rate:>10.0f} {their_rate:>11.0f} {rate / their_rate:>5.2f}x "
                      f"{gflops:>8.0f} {100 * fraction:>7.0f}%  {variant}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"peak_bf16": peak, "peak_fp32": peak32, "results": results}, indent=2))


if __name__ == "__main__":
    main()
