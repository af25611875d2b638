"""DDP data shards: in one epoch the ranks together see the epoch (less the remainder that drop_last documents),
and no sample twice. Checked on each loader (`TensorBatchLoader`, `FolderBatchLoader`) for 2 and 3 ranks, on
what `build_data` makes for CIFAR, Imagenette and ImageNet folders under a Runtime of rank r, and in a real
two-process gloo group on the CPU (`setup_runtime` from torchrun's environment variables) where each rank
records the training images it was given. The DDP training tests compare DDP runs with DDP runs, so a loader
that gave every rank rank 0's shard would pass them; these would not."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from resnets.data.cifar import FORMATS
from resnets.data.loader import FolderBatchLoader, TensorBatchLoader
from resnets.runtime import Runtime
from resnets.train.data import build_data
from resnets.train.recipes import RunOptions, get_recipe

from .conftest import write_synthetic_imagenette

EPOCH = 3  # any epoch: shards are a function of (seed, epoch)


def assert_disjoint_shards(seen: list[list[int]], expected_total: int, count: int) -> None:
    """Each rank's samples are distinct, no sample is on two ranks, together they are `expected_total` samples."""
    for rank, shard in enumerate(seen):
        assert len(set(shard)) == len(shard), f"rank {rank} saw a sample twice"
        assert set(shard) <= set(range(count)), f"rank {rank} saw an index outside the dataset"
    for a in range(len(seen)):
        for b in range(a + 1, len(seen)):
            shared = set(seen[a]) & set(seen[b])
            assert not shared, f"ranks {a} and {b} both saw {len(shared)} samples, e.g. {sorted(shared)[:5]}"
    assert sum(map(len, seen)) == expected_total


