"""Training a detector (Sec. 4.3) as a task of the one training loop (`train.loop`): SGD with a linear warm-up and
step decay, bf16 autocast (on the CPU or one CUDA device), checkpoints, `--resume` / `--resume auto`, stop signals
and the metrics log as for classification, resumable bit-exactly in deterministic mode, and COCO mAP on the
validation split at a few points and at the end.

The run directory is the classification one (`runs.RunPaths`): config.json, metrics.jsonl, checkpoints/last.pt,
model.pt (detector weights + how to rebuild it), summary.json, curves.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.loader import epoch_seed
from ..io import atomic_write_json
from ..models import ResNet, create_model, load_model
from ..plots import plot_detection_curves
from ..runtime import Runtime, hardware_description
from ..train.loop import Parts, Run, Task, run_task
from ..train.recipes import LoopOptions
from ..train.schedule import StatelessSchedule
from .backbones import build_detector
from .data import DetectionDataset, collate_detection
from .inference import detector_config, evaluate_detector, save_detector
from .pennfudan import PennFudanDataset, is_pennfudan


@dataclass(frozen=True)
class DetectionRecipe:
    """Sec. 4.3's Faster R-CNN recipe (SGD, momentum 0.9, weight decay 1e-4, lr /10 twice) scaled to 224px
    synthetic compositions on 2 CPU cores: batch 8, 1,000 iterations (about 5 epochs of 2,000 images; 2.3-3.3 s an
    iteration, about 50 min a backbone here), anchors 16..256 for objects of 24..112 px. Not the paper's COCO numbers
    (80k-240k iterations at 600px on 8 GPUs). `DETECTION_RECIPES` names this one and the Penn-Fudan Mask R-CNN's."""

    name: str = "synthetic"
    kind: str = "faster_rcnn"  # or "mask_rcnn" (FPN form only)
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
    image_size: int = 224  # shorter side at test time (and in training without train_sizes)
    max_size: int | None = None  # longer side at most (None: image_size; the synthetic images are square)
    # Scale jitter: training draws the shorter side among these (torchvision's multi-scale training; its draw uses
    # the torch generator, which checkpoints keep, so a resumed run draws the same sizes). () trains at image_size.
    train_sizes: tuple[int, ...] = ()
    box_representation: int | None = None  # FPN box head width (None: torchvision's 1,024)
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    # RoIs sampled for the box head (torchvision: 512, sized for COCO's crowded 800px images). 64 for 2-5 objects an
    # image: torchvision's CPU roi_align backward is one serial loop (40% of a step at 128); 3.8 -> 2.5 s/iteration.
    rois_per_image: int = 64
    proposals_train: int = 600  # RPN proposals kept after NMS (torchvision: 2000 / 1000)
    proposals_test: int = 300
    evaluations: int = 5  # mAP on the validation split this many times over the run (the last at the end)

    def detector_options(self) -> dict[str, Any]:
        """torchvision FasterRCNN keyword arguments (kept in the detector file: they also shape inference)."""
        # torchvision tests at the last of min_size: the training sizes, then the test size
        sizes = (*(size for size in self.train_sizes if size != self.image_size), self.image_size)
        return {"min_size": sizes if len(sizes) > 1 else self.image_size, "max_size": self.max_size or self.image_size,
                "box_batch_size_per_image": self.rois_per_image,
                "rpn_pre_nms_top_n_train": 2 * self.proposals_train, "rpn_post_nms_top_n_train": self.proposals_train,
                "rpn_pre_nms_top_n_test": 2 * self.proposals_test, "rpn_post_nms_top_n_test": self.proposals_test}

    def lr_at(self, iteration: int) -> float:
        if iteration < self.warmup_iterations:  # linear warm-up from lr/1000, as torchvision's detection recipe
            return self.lr * (0.001 + 0.999 * iteration / self.warmup_iterations)
        return self.lr * self.gamma ** sum(iteration >= round(m * self.iterations) for m in self.milestones)


