"""Every recipe field reaches the training it describes (issue 39, item 1): each test drives the engine (a `Run` of a
`ClassificationTask`, or `train(plan)`) on a tiny ResNet-8 and a 128-image CIFAR stand-in, and compares what it did
with the field's effect computed here by hand, so that a run which silently ignores the field fails."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from resnets.data.cifar import load_cifar
from resnets.models import create_model
from resnets.models.weights import extract_state_dict, read_weight_file
from resnets.runtime import Runtime
from resnets.train.classify import ClassificationTask, train
from resnets.train.loop import Run
from resnets.train.plan import resolve_run

from .conftest import write_synthetic_cifar

TRAIN_IMAGES, TEST_IMAGES, BATCH = 128, 64, 16


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    return write_synthetic_cifar(tmp_path_factory.mktemp("tiny-cifar"), train=TRAIN_IMAGES, test=TEST_IMAGES, seed=1)


def start_run(data: Path, out: Path, **recipe: Any) -> Run:
    """A Run of ResNet-8 on `data` with the paper recipe changed by `recipe`, set up as `train` would, not stepped."""
    plan = resolve_run("paper", overrides={"batch_size": BATCH, "iterations": 40, **recipe}, model="resnet8",
                       data=str(data), out=str(out), device="cpu", progress=False, channels_last=False, seed=3)
    return Run(ClassificationTask(plan), Runtime(torch.device("cpu")))


def normalised(images: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """Sec. 4.2's input: pixels in [0, 1] less the per-pixel mean of the training images."""
    return images.double() / 255 - (train_images.double() / 255).mean(0)


def hand_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> float:
    """(1 - e) * -log p_y + e * mean_k -log p_k, averaged over the batch."""
    log_p = logits.double().log_softmax(1)
    per_image = -(1 - smoothing) * log_p.gather(1, labels[:, None])[:, 0] - smoothing * log_p.mean(1)
    return per_image.mean().item()


def test_label_smoothing_is_the_loss_the_engine_minimises(tiny_cifar: Path, tmp_path: Path) -> None:
    run = start_run(tiny_cifar, tmp_path / "run", label_smoothing=0.3)
    with torch.no_grad():
        run.model.fc.weight.mul_(30)  # confident logits: smoothing then changes the loss by far more than rounding
    inputs, labels = batch = next(run.batches())
    with torch.no_grad():
        logits = copy.deepcopy(run.model)(inputs)  # train mode, as the step's forward pass
    run.step(batch)
    logged = run.log()["train_loss"]
    smoothed, plain = (hand_smoothed_cross_entropy(logits, labels, e) for e in (0.3, 0.0))
    assert abs(smoothed - plain) > 0.05, (smoothed, plain)
    assert logged == pytest.approx(smoothed, rel=1e-5), (logged, smoothed, plain)


@pytest.mark.parametrize("on_bn", [False, True])
def test_weight_decay_and_the_bn_and_bias_exemption(tiny_cifar: Path, tmp_path: Path, on_bn: bool) -> None:
    """A step with a zero gradient leaves only the decay: w -> w (1 - lr wd) for decayed weights, w for exempt ones."""
    lr, wd = 0.1, 0.05
    run = start_run(tiny_cifar, tmp_path / "run", lr=lr, momentum=0.0, weight_decay=wd, weight_decay_on_bn=on_bn)
    real_loss = run.task.loss
    run.task.loss = lambda model, batch: (lambda loss, stats: (loss * 0, stats))(*real_loss(model, batch))
    with torch.no_grad():
        for p in run.model.parameters():  # BN starts at weight 1, bias 0: make the decay of every tensor visible
            if p.ndim == 1:
                p.add_(0.5)
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    run.step(next(run.batches()))
    after = dict(run.model.named_parameters())
    exempt = [n for n in before if n.endswith(".bias") or ".bn" in n or n.startswith("bn")]
    assert {"bn1.weight", "bn1.bias", "fc.bias", "layer1.0.bn2.weight"} <= set(exempt)
    for name, old in before.items():
        decayed = old * (1 - lr * wd)
        expected = old if (name in exempt and not on_bn) else decayed
        assert torch.allclose(after[name].detach(), expected, rtol=1e-6, atol=1e-9), name
        assert not torch.equal(old, decayed), name  # the two outcomes differ for every tensor


