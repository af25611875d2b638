"""Image classification as a task of the training loop (`loop.Task`): CIFAR and ImageNet differ only in `build_data`
and the recipe. `train(plan)` trains a resolved `plan.RunPlan`.

Fine-tuning (`--pretrained`): the model starts from the weights, with a fresh classifier unless they were trained on
exactly the run's classes; a folder of photos takes the weights' own preprocessing; the body trains at
lr x recipe.body_lr_scale (`make_optimizer`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from ..data.loader import TrainingData
from ..data.preprocess import Preprocessing, preprocessing_of
from ..evaluate.metrics import evaluate_batches
from ..io import atomic_write_json
from ..models import create_model, model_config, save_weights
from ..plots import plot_error_curves
from ..runtime import (
    Runtime,
    all_reduce_sum,
    broadcast_buffers,
    hardware_description,
    parameter_fingerprint,
    same_on_all_ranks,
)
from .data import build_data
from .loop import Parts, Run, Task, run_task
from .plan import RunPlan
from .recipes import Recipe
from .schedule import LrSchedule

CLASSIFIER = "fc."  # the classifier's parameters (ResNet.fc): the head that fine-tuning replaces


def make_optimizer(model: torch.nn.Module, recipe: Recipe, body_lr_scale: float = 1.0) -> torch.optim.SGD:
    """SGD over the model's parameters, BN and biases without weight decay unless the recipe decays them. With a
    `body_lr_scale` other than 1 (fine-tuning), every group but the classifier's carries `lr_scale`, which the
    loop multiplies into the schedule's lr at every step."""
    groups = []
    for head in (False, True) if body_lr_scale != 1.0 else (None,):
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if head is not None and name.startswith(CLASSIFIER) != head:
                continue
            exempt = not recipe.weight_decay_on_bn and (param.ndim <= 1 or name.endswith(".bias"))
            (no_decay if exempt else decay).append(param)
        scale = {} if head is None else {"lr_scale": 1.0 if head else body_lr_scale}
        groups.append({"params": decay, "weight_decay": recipe.weight_decay, **scale})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, **scale})
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


def total_iterations(recipe: Recipe, iterations_per_epoch: int) -> int:
    if recipe.epochs is not None:
        return max(1, round(recipe.epochs * iterations_per_epoch))
    return recipe.iterations


