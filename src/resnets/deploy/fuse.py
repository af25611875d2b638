"""Inference form of a trained network: every BatchNorm folded into the convolution before it.

In eval mode BN is an affine map per channel, y = (x - mean) / sqrt(var + eps) * gamma + beta, so
conv -> BN equals one convolution with weight W * s and bias beta - mean * s (s = gamma / sqrt(var + eps)).
Folding removes one memory-bound pass over every activation; channels_last lets oneDNN run the
convolutions without layout reorders. `compile_for_inference` goes further (operator fusion and
weight pre-packing) through TorchScript freezing or the inductor compiler with freezing.
"""

from __future__ import annotations

import copy
import itertools
import re
import warnings
from typing import Literal

import torch
from torch import nn

Backend = Literal["eager", "jit", "inductor"]
BACKENDS: tuple[str, ...] = ("eager", "jit", "inductor")
_CONV_NAME = re.compile(r"^conv(\d*)$")


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to bn(conv(x)) with `bn` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    dtype = conv.weight.dtype
    # Fold in float64: the product of tiny variances and large weights loses bits in fp32.
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=dtype)
    fused.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(dtype))
    fused.bias.copy_(((bias - bn.running_mean.double()) * scale + beta).to(dtype))
    return fused


def _pair(conv: object, bn: object) -> bool:
    return (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d)
            and conv.out_channels == bn.num_features)


def fold_batchnorms_(model: nn.Module) -> int:
    """Fold in place every conv -> BN pair; returns how many were folded.

    Pairs are found by structure, not by tracing, so any forward works: `conv<k>` with `bn<k>` in the
    same module (stems and blocks, ours and torchvision's) and a Conv2d directly followed by a
    BatchNorm2d inside an nn.Sequential (the projection shortcuts, options B and C).
    """
    if model.training:
        raise ValueError("fold BatchNorm only in eval mode (call model.eval() first): training BN uses batch "
                         "statistics, which folding cannot represent")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
                if _pair(conv, bn):
                    setattr(module, conv_name, fold_conv_bn(conv, bn))
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
            continue
        if getattr(module, "preact", False):  # BN -> ReLU -> conv: a BN before a conv does not fold into it
            continue
        for name, conv in list(module.named_children()):
            match = _CONV_NAME.match(name)
            bn = getattr(module, f"bn{match[1]}", None) if match else None
            if _pair(conv, bn):
                setattr(module, name, fold_conv_bn(conv, bn))
                setattr(module, f"bn{match[1]}", nn.Identity())
                folded += 1
    return folded


def _cast_input(module: nn.Module, args: tuple) -> tuple:
    # bf16 weights need bf16 inputs; casting here lets callers keep feeding fp32 images.
    dtype = module.inference_dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


@torch.no_grad()
def check_folding(model: nn.Module, fused: nn.Module, rtol: float = 1e-3) -> float:
    """Run `model` (in eval mode, restored afterwards) and `fused` on one fixed random image; raise if they differ.

    Folding pairs layers by name and position, which assumes conv -> BN order (post-activation blocks, as in
    this paper and torchvision). A model that uses its layers otherwise (e.g. BN before conv) fails here.
    """
    parameter = next(model.parameters())
    size = max(64, getattr(getattr(model, "spec", None), "input_size", 64) // 4)  # small: seconds matter
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(parameter.device, parameter.dtype)
    modes = {m: m.training for m in model.modules()}
    try:
        expected = model.eval()(x)
    finally:
        for m, training in modes.items():
            m.training = training
    diff = float((fused(x) - expected).abs().max())
    if diff > rtol * max(1.0, float(expected.abs().max())):
        raise ValueError(f"folding BatchNorm changed the outputs (max |diff| {diff:.3g}); this model does not use "
                         "its conv<k>/bn<k> layers in conv -> BN order. Use it unfused (model.eval())")
    return diff


def fuse_for_inference(model: nn.Module, channels_last: bool = True, dtype: torch.dtype | None = None,
                       check: bool = True) -> nn.Module:
    """A copy of `model` for inference: eval mode, BN folded into convs, no gradients, channels_last.

    The copy keeps the model's class (ResNet methods such as forward_features still work). With
    `dtype` (e.g. torch.bfloat16) weights are cast and a pre-hook casts floating inputs to match;
    outputs are then in that dtype. `check` compares fused and unfused outputs on one small random image
    (ValueError if they differ). A BatchNorm that follows no conv stays as it is (still exact in eval mode).
    """
    fused = copy.deepcopy(model).eval()
    fold_batchnorms_(fused)
    fused.requires_grad_(False)
    if check:
        check_folding(model, fused)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    if dtype is not None and dtype != torch.float32:
        fused = fused.to(dtype)
        fused.inference_dtype = dtype
        fused.register_forward_pre_hook(_cast_input)
    return fused


class NoGradModule(nn.Module):
    """Runs a compiled callable under no_grad (inductor freezing and TorchScript freezing assume it)."""

    def __init__(self, fn: nn.Module, source: nn.Module, channels_last: bool, backend: str) -> None:
        super().__init__()
        self.fn = fn
        self.source = source  # the fused eager model: parameters, spec, and a fallback for debugging
        self.channels_last = channels_last
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.fn(x)


def compile_for_inference(model: nn.Module, backend: Backend = "inductor", channels_last: bool = True,
                          dtype: torch.dtype | None = None, example: torch.Tensor | None = None) -> nn.Module:
    """`fuse_for_inference` plus graph-level optimisation for CPU/GPU inference.

    backend: "eager" (folded model only), "jit" (TorchScript trace + freeze + optimize_for_inference:
    oneDNN conv+add+relu fusion; needs `example`, an input of the right size), "inductor"
    (torch.compile with freezing: constant-folded, pre-packed weights and fused epilogues; compiles on
    the first call of each input shape, which takes seconds to a minute and needs a C++ compiler on CPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; valid: {', '.join(BACKENDS)}")
    fused = fuse_for_inference(model, channels_last=channels_last, dtype=dtype)
    if backend == "eager":
        return fused
    if backend == "jit":
        if example is None:
            raise ValueError("backend 'jit' traces the model: pass example=<an input tensor of the right shape>")
        example = example.to(dtype or torch.float32)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated yet still the fastest here
            traced = torch.jit.trace(fused, example, check_trace=False)
            fn = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return NoGradModule(fn, fused, channels_last, backend)
    # options={"freezing": True} scopes inductor's freezing to this compilation instead of the global config.
    fn = torch.compile(fused, options={"freezing": True})
    return NoGradModule(fn, fused, channels_last, backend)
