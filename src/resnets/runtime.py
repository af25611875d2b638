"""Where and how a run executes: device, DDP process group (torchrun), precision, determinism, RNG state."""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import platform
import random
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(device: str = "auto") -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = str(resolve_device(device))
    if device.startswith("cuda"):
        if world_size > 1:
            device = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(device))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=attempt_store(), rank=rank, world_size=world_size)
    return Runtime(torch.device(device), rank, world_size, local_rank)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when there is one, else the CPU; a CUDA request without CUDA is one clear error."""
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(device)


def attempt_store() -> dist.Store:
    """The rendezvous store of torchrun's env://, under a prefix unique to this restart of the worker group.

    After an elastic restart (--max-restarts) torchrun hands the new workers the same agent store, which still
    holds the dead group's keys: gloo then reads a peer address from the last attempt and fails with
    "connectFullMesh ... Connection refused", or the store barrier counts stale arrivals and hangs.
    """
    store, _rank, _world_size = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"resnets-attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; on CPU use --precision bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_determinism(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@functools.cache
def cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo ("model name", "flags", ...); None where it is absent or unreadable
    (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip() or None
    except OSError:
        return None
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty off Linux, which reads as "no special hardware")."""
    return frozenset((cpuinfo("flags") or "").split())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX). Without it PyTorch emulates bf16 through
    fp32 conversions and bf16 runs several times slower than fp32 (measured 12x for a training step on AVX2)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def fastest_precision(device: torch.device) -> str:
    """`--precision auto`: bf16 where the hardware computes it (a CUDA device with bf16, a CPU with avx512_bf16 or
    AMX), else fp32. Emulated bf16 is slower than fp32: a compiled ResNet-20 training step ran at 219 img/s in bf16
    against 380 img/s in fp32 on an Intel Xeon with AVX-512 but no avx512_bf16, and 12x slower on AVX2."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX). Without them oneDNN's int8
    kernels add u8*s8 pairs in saturating int16, so activations must use 7 bits (reduce_range) to stay exact."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def hardware_description(runtime: Runtime) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(runtime.device), "world_size": runtime.world_size, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
        "cpu_generation": cpu_generation(), "cpu_count": os.cpu_count(),
        "cpu_cores": usable_cores(),
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if runtime.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(runtime.device)
    return info


def cpu_model() -> str | None:
    """The CPU's model name (e.g. "AMD EPYC"): timings name the CPU they ran on, and these machines differ between
    sittings (Xeon with AMX, EPYC with avx512_bf16, EPYC with AVX2 only)."""
    return cpuinfo("model name")


def cpu_generation() -> str | None:
    """The CPU's family and model numbers (e.g. "family 25 model 17"): two CPUs both called "AMD EPYC" have trained
    here at rates 2x apart, and only these numbers told them apart."""
    family, model = cpuinfo("cpu family"), cpuinfo("model")
    return f"family {family} model {model}" if family and model else None


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity, e.g. under taskset or a batch scheduler)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_groups(jobs: int) -> list[list[int]]:
    """This process's cores in `jobs` contiguous groups of near-equal size, one per worker of `map_pinned`."""
    cores = usable_cores()
    if not 1 <= jobs <= len(cores):
        raise ValueError(f"--jobs {jobs}: this process may use {len(cores)} CPU cores, and each job needs cores of "
                         f"its own; use --jobs between 1 and {len(cores)}")
    size, extra = divmod(len(cores), jobs)
    starts = [i * size + min(i, extra) for i in range(jobs + 1)]
    return [cores[start:end] for start, end in itertools.pairwise(starts)]


def pin_to_cores(groups: Any) -> None:
    """Worker initializer of `map_pinned`: take one core group from the queue, run on it with as many threads."""
    cores = groups.get()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))


Item, Result = TypeVar("Item"), TypeVar("Result")


def map_pinned(function: Callable[[Item], Result], items: Iterable[Item], jobs: int = 1) -> list[Result]:
    """`function(item)` for every item, `jobs` at a time, results in the items' order.

    jobs=1 runs them here, one after another. More jobs run them in that many spawned worker processes, each pinned
    to its own share of this process's cores (`core_groups`) with one torch thread per core: a CPU's cores train
    several small networks at once faster than they train one with all threads, because small convolutions scale
    poorly over threads (here two 1-thread ResNet-20 trainings made 946-956 images/s together, one 2-thread training
    504-845). `function` must be defined at module level and the items picklable; an item's error is raised here
    once the others have finished. Workers are not daemons, so they may start DataLoader workers of their own."""
    items = list(items)
    core_groups(jobs)  # a --jobs the machine cannot give is refused even when fewer items would run
    jobs = min(jobs, len(items))  # a spare worker's cores would sit idle: fewer workers, more cores each
    if jobs <= 1:
        return [function(item) for item in items]
    groups = core_groups(jobs)
    context = multiprocessing.get_context("spawn")  # fork would copy this process's torch threads and locks
    queue = context.Queue()
    for group in groups:
        queue.put(group)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=pin_to_cores, initargs=(queue,)) as pool:
        futures = [pool.submit(function, item) for item in items]
    return [future.result() for future in futures]


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def same_on_all_ranks(values: torch.Tensor, runtime: Runtime) -> bool:
    """Whether every rank holds exactly these values (max and min over ranks agree)."""
    if not runtime.distributed:
        return True
    high, low = values.clone(), -values
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MAX)
    return torch.equal(high, -low)


def parameter_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Float64 sums and sums of squares of every parameter: equal on two ranks only if their weights are."""
    return torch.stack([value for p in module.parameters() for value in (p.double().sum(), p.double().square().sum())])


def broadcast_buffers(module: torch.nn.Module, runtime: Runtime) -> None:
    """Give every rank rank 0's buffers (BN running statistics). DDP syncs them at the start of each forward, so
    after the last step each rank holds its own batch's update; rank 0's are the ones saved with the weights."""
    if runtime.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# SIGTERM: what a scheduler (SLURM, Kubernetes, torchrun) sends before it kills a job; SIGUSR1: what SLURM sends ahead
# of a time limit when asked (#SBATCH --signal=USR1@120).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later", the requeue convention


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; rerun the same command with --resume auto."""

    exit_code = EXIT_PREEMPTED


class StopSignals:
    """Records SIGTERM/SIGUSR1 instead of dying, so that a loop can checkpoint at its next step boundary."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for number in self.signals():
                self._previous[number] = signal.signal(number, self._record)
        return self

    @staticmethod
    def signals() -> tuple[int, ...]:
        """Under torchrun, SIGTERM is the agent tearing the group down (a peer died, restart follows): a worker that
        lingered to checkpoint would hold up the restart, so there only SIGUSR1 asks for a checkpoint and a stop."""
        return (signal.SIGUSR1,) if "TORCHELASTIC_RUN_ID" in os.environ else STOP_SIGNALS

    def _record(self, number: int, _frame: Any) -> None:
        self.received = number

    def __exit__(self, *_exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
