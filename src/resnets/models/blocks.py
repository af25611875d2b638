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


def make_shortcut(option: Shortcut, in_channels: int, out_channels: int, stride: int,
                  preact: bool = False) -> nn.Module | None:
    """The shortcut module of one block; None means identity (or no shortcut at all for 'none'). A pre-activation
    projection is a bare 1x1 convolution: its input is already normalised (He et al., ECCV 2016)."""
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "none":
        return None
    if option == "C" or (option == "B" and shape_changes):
        projection = conv1x1(in_channels, out_channels, stride)
        return nn.Sequential(projection) if preact else nn.Sequential(projection, nn.BatchNorm2d(out_channels))
    if option == "A" and shape_changes:
        if out_channels < in_channels:
            raise ValueError("option A cannot shrink channels; use shortcut 'B' or 'C'")
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if option in ("A", "B"):
        return None
    raise ValueError(f"unknown shortcut option {option!r}; valid options: A, B, C, none")


class ResidualBlock(nn.Module):
    """A stack of convolutions F and a shortcut, in one of two orders (one code path each):

    post-activation (the paper, Fig. 2): each conv -> BN, ReLU between them; y = relu(F(x) + shortcut(x)).
    pre-activation (He et al., ECCV 2016): BN -> ReLU -> conv for each conv; y = F(x) + shortcut(x), nothing after
    the addition, and a projection shortcut reads the pre-activated input.
    A plain block (shortcut "none") is F alone, in either order. Names follow torchvision: conv<i>, bn<i>, downsample.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: Shortcut = "B", *,
                 preact: bool = False, stride_in_1x1: bool = True) -> None:
        super().__init__()
        convs = self.make_convs(in_channels, planes, stride, stride_in_1x1)
        self.depth, self.preact, self.residual = len(convs), preact, shortcut != "none"
        # Registered in this order (shortcut first) so that seeded initialisation is what it always was.
        self.downsample = make_shortcut(shortcut, in_channels, convs[-1].out_channels, stride, preact)
        self.relu = nn.ReLU(inplace=True)
        for index, conv in enumerate(convs, start=1):
            setattr(self, f"conv{index}", conv)
            setattr(self, f"bn{index}", nn.BatchNorm2d(conv.in_channels if preact else conv.out_channels))

    def make_convs(self, in_channels: int, planes: int, stride: int, stride_in_1x1: bool) -> list[nn.Conv2d]:
        raise NotImplementedError

    def unit(self, index: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        return getattr(self, f"conv{index}"), getattr(self, f"bn{index}")

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN that ends F in a post-activation block (zero-initialised by zero_init_residual)."""
        return self.unit(self.depth)[1]

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) of a post-activation block: (conv -> BN) per conv, ReLU between."""
        for index in range(1, self.depth + 1):
            conv, bn = self.unit(index)
            x = bn(conv(x))
            if index < self.depth:
                x = self.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            return self.forward_preact(x)
        out = self.residual_function(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.unit(1)
        activated = torch.relu(bn(x))  # not in place: x itself is the identity shortcut
        out = conv(activated)
        for index in range(2, self.depth + 1):
            conv, bn = self.unit(index)
            out = conv(self.relu(bn(out)))
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(activated))


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (Fig. 5 left); the first carries the stride."""

    expansion = 1

    def make_convs(self, in_channels: int, planes: int, stride: int, stride_in_1x1: bool) -> list[nn.Conv2d]:
        return [conv3x3(in_channels, planes, stride), conv3x3(planes, planes)]


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand x4 (Fig. 5 right). Stride on the first 1x1 (paper) or the 3x3 (v1.5)."""

    expansion = 4

    def make_convs(self, in_channels: int, planes: int, stride: int, stride_in_1x1: bool) -> list[nn.Conv2d]:
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        return [conv1x1(in_channels, planes, stride_1x1), conv3x3(planes, planes, stride_3x3),
                conv1x1(planes, planes * self.expansion)]


BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
