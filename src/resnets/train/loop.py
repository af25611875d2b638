"""The one training loop (CIFAR and ImageNet differ only in `build_data` and the recipe).

Read `train` and `_train` at the bottom first: set up a `Run` (runtime, data, model, optimizer, schedule, resume),
then for every batch: `step`, and when due `log`, `evaluate` (which checkpoints), `checkpoint`, a requested stop
(SIGTERM/SIGUSR1: checkpoint, then exit 75); at the end `finish` (final test, weights, curves, summary).

Host synchronisation: a step never waits for the device. Non-finite losses are flagged on the device and the flag
is read only where the run must be sound anyway: before a metrics line or a checkpoint is written. So a NaN stops
the run at the next log line, and no checkpoint ever holds the weights it produced.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data.loader import TrainingData
from ..evaluate.metrics import evaluate_batches
from ..io import atomic_write_json
from ..models import create_model, model_config, save_weights
from ..plots import plot_error_curves
from ..runs import MetricsLog, RunPaths
from ..runtime import (
    Preempted,
    Runtime,
    StopSignals,
    all_reduce_sum,
    autocast,
    broadcast_buffers,
    hardware_description,
    parameter_fingerprint,
    same_on_all_ranks,
    set_determinism,
    setup_runtime,
    teardown_runtime,
)
from .checkpoint import load_training_checkpoint, read_intact_checkpoint, save_training_checkpoint
from .data import build_data
from .recipes import Recipe, RunOptions, describe
from .schedule import LrSchedule


class NonFiniteLossError(ArithmeticError):
    pass


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.SGD:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exempt = not recipe.weight_decay_on_bn and (param.ndim <= 1 or name.endswith(".bias"))
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


def total_iterations(recipe: Recipe, iterations_per_epoch: int) -> int:
    if recipe.epochs is not None:
        return max(1, round(recipe.epochs * iterations_per_epoch))
    return recipe.iterations


@dataclass
class Position:
    """Where a run stands; stored in every checkpoint."""

    iteration: int = 0
    epoch: int = 0
    best_error: float = math.inf
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run (before a resume)


class Run:
    """Everything one training run holds, set up in reading order; `train` drives it."""

    def __init__(self, options: RunOptions, recipe: Recipe, runtime: Runtime) -> None:
        self.options, self.recipe, self.runtime = options, recipe.validate(), runtime
        self.paths = RunPaths(options.out)
        self.log_line = print if runtime.is_main else (lambda *_a, **_k: None)
        started_before = self.paths.has_checkpoint()
        if options.resume == "auto":
            options.resume = started_before
            self.log_line(f"--resume auto: {'continuing the run' if started_before else 'no checkpoint yet, starting'}"
                          f" in {self.paths.root}")
        if not options.resume and started_before:
            raise ValueError(f"{self.paths.root} already holds a run; pass --resume (or --resume auto) to continue it "
                             "or choose another --out")
        if options.resume and not started_before:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.paths.root / 'checkpoints'}; start without "
                                    "--resume, or use --resume auto")
        if recipe.batch_size % runtime.world_size:
            raise ValueError(f"batch size {recipe.batch_size} does not split over {runtime.world_size} processes")
        set_determinism(options.seed, options.deterministic)
        if options.deterministic and runtime.distributed and torch.get_num_threads() != 1:
            self.log_line(f"note: --deterministic repeats this run bit for bit with the same processes and "
                          f"{torch.get_num_threads()} threads each; to get the same bits from another topology "
                          "(nodes x processes), run every process with OMP_NUM_THREADS=1")
        device = runtime.device

        self.data: TrainingData = build_data(options, recipe, runtime)  # loaders yield channels_last when asked
        self.model = create_model(options.model, num_classes=options.num_classes or self.data.num_classes,
                                  shortcut=options.shortcut).to(device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, recipe)
        self.iterations_per_epoch = len(self.data.train)
        self.total = total_iterations(recipe, self.iterations_per_epoch)
        self.stop_at = min(self.total, options.max_iterations) if options.max_iterations else self.total
        self.schedule = LrSchedule(recipe, self.total)
        self.ema = None
        if recipe.ema_decay:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay),
                use_buffers=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")
        self.meta = {"classes": self.data.classes, "preprocess": self.data.preprocess.to_meta(),
                     "dataset": options.dataset}

        self.at = Position()
        if options.resume:
            path, state = read_intact_checkpoint(self.paths.resumable, self.log_line)
            load_training_checkpoint(state, path, self.model, self.optimizer, self.schedule, self.data.train,
                                     self.ema, self.scaler)
            self.at = Position(state["iteration"], state["epoch"], state["best_error"], state["elapsed_seconds"])
            self.log_line(f"resumed {path} at iteration {self.at.iteration} (epoch {self.at.epoch})")
        else:
            self.data.train.set_epoch(0)
        self.train_model: torch.nn.Module = torch.compile(self.model) if options.compile else self.model
        if runtime.distributed:
            self.train_model = DistributedDataParallel(self.train_model)

        self.eval_split = "val" if "val" in self.data.evals else "test"
        self.eval_every = recipe.eval_every or self.iterations_per_epoch
        self.metrics = self._start_records() if runtime.is_main else None
        # Device-side accumulators, read at log time: loss sum, wrong, images; and the first non-finite iteration.
        self.window = torch.zeros(3, dtype=torch.float64, device=device)
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=device)
        self.window_start, self.window_iteration = time.perf_counter(), self.at.iteration
        self.lr = self.schedule.lr(self.at.iteration)
        self.started = time.perf_counter()
        self.progress = tqdm(total=self.total, initial=self.at.iteration, unit="it", dynamic_ncols=True,
                             desc=options.model, smoothing=0.05, disable=not (options.progress and runtime.is_main))

    def _start_records(self) -> MetricsLog:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        config = {"options": asdict(self.options), "recipe": self.recipe.to_dict(),
                  "model_config": model_config(self.model), "data": self.data.description, "iterations": self.total,
                  "iterations_per_epoch": self.iterations_per_epoch, "hardware": hardware_description(self.runtime)}
        atomic_write_json(self.paths.config, config)
        self.log_line(f"recipe {self.recipe.name}:\n{describe(self.recipe)}")
        self.log_line(f"{self.options.model} on {self.data.description['source']}: {self.data.train_size} training "
                      f"images, {self.iterations_per_epoch} iterations/epoch x {self.runtime.world_size} "
                      f"process(es), {self.total} iterations")
        return MetricsLog(self.paths.metrics, self.at.iteration if self.options.resume else None)

    @property
    def iteration(self) -> int:
        return self.at.iteration

    @property
    def elapsed(self) -> float:
        return self.at.elapsed_before + time.perf_counter() - self.started

    def batches(self) -> Any:
        """Training batches until `stop_at`, moving to the next epoch whenever the loader finishes one."""
        while self.at.iteration < self.stop_at:
            for batch in self.data.train:
                yield batch
                if self.at.iteration >= self.stop_at:
                    return
            if self.data.train.epoch_finished:
                self.at.epoch += 1
                self.data.train.set_epoch(self.at.epoch)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step; everything it measures stays on the device."""
        self.lr = lr = self.schedule.lr(self.at.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.runtime.device, self.options.precision):
            logits = self.train_model(inputs)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        with torch.no_grad():
            loss = loss.detach()
            self.first_nonfinite = torch.where((self.first_nonfinite < 0) & ~torch.isfinite(loss),
                                               self.at.iteration, self.first_nonfinite)
            self.window += torch.stack([loss.double() * labels.numel(), (logits.argmax(1) != labels).sum().double(),
                                        torch.tensor(float(labels.numel()), device=loss.device, dtype=torch.float64)])
        self.at.iteration += 1
        self.progress.update(1)

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

    def warm_up(self) -> None:
        """Sec. 4.2 (ResNet-110): lr 0.01 until the training error falls below the threshold, checked every 10 it."""
        if self.schedule.error_warmup and self.at.iteration % 10 == 0:
            stats = all_reduce_sum(self.window.clone(), self.runtime)
            if self.schedule.observe_train_error(self.at.iteration, 100 * stats[1].item() / max(1, stats[2].item())):
                self.log_line(f"\nerror warm-up ended at iteration {self.at.iteration}; lr back to {self.recipe.lr}")

    def log(self) -> dict[str, Any]:
        """The training window since the last log line, summed over ranks."""
        self.ensure_finite()
        loss_sum, wrong, images = all_reduce_sum(self.window.clone(), self.runtime).tolist()
        seconds = time.perf_counter() - self.window_start
        record = {"iteration": self.at.iteration, "epoch": round(self.at.iteration / self.iterations_per_epoch, 3),
                  "lr": self.lr, "train_loss": loss_sum / max(1, images),
                  "train_error": 100 * wrong / max(1, images), "images_per_s": images / max(seconds, 1e-9),
                  "iterations": self.at.iteration - self.window_iteration}
        self.window.zero_()
        self.window_start, self.window_iteration = time.perf_counter(), self.at.iteration
        self.progress.set_postfix(loss=f"{record['train_loss']:.3f}", err=f"{record['train_error']:.1f}%",
                                  img_s=f"{record['images_per_s']:.0f}", lr=f"{record['lr']:.3g}")
        return record

    def evaluate(self, split: str) -> dict[str, float]:
        """Each rank evaluates its shard with rank 0's buffers; the totals are summed over ranks."""
        model = self.ema.module if self.ema is not None else self.model
        broadcast_buffers(model, self.runtime)
        return evaluate_batches(model, self.data.evals[split], self.runtime.device, self.options.precision,
                                reduce=lambda totals: all_reduce_sum(totals, self.runtime))

    def evaluate_and_checkpoint(self) -> dict[str, Any]:
        result = self.evaluate(self.eval_split)
        self.schedule.observe_eval_error(result["top1_error"])  # the same on every rank: summed over shards
        improved = result["top1_error"] < self.at.best_error
        self.at.best_error = min(self.at.best_error, result["top1_error"])
        self.checkpoint("last")
        if improved:
            self.checkpoint("best")
        record = {f"{self.eval_split}_error": result["top1_error"], f"{self.eval_split}_loss": result["loss"]}
        if self.data.num_classes > 10:
            record[f"{self.eval_split}_top5_error"] = result["top5_error"]
        return record

    def checkpoint(self, tag: str = "last") -> None:
        self.ensure_finite()
        if self.runtime.is_main:
            save_training_checkpoint(self.paths.checkpoint(tag), model=self.model, optimizer=self.optimizer,
                                     schedule=self.schedule, loader=self.data.train, ema=self.ema, scaler=self.scaler,
                                     iteration=self.at.iteration, epoch=self.at.epoch, best_error=self.at.best_error,
                                     elapsed_seconds=self.elapsed, recipe=self.recipe, options=self.options,
                                     meta=self.meta,
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

    def write(self, record: dict[str, Any]) -> None:
        if record and self.metrics is not None:
            record.setdefault("iteration", self.at.iteration)
            record.setdefault("epoch", round(self.at.iteration / self.iterations_per_epoch, 3))
            record["elapsed_s"] = round(self.elapsed, 2)
            self.metrics.append(record)

    def finish(self) -> dict[str, Any]:
        """Final test (once), the weights-only file with its measured accuracy, curves, summary.json."""
        self.progress.close()
        self.ensure_finite()
        wall = self.elapsed
        final_model = self.ema.module if self.ema is not None else self.model
        test = self.evaluate("test")
        distributed = self.runtime.distributed
        identical = distributed and same_on_all_ranks(parameter_fingerprint(self.model), self.runtime)  # one model?
        summary: dict[str, Any] = {}
        if self.runtime.is_main:
            at, options, data = self.at, self.options, self.data
            summary = {"model": options.model, "dataset": options.dataset, "data": data.description,
                       "recipe": self.recipe.name, "iterations": at.iteration, "scheduled_iterations": self.total,
                       "epochs": round(at.iteration / self.iterations_per_epoch, 2), "wall_seconds": round(wall, 1),
                       "test_top1_error": test["top1_error"], "test_top5_error": test["top5_error"],
                       "test_images": test["images"], "complete": at.iteration >= self.total,
                       "hardware": hardware_description(self.runtime), "precision": options.precision,
                       "skipped_images": data.bad_images()}
            if distributed:
                summary["parameters_identical_across_ranks"] = identical
                if not identical:
                    self.log_line("warning: the processes ended with different weights (gradient sync failed?); "
                                  "model.pt holds rank 0's")
            save_weights(final_model, self.paths.weights,
                         {**self.meta, "recipe": self.recipe.to_dict(), "test_top1_error": test["top1_error"],
                          "test_top5_error": test["top5_error"], "iterations": at.iteration,
                          "data": data.description})
            atomic_write_json(self.paths.summary, summary)
            if self.metrics is not None and self.metrics.records:
                plot_error_curves({options.model: {options.model: self.metrics.records}}, self.paths.curves,
                                  eval_key=f"{self.eval_split}_error")
            if summary["skipped_images"]:
                self.log_line(f"skipped {len(summary['skipped_images'])} unreadable images (listed in "
                              f"{self.paths.summary.name})")
            top5 = f", top-5 {test['top5_error']:.2f}%" if data.num_classes > 10 else ""
            self.log_line(f"test error: {test['top1_error']:.2f}% (top-1{top5}) on {test['images']} images after "
                          f"{at.iteration} iterations ({summary['epochs']} epochs), {wall / 60:.1f} min -> "
                          f"{self.paths.root}")
        self.runtime.barrier()
        return summary


def train(options: RunOptions, recipe: Recipe) -> dict[str, Any]:
    """Train one network; returns the run summary (also written to OUT/summary.json)."""
    runtime = setup_runtime(options.device)
    try:
        with StopSignals() as signals:
            return _train(Run(options, recipe, runtime), signals)
    finally:
        teardown_runtime(runtime)


def _train(run: Run, signals: StopSignals) -> dict[str, Any]:
    """The loop: a step, then whatever is due after it."""
    options = run.options
    run.model.train()
    for inputs, labels in run.batches():
        run.step(inputs, labels)
        run.warm_up()
        at, end_of_epoch = run.iteration, run.data.train.epoch_finished
        record = run.log() if at % options.log_every == 0 or at == run.stop_at or end_of_epoch else {}
        if at % run.eval_every == 0 or at == run.stop_at:
            record |= run.evaluate_and_checkpoint()
        elif options.checkpoint_every and at % options.checkpoint_every == 0:
            run.checkpoint("last")
        run.write(record)
        if run.stop_requested(signals):
            run.stop(signals)
    return run.finish()
