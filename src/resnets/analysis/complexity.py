"""Parameters and multiply-adds, in total and per layer.

What is counted, as in the paper's "FLOPs (multiply-adds)" row of Table 1: the multiply-adds of
every convolution and fully-connected layer for one image. BN, ReLU, pooling and the shortcut
additions are not counted (they are < 1% and the paper leaves them out); option A's zero-padded
shortcut has none. Parameters are all trainable tensors, BN included, as torchvision counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LayerCost:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class Complexity:
    params: int
    macs: int
    input_size: tuple[int, int, int]
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def table(self) -> str:
        rows = [f"{'layer':<32} {'type':<7} {'output':<16} {'params':>11} {'MMACs':>10}"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.output_shape))
            rows.append(f"{layer.name:<32} {layer.kind:<7} {shape:<16} {layer.params:>11,} {layer.macs / 1e6:>10.2f}")
        rows.append(f"{'total':<32} {'':<7} {'':<16} {self.params:>11,} {self.macs / 1e6:>10.2f}")
        return "\n".join(rows)


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def complexity(model: nn.Module, input_size: int | tuple[int, int] | None = None) -> Complexity:
    """Count parameters and per-image multiply-adds of conv and FC layers at `input_size` (HxW).

    input_size defaults to the model's native size (224 for ImageNet, 32 for CIFAR networks).
    """
    if input_size is None:
        spec = getattr(model, "spec", None)
        input_size = spec.input_size if spec is not None else 224
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    layers: list[LayerCost] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                layers.append(LayerCost(name, type(mod).__name__.replace("2d", ""), tuple(out.shape[1:]),
                                        params, _layer_macs(mod, out)))
            handles.append(module.register_forward_hook(hook))
    parameter = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total_params = sum(p.numel() for p in model.parameters())
    return Complexity(total_params, sum(layer.macs for layer in layers), (3, height, width), layers)
