"""The one training loop, for every task: classification (`classify.ClassificationTask`) and detection
(`detection.train.DetectionTask`) differ only in what a `Task` builds, the loss of a batch, and evaluation.

Read `run_task` and `_train` at the bottom first: set up a `Run` (runtime, the task's parts, resume), then for every
batch: `step`, and when due `log`, `evaluate_and_checkpoint`, `checkpoint`, a requested stop (SIGTERM/SIGUSR1:
checkpoint, then exit 75); at the end the task's `finish` (final test, weights, curves, summary). Checkpoints,
`--resume` / `--resume auto`, stop signals, progress and the metrics log exist here only.

Host synchronisation: a step never waits for the device. Its statistics are summed on the device and non-finite
losses flagged there; both are read only where the run must be sound anyway: before a metrics line or a checkpoint
is written. So a NaN stops the run at the next log line, and no checkpoint ever holds the weights it produced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..io import atomic_write_json
from ..runs import MetricsLog, RunPaths, decide_resume
from ..runtime import (
    Preempted,
    Runtime,
    StopSignals,
    all_reduce_sum,
    autocast,
    hardware_description,
    set_determinism,
    setup_runtime,
    teardown_runtime,
)
from .checkpoint import load_training_checkpoint, read_intact_checkpoint, save_training_checkpoint
from .recipes import LoopOptions


class NonFiniteLossError(ArithmeticError):
    pass


@dataclass
class Parts:
    """What a task builds for the loop."""

    model: torch.nn.Module  # trained, checkpointed and evaluated
    optimizer: torch.optim.Optimizer
    schedule: Any  # lr(iteration) -> float, state_dict(), load_state_dict(state)
    total: int  # scheduled iterations
    identity: dict[str, Any]  # what a checkpoint must match to be resumed (a classifier: its model_config)
    config: dict[str, Any]  # written to config.json at the start (the loop adds iterations and hardware)
    meta: dict[str, Any] = field(default_factory=dict)  # kept in checkpoints (classes, preprocessing)
    iterations_per_epoch: int | None = None  # epoch ends are logged; None: a task without epochs
    announce: list[str] = field(default_factory=list)  # lines printed when a run starts or resumes


class Task(Protocol):
    """What one kind of training supplies; `options` holds the loop's own settings (LoopOptions)."""

    options: LoopOptions
    name: str  # the progress bar's label

    def build(self, runtime: Runtime) -> Parts:
        """Data, model, optimizer and schedule, on runtime.device."""
        ...

    def batches(self) -> Iterator[Any]:
        """Training batches from the current position on, endlessly (the loop stops taking them)."""
        ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and device-side statistics of the batch: "images" and sums over its images, logged
        divided by the images of the window (e.g. train_loss: loss x images; train_error: 100 x wrong)."""
        ...

    def after_step(self, run: Run) -> None:
        """Anything after the optimizer step (an average of the weights, an lr warm-up on the training error)."""

    def evaluation_due(self, iteration: int) -> bool:
        ...

    def evaluate(self, run: Run) -> tuple[dict[str, Any], float | None]:
        """A metrics record of the evaluation, and the error that makes best.pt when it falls (None: no best.pt)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The task's position (the data's epoch and batch, an average of the weights) for checkpoints."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def finish(self, run: Run) -> dict[str, Any]:
        """The final evaluation, the weights file, summary.json, curves; returns the summary."""
        ...


@dataclass
class Position:
    """Where a run stands; stored in every checkpoint."""

    iteration: int = 0
    best_error: float = math.inf
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run (before a resume)


