"""ImageNet-style training data for the one loop: JPEG folders decoded in DataLoader workers with the paper's
scale augmentation (Sec. 3.4); lighting and mean subtraction run on the collated batch on the training device.

Layout under --data: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, or a flat val/ folder with a labels file
(--val-labels FILE), or flat folders of <wnid>_<name> files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..data.cifar import spread_indices
from ..data.folder import ImageFolderDataset, open_image_folder
from ..data.paths import datasets_root
from ..data.transforms import (
    EvalTransform,
    Normalize,
    PaperTrainTransform,
    compute_mean_image,
    compute_pca_lighting,
)
from .data import TrainingData
from .recipes import Recipe, RunOptions
from .runtime import Runtime

EVAL_BATCH = 50


class FolderBatchLoader:
    """DataLoader over a folder dataset with the resumable interface of TensorBatchLoader (epoch, position).

    The epoch's order is a pure function of (seed, epoch), sharded over ranks like DistributedSampler; on resume
    the loader starts at the next unseen batch. Augmentation draws come from each worker's torch seed, which is
    derived from (seed, epoch, position, rank): a resumed run sees the same images in the same order, with
    fresh augmentation draws (exact bit-identity is a CIFAR feature, where augmentation is batched).
    """

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, *, finish: Any, device: torch.device,
                 seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 4,
                 channels_last: bool = False) -> None:
        self.dataset, self.batch_size, self.finish, self.device = dataset, batch_size, finish, device
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.channels_last = channels_last
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not 0 <= int(state["position"]) <= len(self):
            raise ValueError(f"loader position {state['position']} is outside 0..{len(self)} batches per epoch; the "
                             "checkpoint was written with another batch size, dataset or world size")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def epoch_indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        per_rank = len(self) * self.batch_size
        shard = order[: per_rank * self.world_size][self.rank :: self.world_size]
        return shard[self.position * self.batch_size :].tolist()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        base_seed = hash((self.seed, self.epoch, self.position, self.rank)) % 2**31
        loader = DataLoader(Subset(self.dataset, self.epoch_indices()), batch_size=self.batch_size,
                            num_workers=self.workers, drop_last=True, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(base_seed),
                            persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for images, labels in loader:
            self.position += 1
            inputs = self.finish(images.to(self.device, non_blocking=True))
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            yield inputs, labels.to(self.device, non_blocking=True)


def _find_split(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet-style data needs {folder}/ (<wnid>/*.JPEG folders or <wnid>_*.JPEG files); "
                                "point --data at the folder holding train/ and val/")
    return folder


def build_imagenet_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    root = Path(options.data) if options.data else datasets_root() / "imagenet"
    on_bad = options.on_bad_image
    train_set = open_image_folder(_find_split(root, "train"), on_bad_image=on_bad)
    val_set = open_image_folder(_find_split(root, "val"), class_to_idx=train_set.class_to_idx,
                                labels_file=options.val_labels, on_bad_image=on_bad)
    if options.subset:
        chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(options.seed))
        train_set = ImageFolderDataset.from_samples([train_set.samples[i] for i in chosen[: options.subset]],
                                                    train_set.classes, root=train_set.root, on_bad_image=on_bad)
    if recipe.mean == "pixel":  # Sec. 3.4: "the per-pixel mean subtracted"
        normalize = Normalize(compute_mean_image(train_set, size=recipe.crop_size, resize=recipe.eval_resize,
                                                 max_images=recipe.mean_images), std=None)
    else:
        normalize = Normalize()  # torchvision's per-channel mean/std
    device = runtime.device
    if recipe.lighting_pca not in ("imagenet", "computed"):
        raise ValueError(f"lighting_pca must be 'imagenet' or 'computed', got {recipe.lighting_pca!r}")
    pca = {}
    if recipe.lighting_pca == "computed" and recipe.lighting_std > 0:
        eigval, eigvec = compute_pca_lighting(train_set, max_images=recipe.mean_images, resize=recipe.eval_resize,
                                              size=recipe.crop_size)
        pca = {"eigval": eigval, "eigvec": eigvec}
    if recipe.augment:
        transform = PaperTrainTransform(scale=(recipe.scale_min, recipe.scale_max), crop_size=recipe.crop_size,
                                        lighting_std=recipe.lighting_std, normalize=normalize, uint8_output=True,
                                        **pca)
    else:  # no augmentation: the evaluation view (overfitting checks, feature extraction)
        transform = _EvalGeometry(EvalTransform(recipe.eval_resize, recipe.crop_size, normalize))
    finish = transform.finish_batch
    train_loader = FolderBatchLoader(train_set.with_transform(transform), recipe.batch_size // runtime.world_size,
                                     finish=finish, device=device, seed=options.seed, rank=runtime.rank,
                                     world_size=runtime.world_size, workers=options.workers,
                                     channels_last=options.channels_last)
    eval_transform = EvalTransform(recipe.eval_resize, recipe.crop_size, normalize)
    # Val folders are sorted by class: a subset is spread over them. Each rank evaluates every world_size-th image.
    val_indices = spread_indices(len(val_set), options.eval_subset).tolist()
    val_shard = Subset(val_set, val_indices[runtime.rank::runtime.world_size])
    eval_loader = DataLoader(_with_transform(val_shard, eval_transform), batch_size=EVAL_BATCH,
                             num_workers=options.workers, pin_memory=device.type == "cuda")
    preprocess = {"kind": "imagenet", "resize": recipe.eval_resize, "crop": recipe.crop_size,
                  **{f"normalize_{k}": v for k, v in normalize.state_dict().items()},
                  "mean": normalize.channel_mean.tolist(),
                  "std": None if normalize.std is None else normalize.std.tolist()}
    description = {"source": f"image folders {root} (JPEG)", "dataset": "imagenet", "train_images": len(train_set),
                   "lighting": {k: v.tolist() for k, v in pca.items()} or "imagenet (AlexNet)",
                   "test_images": len(val_indices), "classes": len(train_set.classes),
                   "class_to_idx": train_set.class_to_idx}
    data = TrainingData(train_loader, {"test": eval_loader}, list(train_set.classes), len(train_set),
                        preprocess, description)
    data.bad_images = lambda: train_set.bad_images + val_set.bad_images
    return data


class _EvalGeometry:
    """The evaluation view as a training transform with the uint8-in-workers / float-on-device split."""

    def __init__(self, transform: EvalTransform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform.geometry(image)

    def finish_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform.normalize(images.float().div_(255))


def _with_transform(dataset: ImageFolderDataset | Subset, transform: Any) -> Any:
    if isinstance(dataset, Subset):
        return Subset(dataset.dataset.with_transform(transform), dataset.indices)
    return dataset.with_transform(transform)