def test_nesterov_momentum_update_over_two_steps(tiny_cifar: Path, tmp_path: Path) -> None:
    """SGD with nesterov (Sutskever et al.): d = g + wd w; b = m b + d (b = d at the first step); w -= lr (d + m b)."""
    lr, m, wd = 0.05, 0.9, 5e-3
    run = start_run(tiny_cifar, tmp_path / "run", lr=lr, momentum=m, nesterov=True, weight_decay=wd,
                    weight_decay_on_bn=False)
    params = dict(run.model.named_parameters())
    exempt = {n for n, p in params.items() if p.ndim <= 1}
    buffers: dict[str, torch.Tensor] = {}
    batches = run.batches()
    for _ in range(2):
        before = {n: p.detach().clone() for n, p in params.items()}
        run.step(next(batches))
        for name, p in params.items():
            d = p.grad + (0 if name in exempt else wd) * before[name]
            buffers[name] = d.clone() if name not in buffers else m * buffers[name] + d
            expected = before[name] - lr * (d + m * buffers[name])
            assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7), name
    # the same gradients without nesterov would have moved the weights elsewhere
    plain = before["conv1.weight"] - lr * buffers["conv1.weight"]
    assert (plain - params["conv1.weight"].detach()).abs().max() > 1e-4


def hand_ema(history: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """e_1 = w_1, e_t = decay e_(t-1) + (1 - decay) w_t, for every float tensor (weights and BN statistics)."""
    ema = {k: v.double() for k, v in history[0].items()}
    for weights in history[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * weights[k].double() for k in ema}
    return ema


def test_ema_is_the_model_evaluated_and_saved(tiny_cifar: Path, tmp_path: Path) -> None:
    decay, steps = 0.6, 6
    run = start_run(tiny_cifar, tmp_path / "run", ema_decay=decay, lr=0.2)
    history = []
    batches = run.batches()
    for _ in range(steps):
        run.step(next(batches))
        history.append({k: v.detach().clone() for k, v in run.model.state_dict().items() if v.is_floating_point()})
    expected = hand_ema(history, decay)
    record, _ = run.task.evaluate(run)
    run.finish()
    saved = extract_state_dict(read_weight_file(tmp_path / "run" / "model.pt"))
    for name, value in expected.items():
        assert torch.allclose(saved[name].double(), value, rtol=1e-5, atol=1e-6), name
    assert (saved["conv1.weight"] - history[-1]["conv1.weight"]).abs().max() > 1e-4  # the EMA is not the last step

    # evaluation reads the EMA too: its test loss is the hand-made EMA net's on the normalised test images
    train_set, test_set = load_cifar(tiny_cifar, "cifar10", "train"), load_cifar(tiny_cifar, "cifar10", "test")
    net = create_model("resnet8", num_classes=10).double().eval()
    net.load_state_dict({**net.state_dict(), **expected})
    with torch.no_grad():
        logits = net(normalised(test_set.images, train_set.images))
    loss = F.cross_entropy(logits, test_set.labels).item()
    error = 100 * (logits.argmax(1) != test_set.labels).double().mean().item()
    assert record["test_loss"] == pytest.approx(loss, rel=1e-4), (record, loss)
    assert record["test_error"] == pytest.approx(error, abs=1e-6)
    net.load_state_dict({**net.state_dict(), **{k: v.double() for k, v in history[-1].items()}})
    with torch.no_grad():
        raw = F.cross_entropy(net(normalised(test_set.images, train_set.images)), test_set.labels).item()
    assert abs(raw - loss) > 1e-3, (raw, loss)  # the raw weights would have logged another loss


def crop_flip_views(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Every pad-crop (zero border, offsets 0..2 pad) of every image, plain and mirrored: N x 2 x R x R x C x H x W."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad))
    views = padded.unfold(2, height, 1).unfold(3, width, 1)  # N x C x R x R x H x W
    views = views.permute(0, 2, 3, 1, 4, 5)
    return torch.stack((views, views.flip(-1)), 1)


@pytest.mark.parametrize("augment", [False, True])
def test_cifar_augmentation_switch(tiny_cifar: Path, tmp_path: Path, augment: bool) -> None:
    run = start_run(tiny_cifar, tmp_path / "run", augment=augment)
    train_set = load_cifar(tiny_cifar, "cifar10", "train")
    plain = normalised(train_set.images, train_set.images)
    epoch = list(run.task.data.train)
    assert len(epoch) == TRAIN_IMAGES // BATCH
    inputs = torch.cat([x for x, _ in epoch]).double()
    labels = torch.cat([y for _, y in epoch])
    distance = torch.cdist(inputs.flatten(1), plain.flatten(1), p=math.inf)  # max |difference|: yielded x training
    if not augment:
        source = distance.argmin(1)
        assert distance.min(1).values.max() < 1e-5  # each yielded image is a normalised training image, untouched
        assert sorted(source.tolist()) == list(range(TRAIN_IMAGES))  # each once: the epoch is a permutation
        assert torch.equal(labels, train_set.labels[source])
        return
    untouched = (distance.min(1).values < 1e-5).sum().item()
    assert untouched <= len(inputs) // 4, f"{untouched} of {len(inputs)} images were not augmented"
    for image, label in zip(inputs[:BATCH], labels[:BATCH], strict=True):  # a pad-crop-flip of an image of its class
        candidates = crop_flip_views(plain[train_set.labels == label].float(), pad=4)
        assert (candidates - image.float()).flatten(-3).abs().amax(-1).min() < 1e-5


def test_val_split_holds_out_images_that_evaluation_reads(tiny_cifar: Path, tmp_path: Path) -> None:
    held_out = 32
    run = start_run(tiny_cifar, tmp_path / "run", val_split=held_out)
    data, everything = run.task.data, load_cifar(tiny_cifar, "cifar10", "train").images
    assert data.train_size == TRAIN_IMAGES - held_out
    train_images, val_images = data.train.images.cpu(), data.evals["val"].images.cpu()
    assert len(val_images) == held_out and len(train_images) == TRAIN_IMAGES - held_out

    def rows(images: torch.Tensor) -> set[bytes]:
        return {image.numpy().tobytes() for image in images}

    assert len(rows(everything)) == TRAIN_IMAGES  # all distinct, so the sets below say which image went where
    assert rows(train_images).isdisjoint(rows(val_images))
    assert rows(train_images) | rows(val_images) == rows(everything)

    # evaluation during training reads the held-out images, normalised with the mean of the images trained on
    record, error = run.task.evaluate(run)
    labels = data.evals["val"].labels.cpu()
    net = copy.deepcopy(run.model).double().eval()
    with torch.no_grad():
        logits = net(normalised(val_images, train_images))
    assert record["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
    assert error == pytest.approx(100 * (logits.argmax(1) != labels).double().mean().item(), abs=1e-6)


def step_lr(t: int) -> float:  # lr 0.1, x 0.2 at iterations 5 and 13
    return 0.1 * 0.2 ** ((t >= 5) + (t >= 13))


def cosine_lr(t: int, total: int = 24, warmup: int = 4) -> float:  # linear from lr/warmup to lr, then half a cosine
    if t < warmup:
        return 0.1 * (t + 1) / warmup
    return 0.05 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def onecycle_lr(t: int, total: int = 24, peak: int = 6) -> float:  # peak_fraction 0.25: lr/10 up to lr at 6, then to 0
    return 0.1 * (0.1 + 0.9 * t / peak) if t < peak else 0.1 * (total - t) / (total - peak)


@pytest.mark.parametrize(("fields", "formula"), [
    ({"schedule": "step", "milestones": "5,13", "gamma": 0.2}, step_lr),
    ({"schedule": "cosine", "warmup_iterations": 4}, cosine_lr),
    ({"schedule": "onecycle", "peak_fraction": 0.25}, onecycle_lr),
], ids=["step", "cosine", "onecycle"])
def test_logged_lr_follows_the_schedule_formula(tiny_cifar: Path, tmp_path: Path, fields: dict, formula: Any) -> None:
    """Each metrics line's lr is the lr of the step just taken (iteration - 1), as written above."""
    out = tmp_path / "run"
    plan = resolve_run("paper", overrides={"batch_size": BATCH, "lr": 0.1, **fields}, iterations=24, model="resnet8",
                       data=str(tiny_cifar), out=str(out), device="cpu", progress=False, channels_last=False,
                       log_every=1, eval_subset=16)
    train(plan)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["iteration"], r["lr"]) for r in records if "lr" in r]
    assert [t for t, _ in logged] == list(range(1, 25))
    assert [lr for _, lr in logged] == pytest.approx([formula(t - 1) for t, _ in logged], rel=1e-12, abs=1e-15)


def test_the_optimizer_steps_with_the_schedules_lr(tiny_cifar: Path, tmp_path: Path) -> None:
    """Not only logged: with a zero gradient and no momentum, step t shrinks a conv weight by exactly lr(t) x wd."""
    wd = 0.05
    run = start_run(tiny_cifar, tmp_path / "run", schedule="onecycle", peak_fraction=0.25, lr=0.1, momentum=0.0,
                    weight_decay=wd)  # 40 iterations: the peak at 10
    real_loss = run.task.loss
    run.task.loss = lambda model, batch: (lambda loss, stats: (loss * 0, stats))(*real_loss(model, batch))
    weight = run.model.conv1.weight
    batches = run.batches()
    for t in range(12):
        before = weight.detach().clone()
        run.step(next(batches))
        assert torch.allclose(weight.detach(), before * (1 - onecycle_lr(t, total=40, peak=10) * wd), rtol=1e-6), t
