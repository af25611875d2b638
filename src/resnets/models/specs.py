"""The paper's architecture tables in one place: Table 1 (ImageNet) and Sec. 4.2 (CIFAR).

A `ResNetSpec` is everything needed to build a network; `resnet.ResNet` builds it and nothing
else decides depth, widths or block type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

BlockType = Literal["basic", "bottleneck"]
Shortcut = Literal["A", "B", "C", "none"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C", "none")

# Table 1: depth -> (block, blocks per stage conv2_x..conv5_x).
IMAGENET_STAGES: dict[int, tuple[BlockType, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
# Table 1, last row: the paper's published FLOPs (multiply-adds, x1e9), quoted for comparison only.
PAPER_IMAGENET_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}

# The follow-up (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016): ResNet-200 for ImageNet,
# pre-activation only; on CIFAR, bottleneck nets of depth 9n+2 (164, 1001) beside the basic 6n+2 ones.
PREACT_IMAGENET_STAGES: dict[int, tuple[BlockType, tuple[int, ...]]] = {**IMAGENET_STAGES,
                                                                         200: ("bottleneck", (3, 24, 36, 3))}
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)  # 6n+2 as well (164), but the follow-up's nets are bottleneck nets
# Its CIFAR-10 test errors (%), original (post-activation) and pre-activation, for reports.
FOLLOWUP_CIFAR10_ERROR = {("resnet", 164): 5.93, ("preact", 164): 5.46, ("resnet", 1001): 7.61,
                          ("preact", 1001): 4.92}
FOLLOWUP_CIFAR100_ERROR = {("resnet", 164): 25.16, ("preact", 164): 24.33, ("resnet", 1001): 27.82,
                           ("preact", 1001): 22.71}


def followup_error(dataset: str, preact: bool, depth: int) -> float | None:
    """The follow-up's published test error (%) for a CIFAR net of this kind and depth, None where it has none."""
    table = {"cifar10": FOLLOWUP_CIFAR10_ERROR, "cifar100": FOLLOWUP_CIFAR100_ERROR}.get(dataset, {})
    return table.get(("preact" if preact else "resnet", depth))

# Sec. 4.2: 3 stages of n basic blocks, 16/32/64 filters on 32/16/8 maps, depth 6n+2 (bottlenecks: 9n+2, x4 wide).
CIFAR_WIDTHS = (16, 32, 64)
# Table 2: top-1 error (%, 10-crop testing) on the ImageNet validation set; residual nets with option A shortcuts.
PAPER_IMAGENET_TOP1_10CROP = {"plain18": 27.94, "plain34": 28.54, "resnet18": 27.88, "resnet34": 25.03}
# Table 3: the same for ResNet-34 by shortcut option (A: zero-padding, B: projections where dimensions change, C: all).
PAPER_RESNET34_TOP1_10CROP_BY_SHORTCUT = {"A": 25.03, "B": 24.52, "C": 24.19}
# Table 6: test error (%) of the paper, for reports; 110 is "best of 5 (mean 6.61)".
PAPER_CIFAR10_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
PAPER_CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


@dataclass(frozen=True)
class ResNetSpec:
    """A complete description of one network of the paper (or a variant of it)."""

    family: Literal["imagenet", "cifar"]
    depth: int
    block: BlockType
    stages: tuple[int, ...]
    widths: tuple[int, ...]
    shortcut: Shortcut
    num_classes: int
    stride_in_1x1: bool = True  # bottleneck stride on the first 1x1 (paper, "v1") or the 3x3 ("v1.5")
    preact: bool = False  # BN -> ReLU -> conv blocks and a clean identity path (He et al., ECCV 2016)

    @property
    def input_size(self) -> int:
        return 224 if self.family == "imagenet" else 32

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def residual(self) -> bool:
        return self.shortcut != "none"

    @property
    def name(self) -> str:
        base = "resnet" if self.residual else "plain"
        return f"{'preact_' if self.preact else ''}{base}{self.depth}"

    def to_config(self) -> dict[str, Any]:
        """A plain JSON-able dict that rebuilds this spec (stored in checkpoints and weight files)."""
        config = asdict(self)
        config["stages"], config["widths"] = list(self.stages), list(self.widths)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResNetSpec:
        fields = dict(config)
        try:
            fields["stages"], fields["widths"] = tuple(fields["stages"]), tuple(fields["widths"])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model config is not one this version of resnets understands: {exc}") from None


def imagenet_spec(depth: int, shortcut: Shortcut = "B", num_classes: int = 1000,
                  stride_in_1x1: bool = True, preact: bool = False) -> ResNetSpec:
    stages_of = PREACT_IMAGENET_STAGES if preact else IMAGENET_STAGES
    if depth not in stages_of:
        raise ValueError(f"ImageNet ResNet depth {depth} is not in Table 1; valid depths: "
                         f"{', '.join(map(str, stages_of))}")
    block, stages = stages_of[depth]
    return ResNetSpec("imagenet", depth, block, stages, IMAGENET_WIDTHS, shortcut, num_classes,
                      stride_in_1x1, preact)


def cifar_block(depth: int) -> BlockType:
    """Basic blocks for depth 6n+2 (Sec. 4.2), bottlenecks for the follow-up's 164 and 1001 and other 9n+2 depths."""
    if depth in CIFAR_BOTTLENECK_DEPTHS or ((depth - 2) % 6 and not (depth - 2) % 9):
        return "bottleneck"
    return "basic"


def cifar_spec(depth: int, shortcut: Shortcut | None = None, num_classes: int = 10,
               preact: bool = False) -> ResNetSpec:
    """Default shortcut: A (zero-padding, Sec. 4.2) for basic blocks, B (projection, as in the follow-up) for
    bottlenecks, whose stage widths grow x4 at once."""
    block = cifar_block(depth)
    per_block = 9 if block == "bottleneck" else 6
    if depth < per_block + 2 or (depth - 2) % per_block:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (basic: 8, 14, 20, 32, 44, 56, 110, 1202, ...) or 9n+2 "
                         f"(bottleneck: 164, 1001, ...) with n >= 1, got {depth}")
    n = (depth - 2) // per_block
    default = "B" if block == "bottleneck" else "A"
    return ResNetSpec("cifar", depth, block, (n, n, n), CIFAR_WIDTHS, shortcut or default, num_classes,
                      preact=preact)
