"""Model names -> specs. `resnet18..152` / `plain18..152` are Table 1; `resnet<6n+2>` / `plain<6n+2>` are
CIFAR (Sec. 4.2); `cifar_resnet<6n+2>` reaches CIFAR depths that collide with Table 1 (50, 152)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .pretrained import Pretrained, resolve_pretrained, split_name
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
from .weights import (
    extract_state_dict,
    import_state_dict,
    infer_spec,
    model_from_weight_data,
    read_weight_file,
    timm_resnetv2_to_ours,
)

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
                 init_mode: str = "fan_out", pretrained: bool | str | Path | Pretrained | None = None,
                 activation_checkpointing: bool = False) -> ResNet:
    """Build a network of the paper by name, with pretrained weights when asked.

    name: a model (`resnet20`, see `resnets models`) or shipped weights `model.tag` (`resnet18.imagenette`,
    `resnet20.fast`, see `resnets models --pretrained`), which loads them; with pretrained=False it builds their
    architecture with fresh weights, as timm's tags do. pretrained: True (the model's default tag, e.g. paper for
    resnet20), a tag ("fast"), "model.tag", a weight file (ours, torchvision's, timm's) or a run directory; see
    `resolve_pretrained`. With weights, options left unset take the weights' values (e.g. 10 classes and option A
    for resnet18.imagenette); a num_classes other than theirs gets a new classifier (He init) on their trunk.

    shortcut: "A" (zero-pad identity), "B" (projection where shapes change), "C" (projection everywhere) or
    "none" (plain). stride_in_1x1: True = paper's bottleneck ("v1"), False = v1.5 (torchvision).
    activation_checkpointing: recompute activations in the backward pass instead of storing them (for the
    1001-layer nets).
    """
    model_name, tag = split_name(name) if isinstance(name, str) else (name, None)
    source, load = None, pretrained is not False
    if tag is not None:
        source = resolve_pretrained(tag, model_name)
        if pretrained not in (None, True, False) and resolve_pretrained(pretrained, model_name).name != source.name:
            raise ValueError(f"create_model({name!r}, pretrained={pretrained!r}) names two sets of weights; give "
                             "one: the name's tag or pretrained=")
    elif pretrained not in (None, False):
        source = resolve_pretrained(pretrained, model_name)
    data = read_weight_file(source.path) if source is not None else None
    stored = _stored_config(data) if data is not None else None
    if stored is not None:
        num_classes = stored["num_classes"] if num_classes is None else num_classes
        shortcut = stored["shortcut"] if shortcut is None else shortcut
        stride_in_1x1 = stored["stride_in_1x1"] if stride_in_1x1 is None else stride_in_1x1
    spec = model_spec(model_name, num_classes=num_classes, shortcut=shortcut, stride_in_1x1=stride_in_1x1)
    if stored is not None:
        _check_same_network(spec, ResNetSpec.from_config(stored), source)
    model = ResNet(spec, zero_init_residual=zero_init_residual, init_mode=init_mode,
                   activation_checkpointing=activation_checkpointing)
    if data is not None and load:
        _load_into(model, data, source, new_classifier=spec.num_classes != stored["num_classes"])
    return model


def load_model(source: str | Path | Pretrained, model: str | None = None) -> ResNet:
    """A ready model from anything `pretrained=` takes: shipped weights (`resnet18.imagenette`), a weight file
    (ours, or a torchvision/timm ResNet file, built as v1.5) or a run directory; `model` checks what it holds."""
    resolved = resolve_pretrained(source, model)
    if resolved.model is not None:
        return create_model(resolved.model, pretrained=resolved)
    return model_from_weight_data(read_weight_file(resolved.path), source=f"weights in {resolved.path}")


def stored_architecture(source: str | Path | Pretrained, model: str | None = None) -> ResNetSpec:
    """The network a set of weights holds (shipped `model.tag`, a weight file or a run directory), read from the
    file without building the network: e.g. which shortcut option shipped weights were trained with."""
    return ResNetSpec.from_config(_stored_config(read_weight_file(resolve_pretrained(source, model).path)))


def _stored_config(data: dict[str, Any]) -> dict[str, Any]:
    """The architecture a weight file holds: its model_config, or recognised from the tensor names."""
    config = data.get("model_config")
    return dict(config) if isinstance(config, dict) else infer_spec(extract_state_dict(data)).to_config()


def _check_same_network(spec: ResNetSpec, stored: ResNetSpec, source: Pretrained) -> None:
    """Depth, blocks and family must agree; shortcut and stride differences are left to the tensor check, which
    names them."""
    same = (spec.family, spec.stages, spec.widths, spec.block, spec.preact, spec.shortcut == "none") == (
        stored.family, stored.stages, stored.widths, stored.block, stored.preact, stored.shortcut == "none")
    if not same:
        raise ValueError(f"{source.name} holds a {stored.name} ({stored.family} family), not a {spec.name}; give "
                         f"--model {stored.name} or other weights")


def _load_into(model: ResNet, data: dict[str, Any], source: Pretrained, new_classifier: bool) -> None:
    """Copy the weights into `model` (every tensor checked), with its own fresh classifier when the class count
    differs; model.meta: the file's meta over the shipped .json, named by the weights' one name."""
    state = extract_state_dict(data)
    own = data.get("meta") or {}
    meta = {**source.meta, **own}  # the file's own meta (exact mean image tensor) wins
    if source.meta.get("preprocess") and own.get("preprocess"):  # key by key: a .json may add to a file's record
        meta["preprocess"] = {**source.meta["preprocess"], **own["preprocess"]}
    if new_classifier:  # a trunk to fine-tune: the old classes and measured errors no longer describe the model
        state = timm_resnetv2_to_ours(state)
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
        meta = {"preprocess": meta["preprocess"]} if meta.get("preprocess") else {}
    import_state_dict(model, state, source=f"weights {source.name}")
    model.meta = {**meta, "pretrained": source.name}
