"""Weight files: our own (architecture config + state_dict) and torchvision/timm ResNet files (v1.5).

Everything is read with `torch.load(weights_only=True)` (or safetensors), never as a pickle.
torchvision and timm's `resnet*` use the same parameter names as ours for option B; timm's pre-activation
`resnetv2_18/34/50/101/152` (BatchNorm) are renamed onto our `preact_resnet*`. Their bottlenecks put the stride
on the 3x3, so imported models are built with stride_in_1x1=False.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_torch_save, load_torch_file
from .resnet import ResNet, model_config, model_from_config
from .specs import IMAGENET_STAGES, PREACT_IMAGENET_STAGES, ResNetSpec

StateDict = dict[str, torch.Tensor]
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


class IncompatibleWeightsError(ValueError):
    pass


def read_weight_file(path: str | Path) -> dict[str, Any]:
    """Load a .pt/.pth/.safetensors file safely; returns the raw top-level dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weight file {path} does not exist")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise IncompatibleWeightsError(
                f"{path}: reading .safetensors needs the 'safetensors' package (pip install safetensors)"
            ) from None
        return dict(load_file(str(path)))
    data = load_torch_file(path, "weight file", "re-save it with torch.save(model.state_dict(), ...)")
    if not isinstance(data, dict):
        raise IncompatibleWeightsError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return data


