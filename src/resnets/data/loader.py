"""The training loop's data, behind one small protocol (`BatchLoader`): a resumable iterator of (inputs, labels)
batches whose position is (epoch, batches already yielded), with one seed scheme (`epoch_seed`).

`TensorBatchLoader`: datasets small enough to keep whole on the training device as uint8 (CIFAR; Imagenette's
224x224 photos), augmented on entire batches there by a `BatchAugment`: the paper's CIFAR augmentation (Sec. 4.2:
pad 4, random 32x32 crop, horizontal flip; `PadCropFlip`) or its ImageNet one (`transforms.ScaleCropFlip`). At
32x32 a DataLoader's per-image Python work costs more than the network's forward pass; here each batch is a few
tensor ops. All randomness of an epoch is
drawn up front from a generator seeded by (seed, epoch), so batch k of an epoch is a pure function of
(seed, epoch, k): that is what makes resuming bit-exact and DDP shards disjoint.

`FolderBatchLoader`: image folders (ImageNet, Sec. 3.4) decoded in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .preprocess import Preprocessing


def draw_crop_flip(count: int, pad: int = 4, generator: torch.Generator | None = None,
                   flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (row, column) crop offsets, uniform in 0..2*pad, and flip decisions with p = 0.5, drawn on the
    generator's device (CPU by default) so that the same seed gives the same augmentation on any training device."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator, device=device)
    flips = (torch.randint(0, 2, (count,), generator=generator, device=device).bool() if flip
             else torch.zeros(count, dtype=torch.bool, device=device))
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Zero-pad `images` (B x C x H x W) by `pad`, take the H x W window at `offsets` (B x 2, row and column) and
    mirror it where `flips` (B) is set. One gather from the stack (padded, mirrored padded): a flipped crop at column
    offset c is the plain crop of the mirrored image at 2*pad - c. No boolean masking, hence no host sync on GPU."""
    if images.ndim != 4:
        raise ValueError(f"crop_flip needs a B x C x H x W batch, got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad))
    both = torch.stack((padded, padded.flip(3)))  # 2 x B x C x (H + 2 pad) x (W + 2 pad)
    windows = both.unfold(3, height, 1).unfold(4, width, 1)  # 2 x B x C x rows x cols x H x W (a view)
    columns = torch.where(flips, 2 * pad - offsets[:, 1], offsets[:, 1])
    batch_index = torch.arange(batch, device=images.device)
    return windows[flips.long(), batch_index, :, offsets[:, 0], columns]


def pad_crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None,
                  flip: bool = True) -> torch.Tensor:
    """The paper's CIFAR augmentation on a whole batch (uint8 or float), on the batch's own device."""
    offsets, flips = draw_crop_flip(len(images), pad, generator, flip)
    return crop_flip(images, offsets, flips, pad)


class BatchAugment(Protocol):
    """Random augmentation of a whole batch on the training device: `draw` makes every image's random parameters up
    front (on the CPU generator, so a seed means the same views on any device), `__call__` turns a float batch in
    [0, 1] and its parameters into normalised network inputs. Parameters are moved to the batch's device, but those
    named in an optional `host_params` attribute stay on the CPU: values `__call__` reads as Python numbers (e.g. a
    batch's output side), where a device tensor would cost a host synchronisation at every step."""

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]: ...
    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor: ...


class PadCropFlip:
    """Sec. 4.2's CIFAR augmentation as a `BatchAugment`. Normalising before padding makes the padded border equal
    to the mean image, i.e. zero input, which is what padding means to the first convolution."""

    def __init__(self, normalize: Callable[[torch.Tensor], torch.Tensor], pad: int = 4) -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.normalize, self.pad = normalize, pad

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        offsets, flips = draw_crop_flip(count, self.pad, generator)
        return {"offsets": offsets, "flips": flips}

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return crop_flip(self.normalize(images), params["offsets"], params["flips"], self.pad)


