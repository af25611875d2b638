"""Training a detector (Sec. 4.3) in one readable loop: SGD with a linear warm-up and step decay, bf16 autocast
(on the CPU or one CUDA device), progress with rate and ETA, a checkpoint every few hundred iterations (and on
Ctrl-C / SIGTERM), resumable bit-exactly in deterministic mode, and COCO mAP on the validation split at a few points
and at the end.

The run directory is the classification one (`runs.RunPaths`): config.json, metrics.jsonl, checkpoints/last.pt,
model.pt (detector weights + how to rebuild it), summary.json, curves.png.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..data.loader import epoch_seed
from ..io import atomic_torch_save, atomic_write_json, load_torch_file
from ..models import ResNet, create_model, load_model
from ..plots import plot_detection_curves
from ..runs import MetricsLog, RunPaths
from ..runtime import (
    Preempted,
    Runtime,
    StopSignals,
    autocast,
    hardware_description,
    resolve_device,
    rng_state,
    set_determinism,
    set_rng_state,
)
from ..train.checkpoint import keep_copy, read_intact_checkpoint
from .backbones import build_detector
from .data import DetectionDataset, collate_detection
from .inference import detector_config, evaluate_detector, save_detector

CHECKPOINT_FORMAT = "resnets-detect-checkpoint"


@dataclass
class DetectionRecipe:
    """Sec. 4.3's Faster R-CNN recipe (SGD, momentum 0.9, weight decay 1e-4, lr /10 twice) scaled to 224px
    synthetic compositions on 2 CPU cores: batch 8, 1,000 iterations (about 5 epochs of 2,000 images; 2.3-3.3 s an
    iteration, about 50 min a backbone here), anchors 16..256 for objects of 24..112 px. Not the paper's COCO numbers
    (80k-240k iterations at 600px on 8 GPUs)."""

    iterations: int = 1000
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 100
    milestones: tuple[float, ...] = (0.67, 0.89)  # fractions of the run
    gamma: float = 0.1
    form: str = "fpn"
    trainable_layers: int = 3
    frozen_bn: bool = True
    image_size: int = 224  # shorter and longer side: the synthetic images are 224x224
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    # RoIs sampled for the box head (torchvision: 512, sized for COCO's crowded 800px images). 64 for 2-5 objects an
    # image: torchvision's CPU roi_align backward is one serial loop (40% of a step at 128); 3.8 -> 2.5 s/iteration.
    rois_per_image: int = 64
    proposals_train: int = 600  # RPN proposals kept after NMS (torchvision: 2000 / 1000)
    proposals_test: int = 300
    evaluations: int = 5  # mAP on the validation split this many times over the run (the last at the end)

    def detector_options(self) -> dict[str, Any]:
        """torchvision FasterRCNN keyword arguments (kept in the detector file: they also shape inference)."""
        return {"min_size": self.image_size, "max_size": self.image_size,
                "box_batch_size_per_image": self.rois_per_image,
                "rpn_pre_nms_top_n_train": 2 * self.proposals_train, "rpn_post_nms_top_n_train": self.proposals_train,
                "rpn_pre_nms_top_n_test": 2 * self.proposals_test, "rpn_post_nms_top_n_test": self.proposals_test}

    def lr_at(self, iteration: int) -> float:
        if iteration < self.warmup_iterations:  # linear warm-up from lr/1000, as torchvision's detection recipe
            return self.lr * (0.001 + 0.999 * iteration / self.warmup_iterations)
        return self.lr * self.gamma ** sum(iteration >= round(m * self.iterations) for m in self.milestones)


@dataclass
class DetectionOptions:
    data: str
    out: str
    backbone: str = "resnet18"
    pretrained: str | None = None  # None (He init), a shipped tag ("imagenette"), or a weights / run path
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    log_every: int = 20
    checkpoint_every: int = 200
    eval_images: int | None = None  # evaluate on the first N validation images while training (all at the end)
    progress: bool = True
    recipe: DetectionRecipe = field(default_factory=DetectionRecipe)


def load_backbone(name: str, pretrained: str | None) -> ResNet:
    """The classification network to start from: He-initialised, shipped weights by tag, or a weights file/run."""
    if pretrained is None:
        return create_model(name)
    path = Path(pretrained)
    if path.exists():
        model = load_model(path / "model.pt" if path.is_dir() else path)
        if model.spec.name != name:
            raise ValueError(f"{pretrained} holds a {model.spec.name}, not the requested backbone {name}")
        return model
    return create_model(name, pretrained=pretrained)


def sample_indices(iteration: int, batch_size: int, count: int, seed: int) -> list[tuple[int, int]]:
    """(epoch, dataset index) of each image of a batch: the training set in a fresh seeded order each epoch, read
    as one endless stream, so the batch is a pure function of the iteration and resuming needs no loader state."""
    picks, orders = [], {}
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch = position // count
        if epoch not in orders:
            orders[epoch] = torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        picks.append((epoch, int(orders[epoch][position % count])))
    return picks


def read_detection_checkpoint(path: Path) -> dict[str, Any]:
    state = load_torch_file(path, "checkpoint", "an earlier one is checkpoints/previous.pt")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a resnets detection checkpoint")
    return state


def train_detector(options: DetectionOptions) -> dict[str, Any]:
    recipe, paths = options.recipe, RunPaths(Path(options.out))
    set_determinism(options.seed, options.deterministic)
    train_set = DetectionDataset(Path(options.data), "train", train_flip=True, seed=options.seed)
    val_set = DetectionDataset(Path(options.data), "val")
    backbone = load_backbone(options.backbone, options.pretrained)
    detector = build_detector(backbone, num_classes=max(train_set.categories) + 1, form=recipe.form,
                              trainable_layers=recipe.trainable_layers, frozen_bn=recipe.frozen_bn,
                              anchor_sizes=recipe.anchor_sizes, **recipe.detector_options())
    config = detector_config(detector, backbone, recipe, train_set.categories)
    device = resolve_device(options.device)
    detector.to(device)
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=recipe.lr,
                                momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    start, elapsed = 0, 0.0
    if options.resume and paths.has_checkpoint():
        _, state = read_intact_checkpoint(paths.resumable, read=read_detection_checkpoint)
        if state["config"] != config:
            raise ValueError(f"{paths.root} holds a checkpoint of another detector or recipe; resume with the same "
                             "options or choose another --out")
        detector.load_state_dict(state["detector"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, elapsed = state["iteration"], state["elapsed_seconds"]
    else:
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.config, {"options": asdict(options), "detector": config, "backbone_source":
                                         options.pretrained or "He init (no pre-training)"})
    log = MetricsLog(paths.metrics, start if options.resume else None)
    evaluate_at = {round(recipe.iterations * (k + 1) / recipe.evaluations) for k in range(recipe.evaluations)}

    def checkpoint(iteration: int) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "detector": detector.state_dict(),
                 "optimizer": optimizer.state_dict(), "rng": rng_state(), "iteration": iteration,
                 "elapsed_seconds": elapsed + time.perf_counter() - began}
        if paths.checkpoint().is_file():
            keep_copy(paths.checkpoint(), paths.checkpoint("previous"))
        atomic_torch_save(state, paths.checkpoint())

    detector.train()
    began, window, window_start, window_images = time.perf_counter(), {}, time.perf_counter(), 0
    bar = tqdm(range(start, recipe.iterations), initial=start, total=recipe.iterations, unit="it", desc="detect",
               disable=not options.progress, dynamic_ncols=True)
    with StopSignals() as signals:
        for iteration in bar:
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(iteration)
            batch = []
            for epoch, index in sample_indices(iteration, recipe.batch_size, len(train_set), options.seed):
                train_set.set_epoch(epoch)
                batch.append(train_set[index])
            images, targets = collate_detection(batch, device)
            with autocast(device, options.precision):
                losses = detector(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise ArithmeticError(f"detection loss is {loss.item()} at iteration {iteration} "
                                      f"({ {k: round(v.item(), 4) for k, v in losses.items()} }); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in losses.items():
                window[key] = window.get(key, 0.0) + value.item()
            window["loss"] = window.get("loss", 0.0) + loss.item()
            window_images += len(images)
            done = iteration + 1
            record: dict[str, Any] = {}
            if done % options.log_every == 0 or done in evaluate_at:
                steps = window_images / recipe.batch_size
                rate = window_images / (time.perf_counter() - window_start)
                record = {"iteration": done, "lr": recipe.lr_at(iteration), "images_per_s": round(rate, 2),
                          **{key: value / steps for key, value in window.items()}}
                bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{rate:.1f}")
                window, window_start, window_images = {}, time.perf_counter(), 0
            if done in evaluate_at:
                subset = None if done == recipe.iterations else options.eval_images
                scores = evaluate_detector(detector, val_set, limit=subset, precision=options.precision)
                record.update({f"val_{key}": value for key, value in scores.items()} | {"val_images": subset})
                detector.train()
                window_start = time.perf_counter()  # the next rate counts training only
            if record:
                log.append(record | {"elapsed_s": round(elapsed + time.perf_counter() - began, 1)})
            if done % options.checkpoint_every == 0 or done == recipe.iterations:
                checkpoint(done)
            if signals.received is not None and done < recipe.iterations:
                checkpoint(done)
                raise Preempted(f"stopped by {signals.name} after iteration {done}; checkpoint written, continue "
                                f"with the same command and --resume")
    bar.close()
    final = log.records[-1]
    seconds = elapsed + time.perf_counter() - began
    save_detector(detector, config, paths.weights, {"val_map": final.get("val_map"),
                                                    "val_map_50": final.get("val_map_50")})
    summary = {"complete": True, "iterations": recipe.iterations, "backbone": options.backbone,
               "backbone_source": options.pretrained or "He init", "form": recipe.form,
               "val_images": len(val_set), "train_images": len(train_set), "train_seconds": round(seconds, 1),
               "precision": options.precision, "hardware": hardware_description(Runtime(device)),
               **{key: final[key] for key in final if key.startswith("val_map")}}
    atomic_write_json(paths.summary, summary)
    plot_detection_curves({options.backbone: log.records}, paths.curves)
    return summary