# Penn-Fudan (120 training photos of 1-8 pedestrians, sides 253-1017 px): torchvision's tutorial recipe (Mask R-CNN
# FPN, SGD lr 0.005 per 2 images, momentum 0.9, wd 5e-4, 10 epochs) sized for 2 CPU cores: photos at shorter side
# 320 (the tutorial's 800), jittered 256..384 in training, at most 544 long; batch 4 at lr 0.01 (linear scaling),
# 14 epochs (420 iterations, /10 at 67% and 89%); 128 RoIs an image (few people per photo); a 256-wide box head
# (torchvision's 1,024 is 12.8M parameters for one class of 120 photos: it triples the shipped file).
PENNFUDAN_RECIPE = DetectionRecipe(
    name="pennfudan", kind="mask_rcnn", iterations=420, batch_size=4, lr=0.01, weight_decay=5e-4,
    warmup_iterations=50, image_size=320, max_size=544, train_sizes=(256, 288, 320, 352, 384),
    anchor_sizes=(32, 64, 128, 256, 512), rois_per_image=128, proposals_train=1000, proposals_test=500,
    box_representation=256, evaluations=3)
DETECTION_RECIPES = {"synthetic": DetectionRecipe(), "pennfudan": PENNFUDAN_RECIPE}


def open_detection_data(data: str | Path, split: str, train_flip: bool = False, seed: int = 0
                        ) -> DetectionDataset | PennFudanDataset:
    """One split of a detection folder, by its layout: the Penn-Fudan database ("train", "test") or a COCO-format
    folder ("train", "val"). `EVAL_SPLIT` names the held-out one of each."""
    if is_pennfudan(data):
        return PennFudanDataset(data, split, train_flip=train_flip, seed=seed)
    return DetectionDataset(Path(data), split, train_flip=train_flip, seed=seed)


def eval_split(data: str | Path) -> str:
    """The split a run is evaluated on: Penn-Fudan's held-out "test" photos, a COCO folder's "val"."""
    return "test" if is_pennfudan(data) else "val"


def default_recipe(data: str | Path) -> DetectionRecipe:
    return PENNFUDAN_RECIPE if is_pennfudan(data) else DETECTION_RECIPES["synthetic"]


@dataclass(frozen=True, kw_only=True)
class DetectionOptions(LoopOptions):
    """A detection run; the loop's own settings (out, precision, device, seed, resume, ...) are LoopOptions'."""

    data: str
    out: str
    backbone: str = "resnet18"
    pretrained: str | None = None  # None (He init), a shipped tag ("imagenette"), or a weights / run path
    log_every: int = 20
    checkpoint_every: int = 200
    eval_images: int | None = None  # evaluate on the first N validation images while training (all at the end)
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


