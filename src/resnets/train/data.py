"""What the training loop needs from a dataset: a resumable train loader, eval loaders, classes and the
preprocessing to store with the weights. CIFAR keeps decoded uint8 tensors on the training device
and augments whole batches there (Sec. 4.2); ImageNet decodes JPEGs in DataLoader workers (Sec. 3.4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.cifar import load_cifar, per_pixel_mean, spread_indices, train_val_split
from ..data.loader import TensorBatchLoader
from .recipes import Recipe, RunOptions
from .runtime import Runtime

CIFAR_DATASETS = ("cifar10", "cifar100")
EVAL_BATCH = 500


@dataclass
class TrainingData:
    train: Any  # iterable of (inputs, labels) with __len__, set_epoch, state_dict, load_state_dict
    evals: dict[str, Any]  # "test" always; "val" when the recipe holds out a validation split
    classes: list[str]
    train_size: int
    preprocess: dict[str, Any]  # stored with the weights so that predict/eval/export reproduce it
    description: dict[str, Any] = field(default_factory=dict)
    bad_images: Callable[[], list[str]] = list  # unreadable files skipped so far (--on-bad-image skip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    if options.dataset in CIFAR_DATASETS:
        return build_cifar_data(options, recipe, runtime)
    if options.dataset == "imagenet":
        from .imagenet_data import build_imagenet_data

        return build_imagenet_data(options, recipe, runtime)
    raise ValueError(f"unknown dataset {options.dataset!r}; valid: {', '.join((*CIFAR_DATASETS, 'imagenet'))}")


def build_cifar_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    train = load_cifar(options.data, options.dataset, "train")
    test = load_cifar(options.data, options.dataset, "test")
    device = runtime.device
    train_images, train_labels = train.images, train.labels
    evals_source = {"test": (test.images, test.labels)}
    if recipe.val_split:
        train_index, val_index = train_val_split(len(train_labels), recipe.val_split, seed=0)
        evals_source["val"] = (train_images[val_index], train_labels[val_index])
        train_images, train_labels = train_images[train_index], train_labels[train_index]
    if options.subset:
        chosen = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(options.seed))
        train_images, train_labels = train_images[chosen[: options.subset]], train_labels[chosen[: options.subset]]
    if options.eval_subset:  # spread evenly: image folders list the test set class by class
        picks = {k: spread_indices(len(y), options.eval_subset) for k, (_, y) in evals_source.items()}
        evals_source = {k: (x[picks[k]], y[picks[k]]) for k, (x, y) in evals_source.items()}
    # Sec. 4.2: "the per-pixel mean subtracted", computed on the images the network trains on.
    mean = per_pixel_mean(train_images).to(device)
    common = {"mean": mean, "channels_last": options.channels_last}
    train_loader = TensorBatchLoader(
        train_images.to(device), train_labels.to(device), batch_size=recipe.batch_size // runtime.world_size,
        shuffle=True, augment=recipe.augment, pad=recipe.pad, drop_last=True, seed=options.seed,
        rank=runtime.rank, world_size=runtime.world_size, **common)
    shard = slice(runtime.rank, None, runtime.world_size)  # each rank evaluates every world_size-th image
    evals = {split: TensorBatchLoader(images[shard].to(device), labels[shard].to(device), batch_size=EVAL_BATCH,
                                      shuffle=False, augment=False, drop_last=False, **common)
             for split, (images, labels) in evals_source.items()}
    preprocess = {"kind": "cifar", "size": 32, "mean_image": mean.cpu(),
                  "mean": mean.mean(dim=(1, 2)).cpu().tolist(), "std": None}
    description = {"source": train.source, "dataset": options.dataset, "train_images": len(train_labels),
                   "test_images": len(evals_source["test"][1]), "val_images": recipe.val_split}
    return TrainingData(train_loader, evals, list(train.classes), len(train_labels), preprocess, description)