class Run:
    """Everything one training run holds, set up in reading order; `_train` drives it."""

    def __init__(self, task: Task, runtime: Runtime) -> None:
        self.task, self.options, self.runtime = task, task.options, runtime
        options = self.options
        self.paths = RunPaths(str(options.out))
        self.log_line = print if runtime.is_main else (lambda *_a, **_k: None)
        self.resuming = decide_resume(options.resume, self.paths.root)  # before anything is written
        if options.resume == "auto":
            self.log_line(f"--resume auto: {'continuing the run' if self.resuming else 'no checkpoint yet, starting'}"
                          f" in {self.paths.root}")
        set_determinism(options.seed, options.deterministic)
        if options.deterministic and runtime.distributed and torch.get_num_threads() != 1:
            self.log_line(f"note: --deterministic repeats this run bit for bit with the same processes and "
                          f"{torch.get_num_threads()} threads each; to get the same bits from another topology "
                          "(nodes x processes), run every process with OMP_NUM_THREADS=1")

        parts = task.build(runtime)
        self.model, self.optimizer, self.schedule = parts.model, parts.optimizer, parts.schedule
        self.parts, self.total = parts, parts.total
        self.stop_at = min(self.total, options.max_iterations) if options.max_iterations else self.total
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=options.precision == "fp16")
        self.config = {**parts.config, "iterations": self.total, "hardware": hardware_description(runtime)}

        self.at = Position()
        if self.resuming:
            path, state = read_intact_checkpoint(self.paths.resumable, self.log_line)
            load_training_checkpoint(state, path, model=self.model, optimizer=self.optimizer, schedule=self.schedule,
                                     scaler=self.scaler, identity=parts.identity)
            task.load_state_dict(state["task"])
            self.at = Position(state["iteration"], state["best_error"], state["elapsed_seconds"])
            self.log_line(f"resumed {path} at iteration {self.at.iteration} of {self.total}")
        self.train_model: torch.nn.Module = torch.compile(self.model) if options.compile else self.model
        if runtime.distributed:
            self.train_model = DistributedDataParallel(self.train_model)

        self.metrics = self._start_records() if runtime.is_main else None
        self.window: torch.Tensor | None = None  # the statistics summed since the last log line, on the device
        self.window_keys: list[str] = []
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=runtime.device)
        self.window_start, self.window_iteration = time.perf_counter(), self.at.iteration
        self.lr = self.schedule.lr(self.at.iteration)
        self.started = time.perf_counter()
        self.progress = tqdm(total=self.total, initial=self.at.iteration, unit="it", dynamic_ncols=True,
                             desc=task.name, smoothing=0.05, disable=not (options.progress and runtime.is_main))

    def _start_records(self) -> MetricsLog:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.paths.config, self.config)
        for line in self.parts.announce:
            self.log_line(line)
        return MetricsLog(self.paths.metrics, self.at.iteration if self.resuming else None,
                          tensorboard=getattr(self.options, "tensorboard", False))

    @property
    def iteration(self) -> int:
        return self.at.iteration

    @property
    def elapsed(self) -> float:
        return self.at.elapsed_before + time.perf_counter() - self.started

    def batches(self) -> Iterator[Any]:
        """The task's training batches until `stop_at`."""
        batches = self.task.batches()
        while self.at.iteration < self.stop_at:
            yield next(batches)

    def step(self, batch: Any) -> None:
        """One SGD step; everything it measures stays on the device."""
        self.lr = lr = self.schedule.lr(self.at.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # fine-tuning: the body's groups at a fraction of lr
        with autocast(self.runtime.device, self.options.precision):
            loss, stats = self.task.loss(self.train_model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            self.first_nonfinite = torch.where((self.first_nonfinite < 0) & ~torch.isfinite(loss.detach()),
                                               self.at.iteration, self.first_nonfinite)
            values = torch.stack([value.detach().to(torch.float64) for value in stats.values()])
            if self.window is None:
                self.window, self.window_keys = torch.zeros_like(values), list(stats)
            self.window += values
        self.at.iteration += 1
        self.progress.update(1)
        self.task.after_step(self)

    def window_sums(self) -> dict[str, float]:
        """The statistics summed since the last log line over every rank (a host sync)."""
        if self.window is None:
            return {}
        return dict(zip(self.window_keys, all_reduce_sum(self.window.clone(), self.runtime).tolist(), strict=True))

    def ensure_finite(self) -> None:
        """Stop before anything of a non-finite loss is written (one host sync, at log and checkpoint time only)."""
        bad = int(self.first_nonfinite.item())
        anywhere = all_reduce_sum(torch.tensor([float(bad >= 0)], device=self.runtime.device), self.runtime)
        if anywhere.item() > 0:  # every rank stops together, also when only another one saw it
            where = f"iteration {bad} (lr {self.schedule.lr(bad):g})" if bad >= 0 else "another process"
            raise NonFiniteLossError(
                f"loss became non-finite at {where}; stopped without "
                f"saving, the last good checkpoint is {self.paths.checkpoint('last')}; lower --lr or use "
                "--precision fp32")

    def log_due(self) -> bool:
        at, per_epoch = self.at.iteration, self.parts.iterations_per_epoch
        return (at % self.options.log_every == 0 or at == self.stop_at or self.task.evaluation_due(at)
                or bool(per_epoch and at % per_epoch == 0))

    def log(self) -> dict[str, Any]:
        """The training window since the last log line, summed over ranks: each statistic per image."""
        self.ensure_finite()
        sums = self.window_sums()
        images = sums.pop("images", 0.0)
        seconds = time.perf_counter() - self.window_start
        record = {**self.position(), "lr": self.lr, **{key: value / max(1.0, images) for key, value in sums.items()},
                  "images_per_s": images / max(seconds, 1e-9), "iterations": self.at.iteration - self.window_iteration}
        if self.window is not None:
            self.window.zero_()
        self.window_start, self.window_iteration = time.perf_counter(), self.at.iteration
        shown = {key: f"{value:.3g}" for key, value in record.items()
                 if key not in ("iteration", "epoch", "iterations")}
        self.progress.set_postfix(shown)
        return record

    def evaluate_and_checkpoint(self) -> dict[str, Any]:
        record, error = self.task.evaluate(self)
        self.window_start = time.perf_counter()  # the next images/s counts training only
        improved = error is not None and error < self.at.best_error
        if error is not None:
            self.at.best_error = min(self.at.best_error, error)
        self.checkpoint("last")
        if improved:
            self.checkpoint("best")
        return record

    def checkpoint(self, tag: str = "last") -> None:
        self.ensure_finite()
        if self.runtime.is_main:
            save_training_checkpoint(self.paths.checkpoint(tag), model=self.model, optimizer=self.optimizer,
                                     schedule=self.schedule, scaler=self.scaler, task_state=self.task.state_dict(),
                                     iteration=self.at.iteration, best_error=self.at.best_error,
                                     elapsed_seconds=self.elapsed, identity=self.parts.identity,
                                     meta=self.parts.meta, config=self.parts.config,
                                     keep_previous=self.paths.checkpoint("previous") if tag == "last" else None)
        self.runtime.barrier()

    def stop_requested(self, signals: StopSignals) -> bool:
        """A stop signal reached this process (one process: checked every step, no sync) or any process (DDP:
        agreed every 10 iterations, so that all ranks checkpoint at the same step)."""
        if not self.runtime.distributed:
            return signals.received is not None
        if self.at.iteration % 10:
            return False
        flag = torch.tensor([float(signals.received is not None)], device=self.runtime.device)
        return all_reduce_sum(flag, self.runtime).item() > 0

    def stop(self, signals: StopSignals) -> None:
        self.checkpoint("last")
        self.progress.close()
        last = self.paths.checkpoint("last")
        raise Preempted(f"stopped by {signals.name or 'a stop signal on another process'} at iteration "
                        f"{self.at.iteration}; checkpoint written to {last}; run the same command with --resume auto "
                        "to continue")

    def position(self) -> dict[str, Any]:
        """The iteration of a metrics line, and its epoch when the task has epochs."""
        per_epoch = self.parts.iterations_per_epoch
        return {"iteration": self.at.iteration, **({"epoch": round(self.at.iteration / per_epoch, 3)} if per_epoch
                                                      else {})}

    def write(self, record: dict[str, Any]) -> None:
        if record and self.metrics is not None:
            self.metrics.append({**self.position(), **record, "elapsed_s": round(self.elapsed, 2)})

    def finish(self) -> dict[str, Any]:
        self.progress.close()
        self.ensure_finite()
        summary = self.task.finish(self)
        self.runtime.barrier()
        return summary


def run_task(task: Task) -> dict[str, Any]:
    """Train one task to the end of its schedule (or `max_iterations`); returns its summary."""
    runtime = setup_runtime(task.options.device)
    try:
        with StopSignals() as signals:
            return _train(Run(task, runtime), signals)
    finally:
        teardown_runtime(runtime)


def _train(run: Run, signals: StopSignals) -> dict[str, Any]:
    """The loop: a step, then whatever is due after it."""
    run.model.train()
    for batch in run.batches():
        run.step(batch)
        at = run.iteration
        record = run.log() if run.log_due() else {}
        if run.task.evaluation_due(at) or at == run.stop_at:
            record |= run.evaluate_and_checkpoint()
        elif run.options.checkpoint_every and at % run.options.checkpoint_every == 0:
            run.checkpoint("last")
        run.write(record)
        if run.stop_requested(signals):
            run.stop(signals)
    return run.finish()
