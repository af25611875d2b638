"""The one training loop (CIFAR and ImageNet differ only in `build_data` and the recipe).

Read top to bottom: set up runtime -> data -> model -> optimizer/schedule -> (resume) -> iterate:
step, log, evaluate, checkpoint -> final test, weights, plot, summary.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..analysis.plots import plot_error_curves
from ..evaluate.metrics import evaluate_batches
from ..models import create_model, model_config, save_weights
from .checkpoint import atomic_write_text, load_training_checkpoint, save_training_checkpoint
from .data import build_data
from .recipes import Recipe, RunOptions, describe
from .runtime import (
    Runtime,
    all_reduce_sum,
    autocast,
    broadcast_buffers,
    hardware_description,
    set_determinism,
    setup_runtime,
    teardown_runtime,
)
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


def epoch_finished(loader: Any) -> bool:
    return loader.state_dict()["position"] >= len(loader)


def total_iterations(recipe: Recipe, iterations_per_epoch: int) -> int:
    if recipe.epochs is not None:
        return max(1, round(recipe.epochs * iterations_per_epoch))
    return recipe.iterations


class MetricsLog:
    """metrics.jsonl: one JSON object per line; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_from_iteration: int | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume_from_iteration is not None and path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.records = [r for r in lines if r["iteration"] <= resume_from_iteration]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif path.exists():
            path.unlink()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def train(options: RunOptions, recipe: Recipe) -> dict[str, Any]:
    """Train one network; returns the run summary (also written to OUT/summary.json)."""
    runtime = setup_runtime(options.device)
    try:
        return _train(options, recipe, runtime)
    finally:
        teardown_runtime(runtime)


def _train(options: RunOptions, recipe: Recipe, runtime: Runtime) -> dict[str, Any]:
    out = Path(options.out)
    checkpoint_path = out / "checkpoints" / "last.pt"
    if not options.resume and checkpoint_path.exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if options.resume and not checkpoint_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint_path}; start without --resume")
    if recipe.batch_size % runtime.world_size:
        raise ValueError(f"batch size {recipe.batch_size} does not split over {runtime.world_size} processes")
    set_determinism(options.seed, options.deterministic)
    device = runtime.device
    log = print if runtime.is_main else (lambda *_a, **_k: None)

    data = build_data(options, recipe, runtime)
    model = create_model(options.model, num_classes=options.num_classes or len(data.classes),
                         shortcut=options.shortcut).to(device)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, recipe)
    iterations_per_epoch = len(data.train)
    total = total_iterations(recipe, iterations_per_epoch)
    schedule = LrSchedule(recipe, total)
    ema = None
    if recipe.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")

    iteration, epoch, best_error, elapsed_before = 0, 0, math.inf, 0.0
    if options.resume:
        state = load_training_checkpoint(checkpoint_path, model, optimizer, schedule, data.train, ema, scaler)
        iteration, epoch, best_error = state["iteration"], state["epoch"], state["best_error"]
        elapsed_before = state["elapsed_seconds"]
        log(f"resumed {checkpoint_path} at iteration {iteration} (epoch {epoch})")
    else:
        data.train.set_epoch(0)
    train_model: torch.nn.Module = model
    if options.compile:
        train_model = torch.compile(model)
    if runtime.distributed:
        train_model = DistributedDataParallel(train_model)

    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config = {"options": asdict(options), "recipe": recipe.to_dict(), "model_config": model_config(model),
                  "data": data.description, "iterations": total, "iterations_per_epoch": iterations_per_epoch,
                  "hardware": hardware_description(runtime)}
        atomic_write_text(out / "config.json", json.dumps(config, indent=2))
        log(f"recipe {recipe.name}:\n{describe(recipe)}")
        log(f"{options.model} on {data.description['source']}: {data.train_size} training images, "
            f"{iterations_per_epoch} iterations/epoch x {runtime.world_size} process(es), {total} iterations")
    metrics = MetricsLog(out / "metrics.jsonl", iteration if options.resume else None) if runtime.is_main else None
    eval_split = "val" if "val" in data.evals else "test"
    eval_every = recipe.eval_every or iterations_per_epoch

    checkpoint_meta = {"classes": data.classes, "preprocess": data.preprocess, "dataset": options.dataset}

    def checkpoint(tag: str = "last") -> None:
        if runtime.is_main:
            save_training_checkpoint(out / "checkpoints" / f"{tag}.pt", model=model, optimizer=optimizer,
                                     schedule=schedule, loader=data.train, ema=ema, scaler=scaler,
                                     iteration=iteration, epoch=epoch, best_error=best_error,
                                     elapsed_seconds=elapsed_before + time.perf_counter() - start,
                                     recipe=recipe, options=options, meta=checkpoint_meta)
        runtime.barrier()

    def evaluate(split: str) -> dict[str, float]:
        return evaluate_shards(ema.module if ema is not None else model, data.evals[split], runtime, options.precision)

    stop_at = min(total, options.max_iterations) if options.max_iterations else total
    progress = tqdm(total=total, initial=iteration, disable=not (options.progress and runtime.is_main),
                    unit="it", dynamic_ncols=True, smoothing=0.05)
    window = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, wrong, images since last log
    window_start, window_iteration = time.perf_counter(), iteration
    start = time.perf_counter()
    model.train()
    while iteration < stop_at:
        for inputs, labels in data.train:
            lr = schedule.lr(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = inputs.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, options.precision):
                logits = train_model(inputs)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at iteration {iteration} (lr {lr:g}); stopped without saving, "
                    f"the last good checkpoint is {checkpoint_path}; lower --lr or use --precision fp32")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            iteration += 1
            progress.update(1)
            with torch.no_grad():
                window += torch.stack([loss.detach().double() * labels.numel(),
                                       (logits.argmax(1) != labels).sum().double(),
                                       torch.tensor(float(labels.numel()), device=device, dtype=torch.float64)])
            if schedule.error_warmup and iteration % 10 == 0:
                stats = all_reduce_sum(window.clone(), runtime)
                if schedule.observe_train_error(iteration, 100 * stats[1].item() / max(1, stats[2].item())):
                    log(f"\nerror warm-up ended at iteration {iteration}; lr back to {recipe.lr}")
            end_of_epoch = epoch_finished(data.train)
            log_due = iteration % options.log_every == 0 or iteration == stop_at or end_of_epoch
            eval_due = iteration % eval_every == 0 or iteration == stop_at
            record: dict[str, Any] = {}
            if log_due:
                stats = all_reduce_sum(window.clone(), runtime).tolist()
                seconds = time.perf_counter() - window_start
                images = stats[2]
                record = {"iteration": iteration, "epoch": round(iteration / iterations_per_epoch, 3), "lr": lr,
                          "train_loss": stats[0] / max(1, images), "train_error": 100 * stats[1] / max(1, images),
                          "images_per_s": images / max(seconds, 1e-9),
                          "iterations": iteration - window_iteration}
                window.zero_()
                window_start, window_iteration = time.perf_counter(), iteration
                progress.set_postfix(loss=f"{record['train_loss']:.3f}", err=f"{record['train_error']:.1f}%",
                                     img_s=f"{record['images_per_s']:.0f}", lr=f"{lr:.3g}")
            if eval_due:
                result = evaluate(eval_split)
                record.setdefault("iteration", iteration)
                record.setdefault("epoch", round(iteration / iterations_per_epoch, 3))
                if runtime.is_main:
                    record[f"{eval_split}_error"] = result["top1_error"]
                    record[f"{eval_split}_loss"] = result["loss"]
                    if data.num_classes > 10:
                        record[f"{eval_split}_top5_error"] = result["top5_error"]
                schedule.observe_eval_error(result["top1_error"])  # the same on every rank: summed over shards
                improved = result["top1_error"] < best_error
                best_error = min(best_error, result["top1_error"])
                checkpoint()
                if improved:
                    checkpoint("best")
            elif options.checkpoint_every and iteration % options.checkpoint_every == 0:
                checkpoint()
            if record and metrics is not None:
                record["elapsed_s"] = round(elapsed_before + time.perf_counter() - start, 2)
                metrics.append(record)
            if iteration >= stop_at:
                break
        if epoch_finished(data.train):
            epoch += 1
            data.train.set_epoch(epoch)
    progress.close()
    wall = elapsed_before + time.perf_counter() - start
    return finish(options, recipe, runtime, model, ema, data, metrics, iteration, total, wall, log)


