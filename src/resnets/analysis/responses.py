"""Layer responses (Sec. 4.2, Fig. 7): the standard deviation of each 3x3 layer's output after BN and before the
addition/ReLU, over the test set, for plain and residual nets alike.

The hooked tensor is the output of the BatchNorm that follows each 3x3 convolution: in a basic block, bn1's output
goes into the ReLU and bn2's output (= `block.residual_function(x)`) into the addition with the shortcut; the CIFAR
stem's bn1 goes into the stem ReLU. Statistics are taken inside the hook, before an in-place ReLU can overwrite it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluate.run import cifar_test_batches, load_for_evaluation
from ..io import atomic_write_text
from ..plots import plot_layer_responses
from ..runtime import resolve_device

CSV_COLUMNS = ("model", "layer_index", "layer_name", "std")


@dataclass(frozen=True)
class LayerResponse:
    index: int  # 1-based position in network order
    name: str  # the BatchNorm module whose output is measured, e.g. "layer1.0.bn2"
    conv: str  # the 3x3 convolution it normalises, e.g. "layer1.0.conv2"
    std: float
    mean: float
    elements: int  # how many values (N x C x H x W summed over batches) the statistics cover


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(3x3 conv, its BatchNorm) names in network order, found generically: walking the modules in registration
    order, a 3x3 Conv2d is paired with the next BatchNorm2d of the same parent module and width. 1x1 convolutions
    (bottleneck ends, projection shortcuts) and the ImageNet 7x7 stem are not 3x3 layers and are skipped."""
    pairs: list[tuple[str, str]] = []
    pending: tuple[str, str, int] | None = None  # (conv name, parent name, out channels)
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0]
        if isinstance(module, nn.Conv2d):
            pending = (name, parent, module.out_channels) if module.kernel_size == (3, 3) else None
        elif isinstance(module, nn.BatchNorm2d) and pending is not None:
            if pending[1] == parent and pending[2] == module.num_features:
                pairs.append((pending[0], name))
            pending = None
    return pairs


