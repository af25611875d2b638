"""The network (Sec. 3.3, Table 1, Sec. 4.2): a stem, one stage builder, global pooling and an FC.

ImageNet stem: 7x7/2 conv + BN + ReLU + 3x3/2 max pool. CIFAR stem: 3x3 conv, 16 filters.
Stage i > 0 starts with a stride-2 block (conv3_1, conv4_1, conv5_1 in Table 1).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BLOCKS, ResidualBlock
from .specs import ResNetSpec


class ResNet(nn.Module):
    """`meta` carries what the weights were trained with (classes, preprocessing, measured error) once weights are
    loaded from a file or the package; `resnets.preprocess(model, images)` reads it."""

    def __init__(self, spec: ResNetSpec, zero_init_residual: bool = False, init_mode: str = "fan_out",
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.meta: dict[str, Any] = {}
        # Training keeps only ~sqrt(n) block inputs per stage and recomputes the rest in the backward pass:
        # ResNet-1001 on a CIFAR batch fits in a fraction of the memory for about one more forward pass of compute.
        self.activation_checkpointing = activation_checkpointing
        block = BLOCKS[spec.block]
        make_block = partial(block, preact=spec.preact, stride_in_1x1=spec.stride_in_1x1)
        stem_width = spec.widths[0]
        if spec.family == "imagenet":
            self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        # Pre-activation: the first block's BN-ReLU normalises the stem's output, and one BN-ReLU ends the trunk.
        self.bn1 = None if spec.preact else nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)

        in_channels = stem_width
        self.stage_names: list[str] = []
        self.feature_info: list[dict[str, int | str]] = []
        reduction = 4 if spec.family == "imagenet" else 1
        for index, (blocks, width) in enumerate(zip(spec.stages, spec.widths, strict=True)):
            stride = 1 if index == 0 else 2
            reduction *= stride
            layers = []
            for b in range(blocks):
                layers.append(make_block(in_channels, width, stride if b == 0 else 1, spec.shortcut))
                in_channels = width * block.expansion
            name = f"layer{index + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
            # Paper naming: conv2_x is the first stage (conv1 is the stem).
            self.feature_info.append({"name": f"conv{index + 2}", "module": name,
                                      "channels": in_channels, "stride": reduction})
        self.num_features = in_channels
        self.final_bn = nn.BatchNorm2d(in_channels) if spec.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, spec.num_classes)
        self.reset_parameters(zero_init_residual, init_mode)

    def reset_parameters(self, zero_init_residual: bool = False, init_mode: str = "fan_out") -> None:
        """He et al. (2015) init: N(0, 2/n) for convolutions; BN gamma 1, beta 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init_mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.uniform_(m.bias, -bound, bound)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017); meaningless without shortcuts.
            for m in self.modules():
                if isinstance(m, ResidualBlock) and m.residual:
                    nn.init.zeros_(m.unit(m.depth)[0].weight if m.preact else m.last_bn.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return stem_forward(self, x)

    def head_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation nets end their trunk with BN-ReLU; post-activation blocks already end in a ReLU."""
        return x if self.final_bn is None else self.relu(self.final_bn(x))

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Backbone outputs: conv2..conv5 (ImageNet, strides 4/8/16/32) or conv2..conv4 (CIFAR), and `pool`."""
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for info in self.feature_info:
            x = getattr(self, str(info["module"]))(x)
            features[str(info["name"])] = x
        features["pool"] = torch.flatten(self.avgpool(self.head_activation(x)), 1)
        return features

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            stage = getattr(self, name)
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpointed(stage, x)
            else:
                x = stage(x)
        return self.head_activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_trunk(x)), 1))

    def forward_fcn(self, x: torch.Tensor) -> torch.Tensor:
        """Fully-convolutional form (Sec. 3.4): the FC as a 1x1 conv over the last map -> (N, classes, h, w)."""
        trunk = self.forward_trunk(x)
        weight = self.fc.weight[:, :, None, None].to(trunk.dtype)
        return nn.functional.conv2d(trunk, weight, self.fc.bias.to(trunk.dtype))


def stem_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv1, BN-ReLU (post-activation nets only), max pool: for any module holding the stem under torchvision's
    names (the ResNet itself, and detection backbones that reuse its layers)."""
    x = net.conv1(x)
    return net.maxpool(x if net.bn1 is None else net.relu(net.bn1(x)))


def checkpointed(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The stage in ~sqrt(n) segments of blocks; only each segment's input is kept, the rest is recomputed in the
    backward pass. In the recomputation BN still normalises with the batch statistics but leaves its running
    statistics alone, so they are updated once per step, as without checkpointing."""
    blocks = list(stage)
    size = max(1, round(math.sqrt(len(blocks))))
    for start in range(0, len(blocks), size):
        segment = nn.Sequential(*blocks[start:start + size])
        x = checkpoint(segment, x, use_reentrant=False, context_fn=partial(recompute_contexts, segment))
    return x


def recompute_contexts(segment: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """(forward, recomputation) contexts for torch.utils.checkpoint."""
    return contextlib.nullcontext(), frozen_running_statistics(segment)


@contextlib.contextmanager
def frozen_running_statistics(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def model_config(model: ResNet) -> dict[str, Any]:
    """A plain dict that rebuilds the architecture (stored in checkpoints and weight files)."""
    return model.spec.to_config()


def model_from_config(config: dict[str, Any]) -> ResNet:
    return ResNet(ResNetSpec.from_config(config))
