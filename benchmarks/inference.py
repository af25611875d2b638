"""Inference and training throughput: our ResNets against torchvision's, same process, precision, batch, threads.

Inference (ResNet-18, ResNet-50 at 224, fp32 and bf16): torchvision eager (NCHW; bf16 by autocast) is the
baseline; torchvision with channels_last is shown as a second reference; ours is BN-folded + channels_last
through each backend (eager; jit = TorchScript freeze; inductor = torch.compile with freezing), bf16 as
bf16 weights and, for eager, also fp32 weights under autocast. Training (ResNet-50, fp32): ours vs torchvision,
forward + backward + SGD step. Ours is built as v1.5 (stride on the 3x3) so that both compute the same thing.

All candidates of one table are timed interleaved (A, B, C, A, B, C, ...) and the ratio is the median of
per-round ratios, so background load on a shared machine affects them alike. Peak memory: each configuration
once more in a fresh subprocess (resnets.deploy.bench.measure_isolated; CPU: growth of the peak RSS).

    .venv/bin/python benchmarks/inference.py --batch-size 16 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from resnets.deploy.bench import BenchConfig, build_step, measure_isolated, time_interleaved


def candidates(model: str, precision: str, backends: list[str], batch: int) -> dict[str, BenchConfig]:
    common = {"model": model, "batch_size": batch, "precision": precision, "mode": "inference"}
    found = {"torchvision": BenchConfig(impl="torchvision", **common),
             "torchvision channels_last": BenchConfig(impl="torchvision", channels_last=True, **common)}
    for backend in backends:
        name = f"ours fused {backend}" + (" bf16 weights" if precision == "bf16" else "")
        found[name] = BenchConfig(fused=True, backend=backend, channels_last=True, v15=True, **common)
    if precision == "bf16" and "eager" in backends:
        found["ours fused eager autocast"] = BenchConfig(fused=True, channels_last=True, v15=True,
                                                         bf16_weights=False, **common)
    return found


def run_table(title: str, configs: dict[str, BenchConfig], warmup: int, rounds: int) -> list[dict]:
    print(f"\n## {title}", flush=True)
    steps, setup = {}, {}
    for name, config in configs.items():
        start = time.perf_counter()
        steps[name] = build_step(config)
        setup[name] = time.perf_counter() - start
    times = time_interleaved(steps, warmup, rounds)
    base = times["torchvision"]
    rows = []
    header = f"{'candidate':<34} {'images/s':>9} {'vs torchvision':>15} {'vs tv channels_last':>20}"
    print(header + "\n" + "-" * len(header))
    for name, seconds in times.items():
        batch = configs[name].batch_size
        ratio = statistics.median(b / s for b, s in zip(base, seconds, strict=True))
        reference = times.get("torchvision channels_last")
        ratio_cl = statistics.median(b / s for b, s in zip(reference, seconds, strict=True)) if reference else None
        row = {"table": title, "candidate": name, "images_per_s": batch / statistics.median(seconds),
               "runs": [batch / s for s in seconds], "ratio_vs_torchvision": ratio,
               "ratio_vs_torchvision_channels_last": ratio_cl, "build_seconds": setup[name]}
        rows.append(row)
        cl = f"{ratio_cl:.2f}x" if ratio_cl is not None else "-"
        print(f"{name:<34} {row['images_per_s']:>9.1f} {ratio:>14.2f}x {cl:>20}", flush=True)
    return rows


def add_memory(rows: list[dict], configs: dict[str, BenchConfig], names: list[str]) -> None:
    for row in rows:
        if row["candidate"] in names:
            config = configs[row["candidate"]]
            short = BenchConfig(**{**config.__dict__, "warmup": 1, "repeats": 1})
            result = measure_isolated(short)
            row["peak_memory_mb"], row["peak_rss_mb"] = result.peak_memory_mb, result.peak_rss_mb
            print(f"  peak memory {row['candidate']:<32} +{result.peak_memory_mb:7.0f} MB "
                  f"(process peak RSS {result.peak_rss_mb:.0f} MB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--backends", default="eager,inductor", help="of eager, jit, inductor (jit ~ eager here)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path, help="write all rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b]
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, inference batch {args.batch_size}, "
          f"train batch {args.train_batch_size}, {args.rounds} interleaved rounds after {args.warmup} warm-up; "
          "images/s are medians")
    rows: list[dict] = []
    for model in [] if args.no_inference else args.models.split(","):
        for precision in args.precisions.split(","):
            configs = candidates(model, precision, backends, args.batch_size)
            for config in configs.values():
                config.threads = args.threads
            table = run_table(f"{model} inference {precision} 224", configs, args.warmup, args.rounds)
            if not args.no_memory:
                add_memory(table, configs, ["torchvision", next(n for n in configs if n.startswith("ours"))])
            rows += table
    if not args.no_train:
        common = {"model": "resnet50", "mode": "train", "batch_size": args.train_batch_size, "threads": args.threads}
        configs = {"torchvision": BenchConfig(impl="torchvision", **common), "ours": BenchConfig(v15=True, **common)}
        table = run_table("resnet50 training step fp32 224", configs, 1, args.rounds)
        if not args.no_memory:
            add_memory(table, configs, list(configs))
        rows += table
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)  # atomic: a reader never sees half a file
    return 0


if __name__ == "__main__":
    sys.exit(main())