class _Moments:
    """Running float64 sums of x and x^2 and the count of one layer's outputs."""

    def __init__(self) -> None:
        self.total = 0.0
        self.squares = 0.0
        self.count = 0

    def hook(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        values = output.detach().double()
        self.total += values.sum().item()
        self.squares += values.square().sum().item()
        self.count += values.numel()

    def mean_std(self) -> tuple[float, float]:
        mean = self.total / self.count
        return mean, math.sqrt(max(0.0, self.squares / self.count - mean * mean))


@torch.inference_mode()
def layer_responses(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]],
                    device: torch.device | str = "cpu") -> list[LayerResponse]:
    """Std of every 3x3 layer's BN output over all `batches`, in eval mode (BN uses its running statistics).

    Exact over the whole set: float64 sums of x and x^2 over every element (N, C, H, W) of every batch, divided
    once at the end; not an average of per-batch stds (which would differ when batches differ). Population std
    (divides by the element count). The model's train/eval mode is restored and the hooks removed afterwards.
    """
    pairs = conv_bn_pairs(model)
    if not pairs:
        raise ValueError(f"{type(model).__name__} has no 3x3 convolution followed by a BatchNorm2d")
    modules = dict(model.named_modules())
    moments = [_Moments() for _ in pairs]
    handles = [modules[bn].register_forward_hook(m.hook) for (_conv, bn), m in zip(pairs, moments, strict=True)]
    was_training = model.training
    model.eval()
    try:
        for inputs, *_rest in batches:
            model(inputs.to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if moments[0].count == 0:
        raise ValueError("layer_responses saw no images")
    results = []
    for index, ((conv, bn), m) in enumerate(zip(pairs, moments, strict=True), start=1):
        mean, std = m.mean_std()
        results.append(LayerResponse(index, bn, conv, std, mean, m.count))
    return results


def checkpoint_responses(path: str | Path, data: str | Path | None = None, images: int | None = None,
                         device: str = "auto") -> tuple[nn.Module, list[LayerResponse]]:
    """Responses of a run directory, checkpoint or weight file over the test set (or `images` spread over it)."""
    target = resolve_device(device)
    model, _weights = load_for_evaluation(path)
    batches, _source = cifar_test_batches(model.to(target), data, images, target)
    return model, layer_responses(model, batches, target)


def responses_csv(results: Mapping[str, Sequence[LayerResponse]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for label, layers in results.items():
        for layer in layers:
            writer.writerow((label, layer.index, layer.name, f"{layer.std:.6f}"))
    return buffer.getvalue()


def read_responses_csv(path: str | Path) -> dict[str, list[float]]:
    """model -> stds in layer order, from a responses.csv; one clear error for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `resnets analyze responses`")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    if not rows or set(CSV_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path} is not a responses CSV (columns {', '.join(CSV_COLUMNS)}); "
                         "regenerate it with `resnets analyze responses`")
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(row["model"], []).append((int(row["layer_index"]), float(row["std"])))
    return {label: [std for _i, std in sorted(points)] for label, points in series.items()}


def write_responses(results: Mapping[str, Sequence[LayerResponse]], out: str | Path) -> dict[str, Path]:
    """responses.csv, responses_by_layer.png (Fig. 7 top) and responses_sorted.png (Fig. 7 bottom) in `out`."""
    out = Path(out)
    series = {label: [layer.std for layer in layers] for label, layers in results.items()}
    return {
        "csv": atomic_write_text(out / "responses.csv", responses_csv(results)),
        "by_layer": plot_layer_responses(series, out / "responses_by_layer.png", sort=False),
        "sorted": plot_layer_responses(series, out / "responses_sorted.png", sort=True),
    }


def analyze_responses(checkpoints: Sequence[str | Path], out: str | Path, data: str | Path | None = None,
                      images: int | None = None, device: str = "auto", command: str | None = None) -> dict[str, Path]:
    """Fig. 7 for several checkpoints; each is labelled by its model name (plus its path when two share one).
    responses.json records the checkpoints, the test images and the command, for the report."""
    if not checkpoints:
        raise ValueError("give at least one --checkpoint (run directory or weight file)")
    measured = [checkpoint_responses(path, data, images, device) for path in checkpoints]
    names = [model.spec.name if hasattr(model, "spec") else type(model).__name__ for model, _r in measured]
    labels = [name if names.count(name) == 1 else f"{name} ({path})"
              for name, path in zip(names, checkpoints, strict=True)]
    written = write_responses({label: layers for label, (_m, layers) in zip(labels, measured, strict=True)}, out)
    provenance = {"command": command, "checkpoints": dict(zip(labels, map(str, checkpoints), strict=True)),
                  "test_images": images or "all",
                  "std": "population std over every N x C x H x W value of each layer's BN output"}
    written["json"] = atomic_write_text(Path(out) / "responses.json", json.dumps(provenance, indent=2))
    return written


def model_kind_depth(label: str) -> tuple[str, int] | None:
    """("plain" | "resnet", depth) of a label such as "resnet20" or "plain56 (runs/x)"; None for other labels."""
    match = re.match(r"^(plain|resnet)(\d+)\b", label)
    return (match[1], int(match[2])) if match else None


def response_verdicts(mean_std: dict[str, float]) -> list[str]:
    """Fig. 7's two claims from each net's mean response std: a ResNet responds less than the plain net of its
    depth, and the responses shrink at every added ResNet depth (20 > 56 > 110 in the paper)."""
    nets = {model_kind_depth(label): label for label in mean_std if model_kind_depth(label)}
    claims = []
    for (kind, depth), label in sorted(nets.items()):
        plain = nets.get(("plain", depth))
        if kind == "resnet" and plain:
            claims.append(f"{label} responds less than {plain}: {'yes' if mean_std[label] < mean_std[plain] else 'no'} "
                          f"(mean std {mean_std[label]:.3f} vs {mean_std[plain]:.3f})")
    resnets = [label for (kind, _depth), label in sorted(nets.items()) if kind == "resnet"]
    if len(resnets) >= 2:
        shrinks = all(mean_std[deep] < mean_std[shallow] for shallow, deep in pairwise(resnets))
        chain = " -> ".join(f"{label} {mean_std[label]:.3f}" for label in resnets)
        claims.append(f"deeper ResNet has smaller responses, at every depth: {'yes' if shrinks else 'no'} ({chain})")
    return claims