class DetectionTask(Task):
    """A torchvision Faster R-CNN on one of our backbones, trained on a COCO-format folder. Its batches are a pure
    function of the iteration (`sample_indices`), so its position in a checkpoint is that iteration."""

    def __init__(self, options: DetectionOptions) -> None:
        self.options, self.recipe = options, options.recipe
        self.name = f"detect {options.backbone}"
        self.position = 0  # the iteration whose batch comes next

    def build(self, runtime: Runtime) -> Parts:
        options, recipe = self.options, self.recipe
        if runtime.distributed:
            raise ValueError("detection trains in one process; run `resnets detect train` without torchrun")
        self.device = runtime.device
        self.train_set = open_detection_data(options.data, "train", train_flip=True, seed=options.seed)
        self.split = eval_split(options.data)
        self.val_set = open_detection_data(options.data, self.split)
        backbone = load_backbone(options.backbone, options.pretrained)
        detector = build_detector(backbone, num_classes=max(self.train_set.categories) + 1, form=recipe.form,
                                  kind=recipe.kind, trainable_layers=recipe.trainable_layers,
                                  frozen_bn=recipe.frozen_bn, anchor_sizes=recipe.anchor_sizes,
                                  box_representation=recipe.box_representation, **recipe.detector_options())
        self.detector_config = detector_config(detector, backbone, recipe, self.train_set.categories)
        self.model = detector.to(runtime.device)
        optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=recipe.lr,
                                    momentum=recipe.momentum, weight_decay=recipe.weight_decay)
        self.evaluate_at = {round(recipe.iterations * (k + 1) / recipe.evaluations) for k in range(recipe.evaluations)}
        config = {"options": asdict(options), "detector": self.detector_config,
                  "backbone_source": options.pretrained or "He init (no pre-training)",
                  "split": {"train": _names(self.train_set), self.split: _names(self.val_set)}}
        announce = [f"{options.backbone} {recipe.form} {recipe.kind} on {options.data} (recipe {recipe.name}): "
                    f"{len(self.train_set)} training images, evaluated on {len(self.val_set)} {self.split} images, "
                    f"batch {recipe.batch_size}, {recipe.iterations} iterations"]
        return Parts(detector, optimizer, StatelessSchedule(recipe.lr_at), recipe.iterations, self.detector_config,
                     config, announce=announce)

    def batches(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        recipe, options = self.recipe, self.options
        while True:
            batch = []
            for epoch, index in sample_indices(self.position, recipe.batch_size, len(self.train_set), options.seed):
                self.train_set.set_epoch(epoch)
                batch.append(self.train_set[index])
            self.position += 1  # counted before the yield: a checkpoint taken while it trains resumes after it
            yield collate_detection(batch, self.device)

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = batch
        losses = model(images, targets)
        loss = sum(losses.values())
        count = torch.tensor(float(len(images)), dtype=torch.float64, device=self.device)
        stats = {key: value.detach().double() * count for key, value in losses.items()}
        return loss, {"images": count, **stats, "loss": loss.detach().double() * count}

    def evaluation_due(self, iteration: int) -> bool:
        return iteration in self.evaluate_at

    def evaluate(self, run: Run) -> tuple[dict[str, Any], float | None]:
        subset = None if run.iteration >= self.recipe.iterations else self.options.eval_images
        scores = evaluate_detector(self.model, self.val_set, limit=subset, precision=self.options.precision)
        self.model.train()
        return {f"{self.split}_{key}": value for key, value in scores.items()} | {f"{self.split}_images": subset}, None

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = state["position"]

    def finish(self, run: Run) -> dict[str, Any]:
        records = run.metrics.records if run.metrics is not None else []
        prefix = f"{self.split}_"
        final = next((r for r in reversed(records) if prefix + "map" in r), {})
        scores = {key: final[key] for key in final if key.startswith(prefix) and "map" in key}
        options, recipe, paths = self.options, self.recipe, run.paths
        save_detector(self.model, self.detector_config, paths.weights, {"split": self.split, **scores})
        summary = {"complete": run.iteration >= run.total, "iterations": run.iteration, "backbone": options.backbone,
                   "backbone_source": options.pretrained or "He init", "form": recipe.form, "kind": recipe.kind,
                   "recipe": recipe.name, "seed": options.seed, "eval_split": self.split,
                   f"{self.split}_images": len(self.val_set), "train_images": len(self.train_set),
                   "train_seconds": round(run.elapsed, 1), "precision": options.precision,
                   "hardware": hardware_description(run.runtime), **scores}
        atomic_write_json(paths.summary, summary)
        plot_detection_curves({options.backbone: records}, paths.curves)
        return summary


def _names(dataset: DetectionDataset | PennFudanDataset) -> list[str]:
    """The photos of a split, for the run's record of its split."""
    if isinstance(dataset, PennFudanDataset):
        return list(dataset.names)
    return [image["file_name"] for image in dataset.images]


def train_detector(options: DetectionOptions) -> dict[str, Any]:
    """Train one detector as `options` describe; returns the summary (also written to OUT/summary.json)."""
    return run_task(DetectionTask(options))