def labels_seen(loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [int(label) for _, labels in loader for label in labels]


# The loaders: labels are the sample indices

def tensor_loader(count: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> TensorBatchLoader:
    loader = TensorBatchLoader(torch.zeros(count, 1, 1, 1, dtype=torch.uint8), torch.arange(count),
                               batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=5, rank=rank,
                               world_size=world_size)
    loader.set_epoch(EPOCH)
    return loader


@pytest.mark.parametrize(("count", "world_size", "batch_size", "seen_in_all"), [
    (100, 2, 8, 96),   # 50 per rank, 6 full batches of 8: 48 per rank
    (101, 3, 8, 96),   # 101 cut to 99, 33 per rank, 4 full batches: 32 per rank
    (90, 3, 10, 90),   # nothing to drop
])
def test_tensor_loader_ranks_split_the_epoch(count: int, world_size: int, batch_size: int, seen_in_all: int) -> None:
    """drop_last (the training loaders): the shards are disjoint and cover the epoch but the dropped remainder."""
    seen = [labels_seen(tensor_loader(count, batch_size, rank, world_size, True)) for rank in range(world_size)]
    assert_disjoint_shards(seen, seen_in_all, count)


def test_tensor_loader_pads_like_distributed_sampler_without_drop_last() -> None:
    """100 samples on 3 ranks: 34 each, the epoch padded by repeating 2 samples, so every sample is seen and
    exactly 2 twice."""
    seen = [labels_seen(tensor_loader(100, 7, rank, 3, False)) for rank in range(3)]
    assert [len(shard) for shard in seen] == [34, 34, 34]
    assert set().union(*seen) == set(range(100))
    everything = [index for shard in seen for index in shard]
    assert len(everything) - len(set(everything)) == 2


def test_tensor_loader_draws_another_split_each_epoch() -> None:
    """Disjoint in every epoch, and not the same split each time (the order is shuffled per epoch)."""
    shards = []
    for epoch in (1, 2):
        ranks = [tensor_loader(64, 8, rank, 2, True) for rank in range(2)]
        for loader in ranks:
            loader.set_epoch(epoch)
        seen = [labels_seen(loader) for loader in ranks]
        assert_disjoint_shards(seen, 64, 64)
        shards.append(set(seen[0]))
    assert shards[0] != shards[1]


class Indices(Dataset):
    """Sample i is (a 1-pixel uint8 image, label i)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1, 1, 1, dtype=torch.uint8), index


@pytest.mark.parametrize(("count", "world_size", "batch_size", "seen_in_all"), [
    (100, 2, 8, 96),  # 50 per rank, 6 full batches of 8
    (100, 3, 8, 96),  # 33 per rank, 4 full batches
    (60, 3, 5, 60),
])
def test_folder_loader_ranks_split_the_epoch(count: int, world_size: int, batch_size: int, seen_in_all: int) -> None:
    seen = []
    for rank in range(world_size):
        loader = FolderBatchLoader(Indices(count), batch_size, finish=lambda batch: batch.float(),
                                   device=torch.device("cpu"), seed=5, rank=rank, world_size=world_size, workers=0)
        loader.set_epoch(EPOCH)
        seen.append(labels_seen(loader))
        assert len(seen[-1]) == len(loader) * batch_size
    assert_disjoint_shards(seen, seen_in_all, count)


# build_data: the runtime's rank and world size reach the loaders

def write_numbered_cifar(folder: Path, train: int, test: int) -> Path:
    """CIFAR-10 binaries whose image i is one flat colour that spells i (red = i % 256, green = i // 256): a crop or
    a flip of it is the same colour, so the index of every augmented training image can be read back."""
    fmt = FORMATS["cifar10"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        index = torch.arange(count)
        colour = torch.stack([index % 256, index // 256, (7 * index) % 256], 1).to(torch.uint8)
        pixels = colour[:, :, None, None].expand(count, 3, 32, 32)
        records = torch.cat([(index % 10)[:, None].to(torch.uint8), pixels.flatten(1)], 1).numpy()
        for part, file in zip(np.array_split(records, len(fmt.files[split])), fmt.files[split], strict=True):
            part.tofile(folder / file)
    (folder / fmt.names_file).write_text("\n".join(f"class{k}" for k in range(10)) + "\n")
    return folder


def numbers_in(inputs: torch.Tensor, mean: torch.Tensor) -> list[int]:
    """The image indices of a normalised batch of numbered CIFAR images: the centre pixel lies inside the original
    image whatever the crop (offsets up to 4 of 32), and the mean image of flat images is flat."""
    centre = ((inputs[:, :, 16, 16].float() + mean[:, 16, 16]) * 255).round().long()
    return (centre[:, 0] + 256 * centre[:, 1]).tolist()


def numbered_images_seen(loader: TensorBatchLoader) -> list[int]:
    assert loader.mean is not None
    return [index for inputs, _ in loader for index in numbers_in(inputs, loader.mean)]


@pytest.fixture(scope="module")
def numbered_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_numbered_cifar(tmp_path_factory.mktemp("numbered-cifar"), train=300, test=50)


def cpu_runtime(rank: int, world_size: int) -> Runtime:
    return Runtime(torch.device("cpu"), rank=rank, world_size=world_size, local_rank=rank)


@pytest.mark.parametrize(("world_size", "seen_in_all"), [(2, 256), (3, 252)])
def test_cifar_training_data_is_sharded_by_the_runtime_rank(numbered_cifar: Path, world_size: int,
                                                            seen_in_all: int) -> None:
    """The `fast` recipe (batch 128, augmented) on 300 numbered images: 2 ranks take batches of 64 from 150 each
    (2 batches, 128 per rank), 3 ranks batches of 42 from 100 each (84 per rank). Evaluation: rank r holds test
    images r, r + world_size, ..."""
    options = RunOptions(dataset="cifar10", data=str(numbered_cifar), seed=1, channels_last=False)
    recipe = get_recipe("fast")
    assert recipe.augment and recipe.batch_size == 128
    seen, tested = [], []
    for rank in range(world_size):
        data = build_data(options, recipe, cpu_runtime(rank, world_size))
        assert isinstance(data.train, TensorBatchLoader)
        data.train.set_epoch(EPOCH)
        seen.append(numbered_images_seen(data.train))
        tested.append(numbered_images_seen(data.evals["test"]))
    assert_disjoint_shards(seen, seen_in_all, 300)
    assert tested == [list(range(rank, 50, world_size)) for rank in range(world_size)]


def test_imagenette_training_data_is_sharded_by_the_runtime_rank(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """24 photos, batch 8 over 2 ranks: 3 batches of 4 per rank, every photo seen once; the validation photos are
    split the same way (8 photos, 4 per rank, told apart by their label and content)."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_imagenette(tmp_path / "imagenette")
    options = RunOptions(dataset="imagenette", data=str(root), seed=1, channels_last=False)
    recipe = dataclasses.replace(get_recipe("imagenette"), batch_size=8)
    shards, views = [], []
    for rank in range(2):
        data = build_data(options, recipe, cpu_runtime(rank, 2))
        loader = data.train
        assert isinstance(loader, TensorBatchLoader) and len(loader) == 3 and loader.batch_size == 4
        loader.set_epoch(EPOCH)
        # what batch k reads: positions k * batch_size ... of this rank's plan for the epoch
        shards.append(loader.plan(EPOCH).indices[: len(loader) * loader.batch_size].tolist())
        assert sum(len(labels) for _, labels in loader) == 12
        views.append(data.evals["test"].images)
    assert_disjoint_shards(shards, 24, 24)
    assert len(views[0]) == len(views[1]) == 4
    assert not any(torch.equal(a, b) for a in views[0] for b in views[1])


def test_imagenet_folder_training_data_is_sharded_by_the_runtime_rank(tmp_path: Path) -> None:
    """ImageNet-style folders (FolderBatchLoader): 24 photos, batch 6 over 3 ranks: 8 photos and 4 batches of 2 per
    rank; the validation photos (8) split 3/3/2."""
    root = write_synthetic_imagenette(tmp_path / "imagenet")
    options = RunOptions(dataset="imagenet", data=str(root), seed=1, workers=0, channels_last=False)
    recipe = dataclasses.replace(get_recipe("step-90"), batch_size=6, mean_images=8)
    shards, evaluated = [], []
    for rank in range(3):
        data = build_data(options, recipe, cpu_runtime(rank, 3))
        loader = data.train
        assert isinstance(loader, FolderBatchLoader) and len(loader) == 4 and loader.batch_size == 2
        loader.set_epoch(EPOCH)
        shards.append(loader.epoch_indices())
        evaluated.append(list(data.evals["test"].dataset.indices))
    assert_disjoint_shards(shards, 24, 24)
    assert evaluated == [[0, 3, 6], [1, 4, 7], [2, 5]]


# A real process group

def record_what_this_rank_sees(rank: int, port: int, data: str, out: str) -> None:
    """One torchrun-style worker: join the gloo group from the environment, build the CIFAR training data, and
    gather every rank's training images of two epochs on rank 0, which writes them to `out`."""
    import torch.distributed as dist

    from resnets.runtime import setup_runtime, teardown_runtime

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    runtime = setup_runtime("cpu")
    try:
        loader = build_data(RunOptions(dataset="cifar10", data=data, seed=2, channels_last=False),
                            get_recipe("fast"), runtime).train
        assert isinstance(loader, TensorBatchLoader)
        seen = {}
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            seen[epoch] = numbered_images_seen(loader)
        gathered: list[object] = [None, None]
        dist.all_gather_object(gathered, {"rank": runtime.rank, "world_size": runtime.world_size, "seen": seen})
        if runtime.is_main:
            Path(out).write_text(json.dumps(gathered))
    finally:
        teardown_runtime(runtime)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_train_on_disjoint_shards(numbered_cifar: Path, tmp_path: Path) -> None:
    """Two processes in a gloo group, each with the Runtime that `setup_runtime` makes from RANK and WORLD_SIZE:
    in each of two epochs they are given 128 distinct images each, none in common, and other ones in epoch 1."""
    out = tmp_path / "seen.json"
    # fork: the workers start with this process's imports (spawn re-imports torch and torchvision: ~10 s on 2 busy
    # cores); each sets one thread before any parallel work, so no OpenMP pool is carried over into it
    group = mp.start_processes(record_what_this_rank_sees, args=(free_port(), str(numbered_cifar), str(out)),
                               nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not group.join(timeout=1):  # raises when a worker failed
        if time.monotonic() > deadline:
            for process in group.processes:
                process.kill()
            pytest.fail("the two gloo workers did not finish within 120 s")
    ranks = json.loads(out.read_text())
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    for epoch in ("0", "1"):
        assert_disjoint_shards([r["seen"][epoch] for r in ranks], 256, 300)
    assert set(ranks[0]["seen"]["0"]) != set(ranks[0]["seen"]["1"])
