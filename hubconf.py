"""torch.hub entry points: one per network of `resnets.list_models()`, each `create_model` under the model's name.

    model = torch.hub.load("OWNER/resnets", "resnet18", pretrained="imagenette")   # or (".", ..., source="local")
    torch.hub.list(".", source="local")            # every entry point
    print(torch.hub.help(".", "resnet20", source="local"))   # its architecture and shipped weights

`pretrained=`: False (He init, the default), True (the model's default shipped tag), a tag ("imagenette", "fast"),
MODEL.TAG, a weight file or a run directory; other keywords go to `resnets.create_model` (num_classes, shortcut,
stride_in_1x1, ...). Shipped weights come from the repository copy, else the torch hub cache, else
$RESNETS_WEIGHTS_URL (docs/pretrained.md).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision"]

# The repository's own package (src layout) when this file sits in a checkout or a hub download and resnets is not
# already imported; otherwise the installed one.
_SOURCE = _Path(__file__).resolve().parent / "src"
if "resnets" not in _sys.modules and (_SOURCE / "resnets" / "__init__.py").is_file():
    _sys.path.insert(0, str(_SOURCE))

from resnets.models.pretrained import list_pretrained as _list_pretrained  # noqa: E402
from resnets.models.pretrained import shipped_tags as _shipped_tags  # noqa: E402
from resnets.models.registry import create_model as _create_model  # noqa: E402
from resnets.models.registry import list_models as _list_models  # noqa: E402
from resnets.models.registry import model_spec as _model_spec  # noqa: E402

_FAMILIES = {"imagenet": "ImageNet (Table 1, 224x224 inputs)", "cifar": "CIFAR (Sec. 4.2, 32x32 inputs)"}


def _describe(name: str, shipped: dict) -> str:
    """The entry's docstring: the architecture and the weights shipped for it, with their measured error."""
    spec = _model_spec(name)
    kind = "pre-activation ResNet" if spec.preact else ("ResNet" if spec.residual else "plain net (no shortcuts)")
    lines = [f"{name}: {kind}-{spec.depth}, {_FAMILIES[spec.family]}; {spec.block} blocks {list(spec.stages)}, "
             f"shortcut {spec.shortcut}, {spec.num_classes} classes unless the weights or num_classes say otherwise.",
             ""]
    tags = _shipped_tags(name, shipped)  # the default first
    if tags:
        lines.append("Shipped weights (pretrained=TAG; pretrained=True loads the first):")
        for tag in tags:
            meta = shipped[f"{name}.{tag}"]
            lines.append(f"  {tag}: {meta['dataset']}, {meta['test_top1_error']:.2f}% top-1 error on "
                         f"{meta['test_images']:,} test images, {len(meta.get('classes') or [])} classes")
    else:
        lines.append("No shipped weights: pretrained= takes a weight file (ours, torchvision's, timm's) or a run "
                     "directory.")
    lines += ["", "Keywords: pretrained (False, True, TAG, MODEL.TAG, FILE, RUN) and resnets.create_model's "
              "(num_classes, shortcut, stride_in_1x1, zero_init_residual, ...).",
              f'Example: torch.hub.load(repo, "{name}"' + (f', pretrained="{tags[0]}")' if tags else ")")]
    return "\n".join(lines)


def _entry(name: str, doc: str):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


def _register() -> None:
    shipped = _list_pretrained()
    for name in _list_models():
        globals()[name] = _entry(name, _describe(name, shipped))


_register()
