"""Residual blocks (Sec. 3.2-3.3, Fig. 5) and the shortcut options A/B/C/none (Sec. 4.1) in one place.

Attribute names follow torchvision (conv1/bn1/..., `downsample` for the projection) so that
state_dicts of option-B models are interchangeable with the ecosystem's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .specs import Shortcut


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples by `stride` and zero-pads the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last pair pads dim 1 (channels) after padding W and H by zero.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def make_shortcut(option: Shortcut, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut module of one block; None means identity (or no shortcut at all for 'none')."""
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "none":
        return None
    if option == "C" or (option == "B" and shape_changes):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    if option == "A" and shape_changes:
        if out_channels < in_channels:
            raise ValueError("option A cannot shrink channels; use shortcut 'B' or 'C'")
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if option in ("A", "B"):
        return None
    raise ValueError(f"unknown shortcut option {option!r}; valid options: A, B, C, none")


class ResidualBlock(nn.Module):
    """Shared forward: y = relu(F(x) + shortcut(x)), or relu(F(x)) for a plain block."""

    expansion = 1

    def __init__(self, shortcut: Shortcut, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.residual = shortcut != "none"
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        raise NotImplementedError

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual_function(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (Fig. 5 left); the first carries the stride."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: Shortcut = "B") -> None:
        super().__init__(shortcut, in_channels, planes, stride)
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand x4 (Fig. 5 right). Stride on the first 1x1 (paper) or the 3x3 (v1.5)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: Shortcut = "B",
                 stride_in_1x1: bool = True) -> None:
        out_channels = planes * self.expansion
        super().__init__(shortcut, in_channels, out_channels, stride)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
