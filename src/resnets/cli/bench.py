"""`resnets bench`: images/s and peak memory of inference and training steps."""

from __future__ import annotations

import argparse
import json

from ..deploy.bench import PRECISIONS, BenchConfig, format_result, measure, measure_isolated

EPILOG = """images/s: batch size / median step time of --repeats timed steps after --warmup untimed ones.
inference: eval mode under no_grad; train: forward + backward + SGD step (momentum 0.9). bf16: autocast,
or bf16 weights with --fused. Peak memory: CUDA max_memory_allocated; on CPU the growth of the process's peak
resident set (VmHWM, else ru_maxrss) during the steps, in a fresh subprocess per mode (--in-process skips that:
faster, but the CPU memory figure then is only an upper bound). CPU timings vary with other load."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="images/s and peak memory of inference / training",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model name (see `resnets models`)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--mode", choices=("inference", "train", "both"), default="both")
    parser.add_argument("--fused", action="store_true", help="inference with BN folded (fuse_for_inference)")
    parser.add_argument("--optimize", action="store_true",
                        help="inference through resnets.optimize_for_inference (the fastest path known for the "
                             "device, precision and batch size; int8 needs it)")
    parser.add_argument("--backend", default=None,
                        help="with --fused: eager (default), jit (TorchScript freeze) or inductor (torch.compile, "
                             "freezing); with --optimize: auto (default), eager, jit, inductor, onnxruntime, pt2e")
    parser.add_argument("--autocast", action="store_true",
                        help="with --fused --precision bf16: fp32 weights under autocast instead of bf16 weights")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--image-size", type=int, help="input side (default: 224 ImageNet, 32 CIFAR)")
    parser.add_argument("--v1.5", dest="v15", action="store_true", help="bottleneck stride on the 3x3 (torchvision)")
    parser.add_argument("--torchvision", action="store_true", help="time torchvision's model instead of ours")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-process", action="store_true", help="no subprocess per mode (see below)")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode")
    parser.set_defaults(handler=run)


def backend(args: argparse.Namespace) -> str:
    if args.backend is not None:
        return args.backend
    return "auto" if args.optimize else "eager"


def run(args: argparse.Namespace) -> int:
    modes = ("inference", "train") if args.mode == "both" else (args.mode,)
    configs = [BenchConfig(model=args.model, mode=mode, batch_size=args.batch_size, precision=args.precision,
                           impl="torchvision" if args.torchvision else "ours",
                           fused=args.fused and mode == "inference", optimize=args.optimize and mode == "inference",
                           backend=backend(args) if mode == "inference" else "eager",
                           bf16_weights=not args.autocast, channels_last=args.channels_last, threads=args.threads,
                           warmup=args.warmup, repeats=args.repeats, image_size=args.image_size,
                           device=args.device, v15=args.v15) for mode in modes]
    for config in configs:
        config.validate()  # every setting checked before the first (slow) measurement
    for config in configs:
        result = measure(config) if args.in_process else measure_isolated(config)
        print(json.dumps(result.to_json()) if args.json else format_result(result), flush=True)
    return 0
