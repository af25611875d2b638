"""One SGD step (forward + backward) of a very deep CIFAR net on a CIFAR-sized batch: seconds and peak memory,
with and without activation checkpointing, each in a fresh process (peak RSS growth over the model's own memory).

    python benchmarks/deep_step.py --model preact_resnet1001 --batch-size 16 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import resnets


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_step(model_name: str, batch_size: int, checkpointing: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = resnets.create_model(model_name, activation_checkpointing=checkpointing).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inputs, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    before = peak_rss_mb()
    start = time.perf_counter()
    loss = F.cross_entropy(model(inputs), labels)
    loss.backward()
    optimizer.step()
    return {"seconds": time.perf_counter() - start, "peak_growth_mb": peak_rss_mb() - before,
            "loss": float(loss), "params": sum(p.numel() for p in model.parameters())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="preact_resnet1001")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16])
    parser.add_argument("--child", nargs=2, metavar=("BATCH", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.model, int(args.child[0]), args.child[1] == "1")))
        return 0
    print(f"{args.model}, one training step on 32x32 inputs, {torch.get_num_threads()} threads, fp32")
    for batch in args.batch_size:
        for checkpointing in (False, True):
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", str(batch),
                                  str(int(checkpointing))], capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"batch {batch:4d}, activation checkpointing {'on ' if checkpointing else 'off'}: "
                  f"{result['seconds']:6.1f} s, peak memory +{result['peak_growth_mb']:,.0f} MB "
                  f"(loss {result['loss']:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
