"""Model names -> specs. `resnet18..152` / `plain18..152` are Table 1; `resnet<6n+2>` / `plain<6n+2>` are
CIFAR (Sec. 4.2); `cifar_resnet<6n+2>` reaches CIFAR depths that collide with Table 1 (50, 152)."""

from __future__ import annotations

import re

from .resnet import ResNet
from .specs import (
    CIFAR_BOTTLENECK_DEPTHS,
    IMAGENET_STAGES,
    PAPER_CIFAR_DEPTHS,
    PREACT_IMAGENET_STAGES,
    SHORTCUTS,
    ResNetSpec,
    cifar_spec,
    imagenet_spec,
)
from .weights import load_pretrained_into, shipped_weights

_NAME = re.compile(r"^(?P<preact>preact_)?(?P<cifar>cifar_)?(?P<kind>resnet|plain)(?P<depth>\d+)$")


def list_models() -> list[str]:
    """The networks of the paper: Table 1 (ImageNet) and Table 6 / Fig. 6 (CIFAR), residual and plain."""
    imagenet = [f"{kind}{d}" for kind in ("resnet", "plain") for d in IMAGENET_STAGES]
    cifar = [f"resnet{d}" for d in PAPER_CIFAR_DEPTHS] + [f"plain{d}" for d in PAPER_CIFAR_DEPTHS[:-1]]
    # The follow-up (ECCV 2016): original and pre-activation bottleneck CIFAR nets, pre-activation ImageNet nets.
    followup = [f"{prefix}resnet{d}" for d in CIFAR_BOTTLENECK_DEPTHS for prefix in ("", "preact_")]
    followup += [f"preact_resnet{d}" for d in PREACT_IMAGENET_STAGES]
    return imagenet + cifar + [name for name in followup if name not in cifar]


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}; valid names: {', '.join(list_models())}, or any CIFAR depth 6n+2 (basic) or 9n+2 "
        "(bottleneck) as resnet<d>, plain<d>, cifar_resnet<d>, with preact_ in front for pre-activation "
        "(see `resnets models`)"
    )


def model_spec(name: str, *, num_classes: int | None = None, shortcut: str | None = None,
               stride_in_1x1: bool | None = None) -> ResNetSpec:
    """Resolve a model name and options to a spec, with the paper's defaults (B for ImageNet, A for CIFAR)."""
    match = _NAME.match(name.strip().lower()) if isinstance(name, str) else None
    if not match:
        raise _unknown(str(name))
    depth = int(match["depth"])
    plain = match["kind"] == "plain"
    if shortcut is not None and shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut option {shortcut!r}; valid options: {', '.join(SHORTCUTS)}")
    if plain and shortcut not in (None, "none"):
        raise ValueError(f"{name} is a plain network (no shortcuts); use resnet{depth} with shortcut={shortcut!r}")
    if plain:
        shortcut = "none"
    preact = bool(match["preact"])
    if not match["cifar"] and depth in (PREACT_IMAGENET_STAGES if preact else IMAGENET_STAGES):
        spec = imagenet_spec(depth, shortcut or "B", num_classes or 1000,
                             True if stride_in_1x1 is None else stride_in_1x1, preact)
    else:
        try:
            spec = cifar_spec(depth, shortcut, num_classes or 10, preact)
        except ValueError:
            raise _unknown(name) from None
        if stride_in_1x1 is False and spec.block == "basic":
            raise ValueError(f"{name} is a CIFAR network of basic blocks; stride_in_1x1 applies to bottlenecks")
        if stride_in_1x1 is False:
            spec = ResNetSpec.from_config({**spec.to_config(), "stride_in_1x1": False})
    return spec


def create_model(name: str, *, num_classes: int | None = None, shortcut: str | None = None,
                 stride_in_1x1: bool | None = None, zero_init_residual: bool = False,
                 init_mode: str = "fan_out", pretrained: bool | str = False,
                 activation_checkpointing: bool = False) -> ResNet:
    """Build a network of the paper by name.

    shortcut: "A" (zero-pad identity), "B" (projection where shapes change), "C" (projection
    everywhere) or "none" (plain). stride_in_1x1: True = paper's bottleneck ("v1"), False = v1.5
    (torchvision). pretrained: load the weights shipped with the package (see `resnets models`); True for the
    paper recipe's, a tag such as "fast" for another recipe's. activation_checkpointing: recompute activations in
    the backward pass instead of storing them (for the 1001-layer nets). With `pretrained`, options left unset
    take the shipped network's values (e.g. 10 classes and option A for `resnet18`, pretrained="imagenette").
    """
    shipped = shipped_weights(name, pretrained) if pretrained else None
    if shipped is not None:
        config = shipped["model_config"]
        num_classes = config["num_classes"] if num_classes is None else num_classes
        shortcut = config["shortcut"] if shortcut is None else shortcut
        stride_in_1x1 = config["stride_in_1x1"] if stride_in_1x1 is None else stride_in_1x1
    spec = model_spec(name, num_classes=num_classes, shortcut=shortcut, stride_in_1x1=stride_in_1x1)
    model = ResNet(spec, zero_init_residual=zero_init_residual, init_mode=init_mode,
                   activation_checkpointing=activation_checkpointing)
    if shipped is not None:
        load_pretrained_into(model, name, pretrained, shipped)
    return model
