"""Throughput and peak memory of inference (eval, no_grad) and training steps (forward + backward + SGD).

Throughput: images/s from the median step time of `repeats` timed steps after `warmup` untimed ones;
several candidates can be timed interleaved (A, B, A, B, ...) so that load from other processes on a
shared machine hits all of them alike. Peak memory: CUDA -> torch.cuda.max_memory_allocated (tensors
only). CPU -> growth of the process's peak resident set size during the steps over its resident size
after building the model (Linux: VmHWM/VmRSS of /proc/self/status, the peak reset through
/proc/self/clear_refs; elsewhere resource.getrusage ru_maxrss). RSS counts everything (allocator caches,
oneDNN workspaces, compiled code) and freed memory often stays resident, so each configuration is measured
in a fresh subprocess (`measure_isolated`). `peak_rss_mb` is the process total. With jit/inductor the first
call compiles, so their peak includes compilation. (ru_maxrss alone would mislead in a subprocess: Linux
carries the parent's peak across fork + exec.)
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..models import create_model, model_spec
from ..runtime import resolve_device
from .fuse import BACKENDS, compile_for_inference
from .optimize import BACKENDS as OPTIMIZE_BACKENDS
from .optimize import optimize_for_inference

Mode = Literal["inference", "train"]
MODES: tuple[str, ...] = ("inference", "train")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")  # int8: with optimize only
IMPLS: tuple[str, ...] = ("ours", "torchvision")


@dataclass
class BenchConfig:
    model: str = "resnet50"
    mode: Mode = "inference"
    batch_size: int = 32
    precision: str = "fp32"
    impl: str = "ours"  # "torchvision": torchvision.models.<model>(weights=None), the reference implementation
    fused: bool = False  # inference only: BN folded (fuse_for_inference)
    backend: str = "eager"  # with fused: eager | jit | inductor (compile_for_inference); with optimize: see below
    optimize: bool = False  # inference only: resnets.optimize_for_inference(precision, batch size, backend)
    bf16_weights: bool = True  # fused bf16 inference: bf16 weights (True) or fp32 weights under autocast (False)
    channels_last: bool = False
    threads: int | None = None
    warmup: int = 2
    repeats: int = 5
    image_size: int | None = None  # default: the model's native size (224 ImageNet, 32 CIFAR)
    device: str = "cpu"
    v15: bool = False  # bottleneck stride on the 3x3 (torchvision's layout; set it to compare like with like)

    def validate(self) -> None:
        checks = [(self.mode in MODES, f"mode {self.mode!r}; valid: {', '.join(MODES)}"),
                  (self.precision in PRECISIONS, f"precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"),
                  (self.impl in IMPLS, f"impl {self.impl!r}; valid: {', '.join(IMPLS)}"),
                  (self.batch_size >= 1, f"batch size {self.batch_size} (must be >= 1)"),
                  (self.repeats >= 1 and self.warmup >= 0, "repeats >= 1 and warmup >= 0 are needed"),
                  (not (self.fused and self.mode == "train"), "--fused with training (BN must train)"),
                  (not (self.fused and self.impl == "torchvision"), "--fused applies to our models only"),
                  (not (self.optimize and (self.mode == "train" or self.impl == "torchvision" or self.fused)),
                   "--optimize is for inference of our models, without --fused"),
                  (self.precision != "int8" or self.optimize, "int8 is inference-only post-training quantisation: use "
                                                           "--mode inference --optimize"),
                  (self.backend in (OPTIMIZE_BACKENDS if self.optimize else BACKENDS),
                   f"backend {self.backend!r}; valid: {', '.join(OPTIMIZE_BACKENDS if self.optimize else BACKENDS)}"),
                  (self.backend == "eager" or self.fused or self.optimize,
                   f"backend {self.backend!r} without --fused or --optimize")]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"invalid benchmark setting: {what}")

    def label(self) -> str:
        parts = [self.impl, self.model, self.mode, self.precision, f"batch {self.batch_size}"]
        parts += ["fused" + ("" if self.backend == "eager" else f"+{self.backend}")] if self.fused else []
        parts += [f"optimized ({self.backend})"] if self.optimize else []
        parts += ["channels_last"] if self.channels_last else []
        return " ".join(parts)


@dataclass
class BenchResult:
    config: BenchConfig
    images_per_s: float  # median
    runs: list[float] = field(default_factory=list)  # images/s of each timed step
    threads_used: int = 0
    setup_seconds: float = 0.0  # model build + warm-up steps (which include jit/inductor compilation)
    peak_memory_mb: float | None = None  # CUDA: max allocated; CPU: step_memory_mb (isolated runs only)
    peak_rss_mb: float | None = None
    memory_method: str = "not measured"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.config), **{k: v for k, v in asdict(self).items() if k != "config"}}


def build_model(config: BenchConfig) -> nn.Module:
    if config.impl == "torchvision":
        import torchvision

        spec = model_spec(config.model)
        if spec.family != "imagenet" or not spec.residual:
            raise ValueError(f"torchvision has no {config.model}; compare ImageNet ResNets (resnet18..resnet152)")
        return getattr(torchvision.models, config.model)(weights=None)
    bottleneck = model_spec(config.model).block == "bottleneck"
    return create_model(config.model, stride_in_1x1=False if config.v15 and bottleneck else None)


def build_step(config: BenchConfig) -> tuple[Callable[[], Any], torch.device]:
    """A closure running one benchmark step on a fixed random batch, and the device it runs on."""
    config.validate()
    device = resolve_device(config.device)
    model = build_model(config).to(device)
    size = config.image_size or model_spec(config.model).input_size
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(config.batch_size, 3, size, size, generator=generator).to(device, memory_format=memory_format)
    bf16 = config.precision == "bf16"

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    if config.mode == "train":
        model.train().to(memory_format=memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        labels = torch.randint(0, model.fc.out_features, (config.batch_size,), generator=generator).to(device)

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()

        return train_step, device

    model.eval()
    if config.optimize:
        optimized = optimize_for_inference(model, config.precision, config.batch_size, device=device,
                                           backend=config.backend, image_size=size, check=False)

        def optimized_step() -> torch.Tensor:
            return optimized(inputs)

        return optimized_step, device
    if config.fused:
        weights_bf16 = bf16 and config.bf16_weights
        runner = compile_for_inference(model, config.backend, config.channels_last,
                                       torch.bfloat16 if weights_bf16 else None, example=inputs)
        use_autocast = bf16 and not weights_bf16
    else:
        runner = model.to(memory_format=memory_format)
        use_autocast = bf16

    def inference_step() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            return runner(inputs)

    return inference_step, device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[str, tuple[Callable[[], Any], torch.device]], warmup: int = 2,
                     repeats: int = 5, pause: float = 0.0) -> dict[str, list[float]]:
    """Seconds per step of each candidate; rounds alternate candidates so that background load is shared.

    `pause` seconds of idle before each timed step (not timed) let the previous candidate's thread pool stop
    spinning: runtimes whose idle workers busy-wait (OpenVINO's TBB, OpenMP) otherwise slow whoever runs next.
    """
    for fn, device in steps.values():
        for _ in range(warmup):
            fn()
        _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (fn, device) in steps.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        # ru_maxrss is KiB on Linux and bytes on macOS; no current value without /proc.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 2**20
        return peak, peak


def _reset_peak_rss() -> bool:
    """Set the peak RSS to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(config: BenchConfig) -> BenchResult:
    """Build, warm up and time one configuration in this process (memory: CUDA only; see measure_isolated)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    step, device = build_step(config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset = _reset_peak_rss()
    rss_before = _rss_mb()[0 if reset else 1]
    seconds = time_interleaved({"step": (step, device)}, config.warmup, config.repeats)["step"]
    setup = time.perf_counter() - start - sum(seconds)
    result = BenchResult(config, config.batch_size / statistics.median(seconds),
                         [config.batch_size / s for s in seconds], torch.get_num_threads(), round(setup, 2))
    if device.type == "cuda":
        result.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
        result.memory_method = "torch.cuda.max_memory_allocated"
    else:
        result.peak_rss_mb = _rss_mb()[1]
        result.peak_memory_mb = result.peak_rss_mb - rss_before
        result.memory_method = "peak RSS growth during the steps, in-process (memory freed earlier may be reused)"
    return result


def measure_isolated(config: BenchConfig, timeout: float | None = 1800) -> BenchResult:
    """`measure` in a fresh Python process, so that the CPU peak RSS belongs to this configuration alone."""
    command = [sys.executable, "-m", "resnets.deploy.bench", json.dumps(asdict(config))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark subprocess for {config.label()} failed (exit {done.returncode}): {tail}")
    data = json.loads(lines[-1])
    fields = set(BenchConfig.__dataclass_fields__)
    result = BenchResult(BenchConfig(**{k: v for k, v in data.items() if k in fields}),
                         **{k: v for k, v in data.items() if k not in fields})
    if result.config.device != "cuda" and not result.config.device.startswith("cuda"):
        result.memory_method = "peak RSS growth during the steps, fresh subprocess"
    return result


def format_result(result: BenchResult) -> str:
    runs = ", ".join(f"{r:.1f}" for r in result.runs)
    memory = "" if result.peak_memory_mb is None else f"; peak memory +{result.peak_memory_mb:.0f} MB"
    memory += "" if result.peak_rss_mb is None else f" (process peak RSS {result.peak_rss_mb:.0f} MB)"
    return (f"{result.config.label()}, {result.threads_used} threads: {result.images_per_s:.1f} images/s "
            f"(median of {len(result.runs)}: {runs}){memory}")


def _main(argv: list[str]) -> int:
    config = BenchConfig(**json.loads(argv[0]))
    print(json.dumps(measure(config).to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