def epoch_seed(seed: int, epoch: int, *more: int) -> int:
    """A 63-bit seed per (seed, epoch, ...); hashed rather than e.g. seed * K + epoch, which collides across runs.
    The one seed scheme of the package: epoch orders, augmentation draws, DataLoader worker seeds."""
    key = ":".join(str(int(part)) for part in (seed, epoch, *more))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


class BatchLoader(Protocol):
    """What the training loop iterates: `len()` batches per epoch for this rank, resumable at a batch boundary."""

    epoch: int
    position: int

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...


class ResumablePosition:
    """(epoch, position) bookkeeping shared by both loaders: set_epoch, state_dict, load_state_dict."""

    epoch: int = 0
    position: int = 0
    _completed: bool = False  # this object ran the current epoch to its end (TensorBatchLoader replays it then)

    def __len__(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch. Calling it with the current epoch keeps the position, so a trainer
        may call set_epoch after load_state_dict without losing its place."""
        if epoch != self.epoch:
            self.epoch, self.position, self._completed = epoch, 0, False

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"loader position {position} is outside 0..{len(self)} batches per epoch; the checkpoint "
                             "was written with another batch size, dataset or world size")
        self.epoch, self.position, self._completed = epoch, position, False

    @property
    def epoch_finished(self) -> bool:
        return self.position >= len(self)


@dataclass
class EpochPlan:
    """This rank's sample order and augmentation for one epoch, on the training device."""

    epoch: int
    indices: torch.Tensor
    params: dict[str, torch.Tensor] | None  # this rank's augmentation parameters, one row per sample


class TensorBatchLoader(ResumablePosition):
    """Iterates (inputs, labels) batches of uint8 images held on the training device.

    inputs = augment(images / 255) cast to `dtype`, where `augment` is a `BatchAugment` (True: CIFAR's `PadCropFlip`
    with `pad`, `mean` and `std`) that normalises its own output; without augmentation ((images / 255) - mean) / std.

    Resuming: `state_dict()` is (epoch, batches already yielded); after `load_state_dict` iteration continues with
    the next unseen batch, identical to an uninterrupted run. Iterating yields the rest of the current epoch; once an
    epoch has been run to its end a new iteration replays it from the start (evaluation loaders are iterated many
    times), whereas a state loaded at an epoch's end yields nothing until `set_epoch` moves on, as the interrupted
    run would have. DDP: like DistributedSampler, the epoch's order is padded (or, with drop_last, cut) to a
    multiple of world_size and rank r takes positions r, r + world_size, ...; batch_size is per rank.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 augment: bool | BatchAugment = False, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32, pad: int = 4) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be one per image: {tuple(labels.shape)} for {len(images)} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.drop_last, self.seed, self.rank, self.world_size = drop_last, seed, rank, world_size
        self.channels_last, self.dtype = channels_last, dtype
        self.mean = self._statistic(mean, "mean")
        self.std = self._statistic(std, "std")
        self.augment: BatchAugment | None = (PadCropFlip(self.normalize, pad) if augment is True
                                             else augment or None)
        self.epoch, self.position = 0, 0
        self._completed = False  # this object ran the current epoch to its end (see the class docstring)
        self._plan: EpochPlan | None = None

    def _statistic(self, value: torch.Tensor | None, what: str) -> torch.Tensor | None:
        if value is None:
            return None
        value = torch.as_tensor(value, dtype=torch.float32, device=self.images.device)
        try:
            torch.broadcast_shapes(value.shape, self.images.shape[1:])
        except RuntimeError as error:
            raise ValueError(f"{what} of shape {tuple(value.shape)} does not broadcast to images of shape "
                             f"{tuple(self.images.shape[1:])}; pass C x H x W or C x 1 x 1") from error
        return value

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(images - mean) / std, in place, for a float batch in [0, 1]."""
        if self.mean is not None:
            images.sub_(self.mean)
        if self.std is not None:
            images.div_(self.std)
        return images

    @property
    def samples_per_rank(self) -> int:
        count = len(self.labels)
        return count // self.world_size if self.drop_last else math.ceil(count / self.world_size)

    def __len__(self) -> int:
        per_rank = self.samples_per_rank
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's order and augmentation, drawn in full for all ranks (cheap: a few N-sized tensors) so that a
        sample's augmentation depends only on its place in the epoch, not on which rank draws it."""
        if self._plan is not None and self._plan.epoch == epoch:
            return self._plan
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        count = len(self.labels)
        order = torch.randperm(count, generator=generator) if self.shuffle else torch.arange(count)
        total = self.samples_per_rank * self.world_size
        order = order.repeat(math.ceil(total / count))[:total] if count else order
        params = None
        if self.augment is not None:
            drawn = self.augment.draw(total, generator)
            host = getattr(self.augment, "host_params", frozenset())
            params = {name: value[self.rank::self.world_size].to("cpu" if name in host else self.images.device)
                      for name, value in drawn.items()}
        indices = order[self.rank::self.world_size].to(self.images.device)
        self._plan = EpochPlan(epoch, indices, params)
        return self._plan

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `epoch` for this rank; no host synchronisation, no per-image Python work."""
        plan = self.plan(epoch)
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        chosen = plan.indices[window]
        inputs = self.images.index_select(0, chosen).float().div_(255)
        if self.augment is not None and plan.params is not None:
            inputs = self.augment(inputs, {name: value[window] for name, value in plan.params.items()})
        else:
            inputs = self.normalize(inputs)
        inputs = inputs.to(self.dtype)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, self.labels.index_select(0, chosen)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._completed and self.position >= len(self):
            self.position = 0
        self._completed = False
        while self.position < len(self):
            index = self.position
            self.position += 1  # counted before the yield: a checkpoint taken while the batch trains resumes after it
            yield self.batch(self.epoch, index)
        self._completed = True


class FolderBatchLoader(ResumablePosition):
    """DataLoader over an image-folder dataset with the resumable interface of TensorBatchLoader (epoch, position).

    The epoch's order is a pure function of (seed, epoch), sharded over ranks like DistributedSampler; on resume the
    loader starts at the next unseen batch. Workers draw augmentation from torch seeds derived from
    (seed, epoch, position, rank): a resumed run sees the same images in the same order, with fresh augmentation
    draws (exact bit-identity is a CIFAR feature, where augmentation is batched). `finish` runs on each collated
    uint8 batch on the training device (float conversion, lighting, mean subtraction).
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, finish: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 4,
                 channels_last: bool = False) -> None:
        self.dataset, self.batch_size, self.finish, self.device = dataset, batch_size, finish, device
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.channels_last = channels_last
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size  # type: ignore[arg-type]

    def epoch_indices(self) -> list[int]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(  # type: ignore[arg-type]
            epoch_seed(self.seed, self.epoch)))
        per_rank = len(self) * self.batch_size
        shard = order[: per_rank * self.world_size][self.rank :: self.world_size]
        return shard[self.position * self.batch_size :].tolist()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers_seed = epoch_seed(self.seed, self.epoch, self.position, self.rank)
        loader = DataLoader(Subset(self.dataset, self.epoch_indices()), batch_size=self.batch_size,
                            num_workers=self.workers, drop_last=True, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(workers_seed),
                            persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for images, labels in loader:
            self.position += 1
            inputs = self.finish(images.to(self.device, non_blocking=True))
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            yield inputs, labels.to(self.device, non_blocking=True)


@dataclass
class TrainingData:
    """What the training loop needs from a dataset: a resumable train loader, eval loaders, the classes and the
    preprocessing record stored with the weights."""

    train: BatchLoader
    evals: dict[str, Any]  # "test" always; "val" when the recipe holds out a validation split
    classes: list[str]
    train_size: int
    preprocess: Preprocessing
    description: dict[str, Any] = field(default_factory=dict)
    bad_images: Callable[[], list[str]] = list  # unreadable files skipped so far (--on-bad-image skip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
