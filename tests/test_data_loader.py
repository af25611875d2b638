"""Batched pad-crop-flip (Sec. 4.2) and the tensor loader: determinism, exact resume, DDP shards, normalisation."""

from __future__ import annotations

import pytest
import torch

from resnets.data.decoded import per_pixel_mean
from resnets.data.loader import TensorBatchLoader, pad_crop_flip


def random_images(count: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def identify_crops(inputs: torch.Tensor, outputs: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """For each output image, the (row offset, column offset, flipped) of the one window of the zero-padded input it
    equals; -1 rows where none does. Written independently of the implementation: explicit padding and slicing."""
    batch, channels, height, width = inputs.shape
    padded = torch.zeros(batch, channels, height + 2 * pad, width + 2 * pad, dtype=inputs.dtype)
    padded[:, :, pad:pad + height, pad:pad + width] = inputs
    found = torch.full((batch, 3), -1, dtype=torch.int64)
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            window = padded[:, :, top:top + height, left:left + width]
            for flipped, candidate in ((0, window), (1, window.flip(3))):
                match = (outputs == candidate).flatten(1).all(1)
                assert not (match & (found[:, 0] >= 0)).any(), "two windows match: test images too regular"
                found[match] = torch.tensor([top, left, flipped])
    return found


def test_each_output_is_a_window_of_the_padded_input_maybe_flipped() -> None:
    images = random_images(800)
    out = pad_crop_flip(images, pad=4, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    found = identify_crops(images, out)
    assert (found[:, 0] >= 0).all(), "some outputs are no 32x32 window of the padded input"
    for axis in (0, 1):  # every offset 0..8 occurs, about equally often (expected 89 each)
        counts = torch.bincount(found[:, axis], minlength=9)
        assert len(counts) == 9 and counts.min() > 800 / 9 * 0.6, counts
    assert 0.44 < found[:, 2].float().mean().item() < 0.56  # flips ~ 50%: +-3.4 standard deviations of 800 draws
    as_float = pad_crop_flip(images.float(), pad=4, generator=torch.Generator().manual_seed(1))
    assert as_float.dtype == torch.float32 and torch.equal(as_float, out.float())


def test_no_pad_no_flip_is_identity_and_seeds_repeat() -> None:
    images = random_images(16)
    assert torch.equal(pad_crop_flip(images, pad=0, flip=False), images)
    only_flips = pad_crop_flip(images, pad=0, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(2)) for o, i in zip(only_flips, images, strict=True))
    first = pad_crop_flip(images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, pad_crop_flip(images, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(first, pad_crop_flip(images, generator=torch.Generator().manual_seed(6)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_on_gpu_matches_cpu() -> None:
    images = random_images(256)
    cpu = pad_crop_flip(images.float(), generator=torch.Generator().manual_seed(3))
    gpu = pad_crop_flip(images.float().cuda(), generator=torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


def collect(loader, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in loader:
        batches.append(batch)
        assert len(batches) <= len(loader), "the loader yields more batches than an epoch holds"
        if limit is not None and len(batches) == limit:
            break
    return batches


def assert_same_stream(a, b) -> None:
    assert len(a) == len(b)
    for (inputs_a, labels_a), (inputs_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(inputs_a, inputs_b) and torch.equal(labels_a, labels_b)


def make_loader(count: int = 100, **options) -> TensorBatchLoader:
    """Labels are the sample indices, so that batches say which samples they hold."""
    images = random_images(count)
    defaults = {"batch_size": 16, "shuffle": True, "augment": True, "mean": per_pixel_mean(images), "seed": 7}
    return TensorBatchLoader(images, torch.arange(count), **{**defaults, **options})


def test_same_seed_same_stream_other_seed_or_epoch_differs() -> None:
    stream = collect(make_loader())
    assert_same_stream(stream, collect(make_loader()))
    assert not torch.equal(stream[0][1], collect(make_loader(seed=8))[0][1])
    next_epoch = make_loader()
    next_epoch.set_epoch(1)
    assert not torch.equal(stream[0][1], collect(next_epoch)[0][1])
    assert len(stream) == 7 and [len(labels) for _, labels in stream][-1] == 4  # 100 = 6 x 16 + 4
    assert sorted(torch.cat([labels for _, labels in stream]).tolist()) == list(range(100))


def test_resume_mid_epoch_continues_the_uninterrupted_stream() -> None:
    uninterrupted = make_loader()
    uninterrupted.set_epoch(3)
    full = collect(uninterrupted)
    interrupted = make_loader()
    interrupted.set_epoch(3)
    collect(interrupted, limit=3)
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "position": 3}
    resumed = make_loader()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a trainer re-announcing the current epoch keeps the resume point
    assert_same_stream(collect(resumed), full[3:])
    # At the end of an epoch: nothing left of it; the next epoch is the one an uninterrupted run would see.
    assert resumed.state_dict() == {"epoch": 3, "position": len(resumed)}
    at_end = make_loader()
    at_end.load_state_dict(resumed.state_dict())
    assert collect(at_end) == []
    at_end.set_epoch(4)
    uninterrupted.set_epoch(4)
    assert_same_stream(collect(at_end), collect(uninterrupted))
    with pytest.raises(ValueError, match=r"outside 0\.\.7"):
        at_end.load_state_dict({"epoch": 0, "position": 8})


def test_a_finished_pass_can_be_iterated_again() -> None:
    evaluation = make_loader(shuffle=False, augment=False)
    first, second = collect(evaluation), collect(evaluation)
    assert_same_stream(first, second)
    assert torch.cat([labels for _, labels in first]).tolist() == list(range(100))


@pytest.mark.parametrize(("count", "drop_last"), [(101, False), (101, True), (100, False)])
def test_two_ranks_take_disjoint_shards_covering_the_epoch(count: int, drop_last: bool) -> None:
    ranks = [make_loader(count, batch_size=10, world_size=2, rank=rank, drop_last=drop_last) for rank in (0, 1)]
    for loader in ranks:
        loader.set_epoch(2)
    seen = [torch.cat([labels for _, labels in collect(loader)]).tolist() for loader in ranks]
    per_rank = count // 2 if drop_last else (count + 1) // 2  # DistributedSampler: cut, or pad by repeating
    assert [len(s) for s in seen] == [per_rank, per_rank]
    assert [len(loader) for loader in ranks] == [-(-per_rank // 10)] * 2
    union = set(seen[0]) | set(seen[1])
    if drop_last:
        assert not set(seen[0]) & set(seen[1]) and len(union) == count - 1
    else:
        assert union == set(range(count))  # padding repeats at most one sample (count odd)
        assert len(set(seen[0]) & set(seen[1])) == count % 2


def test_drop_last_drops_the_incomplete_batch() -> None:
    loader = make_loader(100, batch_size=16, drop_last=True)
    assert len(loader) == 6 and [len(labels) for _, labels in collect(loader)] == [16] * 6


def test_ranks_see_the_single_process_epoch_interleaved() -> None:
    """Order and augmentation belong to the epoch, not to the rank: ranks split what one process would see."""
    single = make_loader(96, batch_size=96)
    single.set_epoch(1)
    (whole_inputs, whole_labels), = collect(single)
    for rank in (0, 1):
        shard = make_loader(96, batch_size=48, world_size=2, rank=rank)
        shard.set_epoch(1)
        (inputs, labels), = collect(shard)
        assert torch.equal(labels, whole_labels[rank::2]) and torch.equal(inputs, whole_inputs[rank::2])


def test_mean_subtraction_centres_the_training_set() -> None:
    images = random_images(300)
    images[:, 0] //= 2  # a non-uniform mean image
    mean = per_pixel_mean(images)
    std = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    loader = TensorBatchLoader(images, torch.arange(300), batch_size=64, shuffle=True, augment=False, mean=mean,
                               std=std, seed=1)
    inputs = torch.cat([batch for batch, _ in collect(loader)])
    assert torch.allclose(inputs.mean(0), torch.zeros(3, 32, 32), atol=1e-5)
    labels = torch.cat([labels for _, labels in collect(loader)])
    assert torch.allclose(inputs * std + mean, images[labels].float() / 255, atol=1e-6)


def test_padding_is_zero_after_normalisation_and_output_layout() -> None:
    images = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    mean = per_pixel_mean(images)
    loader = TensorBatchLoader(images, torch.zeros(64, dtype=torch.int64), batch_size=64, augment=True, mean=mean,
                               channels_last=True, dtype=torch.bfloat16)
    (inputs, _), = collect(loader)
    assert inputs.dtype == torch.bfloat16 and inputs.is_contiguous(memory_format=torch.channels_last)
    assert (inputs == 0).all()  # content equals the mean, and so does the padded border