class ClassificationTask(Task):
    """A classifier trained with cross-entropy on a recipe's data; evaluated on the val split when the recipe holds
    one out, else on the test split; finished with one final test, model.pt and summary.json."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.options, self.recipe = plan, plan.options, plan.recipe
        self.name = str(plan.options.model)
        self.ema: torch.optim.swa_utils.AveragedModel | None = None

    def build(self, runtime: Runtime) -> Parts:
        options, recipe = self.options, self.recipe
        if recipe.batch_size % runtime.world_size:
            raise ValueError(f"batch size {recipe.batch_size} does not split over {runtime.world_size} processes")
        self.runtime = runtime
        # The weights first: a wrong architecture fails in one line before any data is read, and a folder of photos
        # is prepared as the weights expect.
        weights_preprocess = self.pretrained_preprocessing() if self.plan.pretrained else None
        self.data: TrainingData = build_data(options, recipe, runtime, preprocess=weights_preprocess)
        per_epoch = len(self.data.train)
        if per_epoch < 1:
            raise ValueError(f"{self.data.train_size} training images make no batch of {recipe.batch_size} per "
                             "process; lower --batch-size or use more images")
        model = create_model(str(options.model), num_classes=options.num_classes or self.data.num_classes,
                             shortcut=options.shortcut, pretrained=options.pretrained if self.plan.pretrained else None)
        started_from = getattr(model, "meta", {}).get("pretrained") if self.plan.pretrained else None
        if started_from is not None and list(model.meta.get("classes") or []) != list(self.data.classes):
            model.fc.reset_parameters()  # other classes (even as many): a new classifier, as create_model gives
        model = model.to(runtime.device)
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        if recipe.ema_decay:
            self.ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
        total = total_iterations(recipe, per_epoch)
        self.schedule = LrSchedule(recipe, total)
        self.eval_split = "val" if "val" in self.data.evals else "test"
        self.eval_every = recipe.eval_every or per_epoch
        self.meta = {"classes": self.data.classes, "preprocess": self.data.preprocess.to_meta(),
                     "dataset": options.dataset, **({"started_from": started_from} if started_from else {})}
        recorded = self.plan.recorded_recipe()
        config = {"options": asdict(options), "recipe": recorded, "model_config": model_config(model),
                  "data": self.data.description, "iterations_per_epoch": per_epoch}
        body_lr_scale = recipe.body_lr_scale if self.plan.pretrained else 1.0  # from scratch: nothing to preserve
        announce = [f"recipe {recipe.name}:\n{json.dumps(recorded, indent=2)}",
                    f"{options.model} on {self.data.description['source']}: {self.data.train_size} training images, "
                    f"{per_epoch} iterations/epoch x {runtime.world_size} process(es), {total} iterations"]
        if started_from:
            announce.append(f"fine-tuning from {started_from}: classifier at lr, the rest at lr x {body_lr_scale}; "
                            f"preprocessing: {self.data.preprocess.describe()}")
        return Parts(model, make_optimizer(model, recipe, body_lr_scale), self.schedule, total, model_config(model),
                     config, self.meta, per_epoch, announce)

    def pretrained_preprocessing(self) -> Preprocessing:
        """What the --pretrained weights expect as input (their meta's record, else their family's defaults); loading
        them also checks that they hold the run's architecture (create_model's one-line error)."""
        options = self.options
        return preprocessing_of(create_model(str(options.model), shortcut=options.shortcut,
                                             pretrained=options.pretrained))

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = self.data.train
        while True:
            yield from loader
            if loader.epoch_finished:
                loader.set_epoch(loader.state_dict()["epoch"] + 1)

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, labels = batch
        logits = model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)
        images = torch.tensor(float(labels.numel()), device=labels.device, dtype=torch.float64)
        return loss, {"images": images, "train_loss": loss.detach().double() * images,
                      "train_error": 100 * (logits.detach().argmax(1) != labels).sum().double()}

    def after_step(self, run: Run) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        # Sec. 4.2 (ResNet-110): lr 0.01 until the training error falls below the threshold, checked every 10 it.
        if self.schedule.error_warmup and run.iteration % 10 == 0:
            sums = run.window_sums()
            if self.schedule.observe_train_error(run.iteration, sums["train_error"] / max(1.0, sums["images"])):
                run.log_line(f"\nerror warm-up ended at iteration {run.iteration}; lr back to {self.recipe.lr}")

    def evaluation_due(self, iteration: int) -> bool:
        return iteration % self.eval_every == 0

    def test(self, split: str) -> dict[str, float]:
        """Each rank evaluates its shard with rank 0's buffers; the totals are summed over ranks."""
        model = self.ema.module if self.ema is not None else self.model
        broadcast_buffers(model, self.runtime)
        return evaluate_batches(model, self.data.evals[split], self.runtime.device, self.options.precision,
                                reduce=lambda totals: all_reduce_sum(totals, self.runtime))

    def evaluate(self, run: Run) -> tuple[dict[str, Any], float | None]:
        result = self.test(self.eval_split)
        # The same on every rank (summed over shards). Only scheduled evaluations count: the extra one at a
        # --max-iterations stop would otherwise drop a plateau lr that the run, once resumed, never would have.
        if self.evaluation_due(run.iteration):
            self.schedule.observe_eval_error(result["top1_error"])
        record = {f"{self.eval_split}_error": result["top1_error"], f"{self.eval_split}_loss": result["loss"]}
        if self.data.num_classes > 10:
            record[f"{self.eval_split}_top5_error"] = result["top5_error"]
        return record, result["top1_error"]

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.data.train.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data.train.load_state_dict(state["loader"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])

    def finish(self, run: Run) -> dict[str, Any]:
        """Final test (once), the weights-only file with its measured accuracy, curves, summary.json. A tuning run
        (a held-out part of the training set) ends on that part instead: the test set stays for the final number."""
        wall = run.elapsed
        final_model = self.ema.module if self.ema is not None else self.model
        split = self.eval_split
        final = self.test(split)
        distributed = self.runtime.distributed
        identical = distributed and same_on_all_ranks(parameter_fingerprint(self.model), self.runtime)  # one model?
        if not self.runtime.is_main:
            return {}
        at, options, data, paths = run.iteration, self.options, self.data, run.paths
        epochs = round(at / len(data.train), 2)
        described = _without_file_list(data.description)
        summary: dict[str, Any] = {
            "model": options.model, "dataset": options.dataset, "data": described, "recipe": self.recipe.name,
            "iterations": at, "scheduled_iterations": run.total, "epochs": epochs, "wall_seconds": round(wall, 1),
            f"{split}_top1_error": final["top1_error"], f"{split}_top5_error": final["top5_error"],
            f"{split}_images": final["images"],
            "complete": at >= run.total, "hardware": hardware_description(self.runtime),
            "precision": options.precision, "skipped_images": data.bad_images()}
        if distributed:
            summary["parameters_identical_across_ranks"] = identical
            if not identical:
                run.log_line("warning: the processes ended with different weights (gradient sync failed?); model.pt "
                             "holds rank 0's")
        save_weights(final_model, paths.weights,
                     {**self.meta, "recipe": self.plan.recorded_recipe(), f"{split}_top1_error": final["top1_error"],
                      f"{split}_top5_error": final["top5_error"], "iterations": at, "data": described})
        atomic_write_json(paths.summary, summary)
        if run.metrics is not None and run.metrics.records:
            plot_error_curves({options.model: {options.model: run.metrics.records}}, paths.curves,
                              eval_key=f"{self.eval_split}_error")
        if summary["skipped_images"]:
            run.log_line(f"skipped {len(summary['skipped_images'])} unreadable images (listed in {paths.summary.name})")
        top5 = f", top-5 {final['top5_error']:.2f}%" if data.num_classes > 10 else ""
        images = f"{final['images']}{' held-out training' if split == 'val' else ''} images"
        run.log_line(f"{split} error: {final['top1_error']:.2f}% (top-1{top5}) on {images} after {at} iterations "
                     f"({epochs} epochs), {wall / 60:.1f} min -> {paths.root}")
        return summary


def _without_file_list(description: dict[str, Any]) -> dict[str, Any]:
    """The data description for summary.json and model.pt: a held-out split's file list stays in config.json only."""
    split = description.get("val_split")
    if not split:
        return description
    return {**description, "val_split": {k: v for k, v in split.items() if k != "files"}}


def train(plan: RunPlan) -> dict[str, Any]:
    """Train one classifier as `plan` describes; returns the run summary (also written to OUT/summary.json)."""
    return run_task(ClassificationTask(plan))
