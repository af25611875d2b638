"""The network (Sec. 3.3, Table 1, Sec. 4.2): a stem, one stage builder, global pooling and an FC.

ImageNet stem: 7x7/2 conv + BN + ReLU + 3x3/2 max pool. CIFAR stem: 3x3 conv, 16 filters.
Stage i > 0 starts with a stride-2 block (conv3_1, conv4_1, conv5_1 in Table 1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import nn

from .blocks import BLOCKS, ResidualBlock
from .specs import ResNetSpec


class ResNet(nn.Module):
    """`meta` carries what the weights were trained with (classes, preprocessing, measured error) once weights are
    loaded from a file or the package; `resnets.preprocess(model, images)` reads it."""

    def __init__(self, spec: ResNetSpec, zero_init_residual: bool = False, init_mode: str = "fan_out") -> None:
        super().__init__()
        self.spec = spec
        self.meta: dict[str, Any] = {}
        block = BLOCKS[spec.block]
        make_block = partial(block, stride_in_1x1=spec.stride_in_1x1) if spec.block == "bottleneck" else block
        stem_width = spec.widths[0]
        if spec.family == "imagenet":
            self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.Identity()

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
                    nn.init.zeros_(m.last_bn.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Backbone outputs: conv2..conv5 (ImageNet, strides 4/8/16/32) or conv2..conv4 (CIFAR), and `pool`."""
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for info in self.feature_info:
            x = getattr(self, str(info["module"]))(x)
            features[str(info["name"])] = x
        features["pool"] = torch.flatten(self.avgpool(x), 1)
        return features

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_trunk(x)), 1))

    def forward_fcn(self, x: torch.Tensor) -> torch.Tensor:
        """Fully-convolutional form (Sec. 3.4): the FC as a 1x1 conv over the last map -> (N, classes, h, w)."""
        trunk = self.forward_trunk(x)
        weight = self.fc.weight[:, :, None, None].to(trunk.dtype)
        return nn.functional.conv2d(trunk, weight, self.fc.bias.to(trunk.dtype))


def model_config(model: ResNet) -> dict[str, Any]:
    """A plain dict that rebuilds the architecture (stored in checkpoints and weight files)."""
    return model.spec.to_config()


def model_from_config(config: dict[str, Any]) -> ResNet:
    return ResNet(ResNetSpec.from_config(config))
