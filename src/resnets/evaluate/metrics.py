"""Top-k error over an iterable of (inputs, labels) batches: the single-view test of Sec. 4.2."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ..train.runtime import autocast


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the k highest scores, for each k (k capped at #classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


@torch.inference_mode()
def evaluate_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Loss and top-1/top-5 error (%) of `model` in eval mode; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    correct1 = correct5 = images = 0
    try:
        for inputs, labels in batches:
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(inputs)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            c1, c5 = topk_correct(logits, labels)
            correct1, correct5, images = correct1 + c1, correct5 + c5, images + labels.numel()
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("evaluation saw no images")
    return {"loss": loss_sum / images, "top1_error": 100.0 * (1 - correct1 / images),
            "top5_error": 100.0 * (1 - correct5 / images), "images": images}