def evaluate_shards(model: torch.nn.Module, batches: Any, runtime: Runtime, precision: str) -> dict[str, float]:
    """Each rank evaluates its shard of the eval set with rank 0's weights; the totals are summed over ranks."""
    broadcast_buffers(model, runtime)
    return evaluate_batches(model, batches, runtime.device, precision,
                            reduce=lambda totals: all_reduce_sum(totals, runtime))


def finish(options: RunOptions, recipe: Recipe, runtime: Runtime, model: torch.nn.Module, ema: Any, data: Any,
           metrics: MetricsLog | None, iteration: int, total: int, wall: float, log: Any) -> dict[str, Any]:
    """Final test (once), weights-only file with its measured accuracy, curves, summary.json."""
    out = Path(options.out)
    final_model = ema.module if ema is not None else model
    summary: dict[str, Any] = {}
    test = evaluate_shards(final_model, data.evals["test"], runtime, options.precision)
    if runtime.is_main:
        summary = {"model": options.model, "dataset": options.dataset, "data": data.description,
                   "recipe": recipe.name, "iterations": iteration, "scheduled_iterations": total,
                   "epochs": round(iteration / len(data.train), 2), "wall_seconds": round(wall, 1),
                   "test_top1_error": test["top1_error"], "test_top5_error": test["top5_error"],
                   "test_images": test["images"], "complete": iteration >= total,
                   "hardware": hardware_description(runtime), "precision": options.precision,
                   "skipped_images": data.bad_images()}
        meta = {"classes": data.classes, "preprocess": data.preprocess, "dataset": options.dataset,
                "recipe": recipe.to_dict(), "test_top1_error": test["top1_error"],
                "test_top5_error": test["top5_error"], "iterations": iteration, "data": data.description}
        save_weights(final_model, out / "model.pt", meta)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        if metrics is not None and metrics.records:
            plot_error_curves({options.model: {options.model: metrics.records}}, out / "curves.png",
                              eval_key="val_error" if "val" in data.evals else "test_error")
        if summary["skipped_images"]:
            log(f"skipped {len(summary['skipped_images'])} unreadable images (listed in summary.json)")
        top5 = f", top-5 {test['top5_error']:.2f}%" if data.num_classes > 10 else ""
        log(f"test error: {test['top1_error']:.2f}% (top-1{top5}) on {test['images']} images after "
            f"{iteration} iterations ({summary['epochs']} epochs), {wall / 60:.1f} min -> {out}")
    runtime.barrier()
    return summary