def extract_state_dict(data: dict[str, Any]) -> StateDict:
    """The state_dict inside our checkpoints, common wrappers ({'state_dict': ...}) or a bare one."""
    for key in ("model", "state_dict", "model_state_dict", "ema"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:  # DDP / torch.compile / wrapper prefixes
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_compatible(model: torch.nn.Module, state: StateDict, source: str = "weights") -> None:
    """Raise one clear error when `state` does not fit `model` (missing, unexpected or mis-shaped tensors)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
    spec = getattr(model, "spec", None)
    target = f"{spec.name} with shortcut {spec.shortcut}, {spec.num_classes} classes" if spec else "the model"
    hint = ""
    if any(".downsample." in k for k in missing + unexpected):
        hint = "; the shortcut option differs (projection weights present in one, absent in the other)"
    raise IncompatibleWeightsError(f"{source} do not fit {target}: {'; '.join(problems)}{hint}")


# timm ResNetV2 (pre-activation) names -> ours, applied in order to each name.
_TIMM_V2_RENAMES: tuple[tuple[str, Any], ...] = (
    (r"^stem\.conv\.", "conv1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}."),
    (r"\.norm(\d)\.", r".bn\1."),
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"^norm\.", "final_bn."),
    (r"^head\.fc\.", "fc."),
)


def is_timm_resnetv2(state: StateDict) -> bool:
    """timm's ResNetV2 names its trunk stem.* / stages.<i>.blocks.<j>.* (its v1 `resnet*` use our names)."""
    return any(k.startswith("stem.") for k in state) and any(k.startswith("stages.") for k in state)


def timm_resnetv2_difference(state: StateDict) -> str | None:
    """What, visible in the tensors, keeps a timm ResNetV2 from being exactly one of our preact_resnet*; None if
    nothing. Not visible and therefore not caught: avg_down=True with the 7x7 stem and output_stride < 32 (no
    registered timm name uses either without a deep stem; both leave the tensors unchanged)."""
    if "stem.conv1.weight" in state:
        return ("deep 3x3 stem (stem.conv1-3) with average-pool projection shortcuts (timm's 'd'/'t' variants); "
                "ours has the 7x7 stem and strided 1x1 projections")
    if "stem.norm.weight" in state or "norm.weight" not in state:
        return "post-activation ResNetV2 (preact=False, timm's ViT-hybrid backbone), not a pre-activation net"
    norms = sorted({k.rsplit(".", 1)[0] for k in state if re.search(r"(^|\.)norm\d?\.weight$", k)})
    if no_stats := [n for n in norms if f"{n}.running_mean" not in state]:
        return (f"{no_stats[0]} has no BatchNorm running statistics (GroupNorm with weight-standardised convs in "
                "BiT, or EvoNorm/FRN); ours is BatchNorm")
    if "head.fc.weight" not in state:
        return "no classifier head.fc (built with num_classes=0); ours always ends in an FC"
    return None


def timm_resnetv2_to_ours(state: StateDict) -> StateDict:
    """timm ResNetV2 (BatchNorm pre-activation) names -> ours: stem.conv -> conv1, stages.i.blocks.j -> layer<i+1>.j,
    norm<k> -> bn<k>, downsample.conv -> downsample.0, norm -> final_bn, head.fc (a 1x1 conv) -> fc (a Linear).
    The blocks are the same: BN-ReLU first, the projection reading the pre-activated input, one BN-ReLU before
    the pooling; state_dicts in our names pass through unchanged."""
    if not is_timm_resnetv2(state):
        return state
    if problem := timm_resnetv2_difference(state):
        raise IncompatibleWeightsError(f"timm ResNetV2 weights do not map exactly onto a preact_resnet: {problem}")
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _TIMM_V2_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value.flatten(1) if key == "fc.weight" else value
    return renamed


def import_state_dict(model: torch.nn.Module, state: StateDict, source: str = "weights") -> torch.nn.Module:
    """Copy a torchvision/timm/resnets state_dict into `model` after checking every name and shape."""
    spec, from_timm_v2 = getattr(model, "spec", None), is_timm_resnetv2(state)
    state = timm_resnetv2_to_ours(state)
    if from_timm_v2 and spec is not None and spec.block == "bottleneck" and spec.stride_in_1x1:
        raise IncompatibleWeightsError(f"{source}: timm ResNetV2 bottlenecks stride the 3x3; build {spec.name} "
                                       "with stride_in_1x1=False")
    check_compatible(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def infer_spec(state: StateDict, stride_in_1x1: bool = False) -> ResNetSpec:
    """Recognise a torchvision/timm ImageNet ResNet from its tensor names (depth, classes, shortcut, pre-activation)."""
    state = timm_resnetv2_to_ours(state)
    if "conv1.weight" not in state or "fc.weight" not in state:
        raise IncompatibleWeightsError("not a ResNet state_dict (no conv1.weight / fc.weight)")
    stages = []
    for layer in range(1, 5):
        indices = {int(m[1]) for k in state if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        stages.append(len(indices))
    bottleneck = "layer1.0.conv3.weight" in state
    preact = "final_bn.weight" in state
    matches = [d for d, (block, blocks) in (PREACT_IMAGENET_STAGES if preact else IMAGENET_STAGES).items()
               if blocks == tuple(stages) and (block == "bottleneck") == bottleneck]
    if not matches:
        raise IncompatibleWeightsError(f"blocks per stage {stages} match no network of Table 1")
    projections = sum(k.endswith("downsample.0.weight") for k in state)
    blocks = sum(stages)
    if projections == blocks:
        shortcut = "C"
    elif projections == 0:
        shortcut = "A"
    else:
        shortcut = "B"
    num_classes = state["fc.weight"].shape[0]
    return ResNetSpec("imagenet", matches[0], "bottleneck" if bottleneck else "basic", tuple(stages),
                      (64, 128, 256, 512), shortcut, num_classes, stride_in_1x1, preact)


def model_from_weight_data(data: dict[str, Any], source: str = "weights") -> ResNet:
    """The model of a file already read with `read_weight_file`: built from its model_config, or recognised from its
    tensor names (torchvision/timm files, built as v1.5); `meta` is the file's."""
    state = timm_resnetv2_to_ours(extract_state_dict(data))
    config = data.get("model_config")
    model = model_from_config(config) if isinstance(config, dict) else ResNet(infer_spec(state))
    import_state_dict(model, state, source=source)
    model.meta = dict(data.get("meta") or {})
    return model


def save_weights(model: ResNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Weights-only file with the architecture config, written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"model_config": model_config(model), "model": state, "meta": meta or {}},
                             Path(path))


def pretrained_dir() -> Path:
    """The package's folder of shipped weights (names and tags: models/pretrained.py)."""
    return Path(str(resources.files("resnets") / "assets" / "weights"))
