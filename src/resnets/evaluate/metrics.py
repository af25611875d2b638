"""Top-k error over an iterable of (inputs, labels) batches: the single-view test of Sec. 4.2."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ..runtime import autocast


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the k highest scores, for each k (k capped at #classes), as a
    tensor on the logits' device: summing it over batches needs no host synchronisation."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    return topk_hits(logits, labels, ks).tolist()


@torch.inference_mode()
def evaluate_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     device: torch.device, precision: str = "fp32",
                     reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     keep_predictions: bool = False) -> dict[str, Any]:
    """Loss and top-1/top-5 error (%) of `model` in eval mode; restores the model's train/eval mode.

    `reduce` sums the totals (loss, top-1 and top-5 hits, images) over processes when each holds a shard.
    `keep_predictions` adds "predictions": each image's top-1 class, in batch order (read once, at the end).
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    predictions = []
    try:
        for inputs, labels in batches:
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(inputs)
            logits = logits.float()
            if keep_predictions:
                predictions.append(logits.argmax(1))
            totals[0] += F.cross_entropy(logits, labels, reduction="sum").double()
            totals[1:3] += topk_hits(logits, labels)
            totals[3] += labels.numel()
    finally:
        model.train(was_training)
    if reduce is not None:
        totals = reduce(totals)
    loss_sum, correct1, correct5, images = totals.tolist()
    if images == 0:
        raise ValueError("evaluation saw no images")
    result: dict[str, Any] = {"loss": loss_sum / images, "top1_error": 100.0 * (1 - correct1 / images),
                              "top5_error": 100.0 * (1 - correct5 / images), "images": int(images)}
    if keep_predictions:
        result["predictions"] = torch.cat(predictions).tolist()
    return result
