"""One name for pretrained weights, as timm writes them: `<model>.<tag>` (`resnet18.imagenette`, `resnet20.fast`,
`resnet20.paper`), or `<model>` alone for the model's default tag; and the one parser, `resolve_pretrained`, that
every `pretrained=` argument and every `--pretrained` flag goes through.

A shipped tag is a pair of files (src/resnets/assets/weights): the weights (`.pt`) and what they measured (`.json`).
`weight_file` is the only place that turns (model, tag) into a file name; the files keep the names they were shipped
under (`resnet20.pt` for the paper recipe, `resnet20-fast.pt` for the others). The .json files and the manifest
(models/manifest.json, `write_manifest`) are in the wheel, the .pt files are not: `fetch.shipped_weights` finds each in
the repository, the torch hub cache or at `$RESNETS_WEIGHTS_URL`, checked against the manifest's SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import fetch
from . import weights as weight_files  # its pretrained_dir() is looked up at each call (tests point it elsewhere)

PAPER_TAG = "paper"  # the tag of a paper-recipe run, shipped as `<model>.pt`
# The tag `pretrained=True` (or a bare model name) loads. Written out for every model shipped here, so that shipping
# another tag never changes what an existing spelling loads; a model missing here defaults to its only tag.
DEFAULT_TAGS = {
    "resnet20": PAPER_TAG, "resnet56": "fast", "resnet110": "fast",
    "resnet164": "paper-2ep", "preact_resnet164": "paper-2ep",
    "resnet18": "imagenette", "resnet34": "imagenette", "plain18": "imagenette",
}
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# A run directory's final weights, else its last checkpoint (the layout is runs.py's; tests/test_pretrained.py
# checks that the two agree, since models/ sits below runs/ and cannot import it).
RUN_WEIGHTS = ("model.pt", "checkpoints/last.pt")
WHERE_TO_LOOK = "`resnets models --pretrained` lists the shipped weights"


@dataclass(frozen=True)
class Pretrained:
    """What a `pretrained=` value names: shipped weights (model and tag) or a weight file / run directory (path)."""

    model: str | None  # the model the weights are for (a file's: the caller's expectation, None when not given)
    tag: str | None  # the shipped tag; None for a file or run
    path: Path  # the weight file that is read
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # shipped: the .json

    @property
    def shipped(self) -> bool:
        return self.tag is not None

    @property
    def name(self) -> str:
        """`resnet20.paper` for shipped weights, the file's path otherwise: what to write to get them again."""
        return f"{self.model}.{self.tag}" if self.tag is not None else str(self.path)


def weight_file(model: str, tag: str, folder: str | Path | None = None) -> Path:
    """The file of shipped weights `model.tag`: `<model>.pt` for the paper recipe, `<model>-<tag>.pt` otherwise."""
    folder = weight_files.pretrained_dir() if folder is None else Path(folder)
    return folder / (f"{model}.pt" if tag == PAPER_TAG else f"{model}-{tag}.pt")


def _tag_of(meta: Mapping[str, Any]) -> str:
    """The tag in a shipped .json: older files say `"pretrained": true` for the paper recipe."""
    value = meta.get("pretrained", True)
    return PAPER_TAG if value is True else str(value)


TASKS = ("classification", "detection")


def list_pretrained(task: str | None = "classification") -> dict[str, dict[str, Any]]:
    """Every shipped `model.tag` (sorted) of `task` (None: all; a detector's metadata says `"task": "detection"`) with
    its metadata (dataset, measured error, recipe, classes, ...); the metadata's `pretrained` and `tag` say the name
    and the tag."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    found = {}
    for meta_file in sorted(weight_files.pretrained_dir().glob("*.json")):
        meta = json.loads(meta_file.read_text())
        if task is not None and meta.get("task", "classification") != task:
            continue
        tag = _tag_of(meta)
        if weight_file(meta["model"], tag, meta_file.parent).stem != meta_file.stem:
            raise ValueError(f"{meta_file}: says model {meta['model']!r}, tag {tag!r}, which would be "
                             f"{weight_file(meta['model'], tag).name}; fix the file's name or its metadata")
        found[f"{meta['model']}.{tag}"] = {**meta, "pretrained": f"{meta['model']}.{tag}", "tag": tag}
    return dict(sorted(found.items()))


def write_manifest() -> Path:
    """Rewrite models/manifest.json from the shipped .json files and the repository's weight files (run it after
    shipping weights into the package: `resnets analyze ship` does)."""
    folder = weight_files.pretrained_dir()
    return fetch.write_manifest_file({name: fetch.manifest_entry(weight_file(meta["model"], meta["tag"], folder), meta)
                                      for name, meta in list_pretrained(task=None).items()})


def shipped_tags(model: str, shipped: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The tags shipped for `model`, its default first."""
    shipped = list_pretrained() if shipped is None else shipped
    tags = sorted(meta["tag"] for meta in shipped.values() if meta["model"] == model)
    default = DEFAULT_TAGS.get(model)
    return sorted(tags, key=lambda tag: tag != default)


def default_tag(model: str, shipped: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The tag that `pretrained=True` and a bare `model` load: DEFAULT_TAGS, else the model's only shipped tag."""
    tags = shipped_tags(model, shipped)
    if model in DEFAULT_TAGS and DEFAULT_TAGS[model] in tags:
        return DEFAULT_TAGS[model]
    if len(tags) == 1:
        return tags[0]
    if not tags:
        raise ValueError(f"no shipped weights for {model}; {WHERE_TO_LOOK} (a weight file or run directory "
                         "loads with pretrained=PATH)")
    raise ValueError(f"{model} ships {', '.join(tags)} and no default: name one, e.g. {model}.{tags[0]}")


def split_name(name: str) -> tuple[str, str | None]:
    """`resnet18.imagenette` -> ("resnet18", "imagenette"); `resnet18` -> ("resnet18", None)."""
    model, dot, tag = name.partition(".")
    return model, (tag if dot else None)


def _looks_like_path(value: str) -> bool:
    """A value with a path separator or a weight-file suffix is a path; so is any existing file or folder (it wins
    over a shipped name of the same spelling)."""
    return "/" in value or "\\" in value or value.endswith(WEIGHT_SUFFIXES) or Path(value).exists()


def _from_path(path: Path, model: str | None) -> Pretrained:
    if path.is_dir():
        found = next((path / name for name in RUN_WEIGHTS if (path / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path} holds neither {' nor '.join(RUN_WEIGHTS)}; give a run directory, a "
                                    "weight file or shipped weights (MODEL.TAG)")
        path = found
    elif not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a weight file, a run directory or shipped weights "
                                f"(MODEL.TAG; {WHERE_TO_LOOK})")
    return Pretrained(model, None, path)


def _shipped(model: str, tag: str | None, shipped: dict[str, dict[str, Any]]) -> Pretrained:
    """Shipped weights `model.tag` (tag None: the model's default), or one error line naming what exists."""
    tags = shipped_tags(model, shipped)
    if tag is None and tags:
        tag = default_tag(model, shipped)
    if f"{model}.{tag}" in shipped:
        meta = shipped[f"{model}.{tag}"]
        path = fetch.shipped_weights(f"{model}.{tag}", weight_file(model, tag).name, meta)  # checked, maybe fetched
        return Pretrained(model, tag, path, MappingProxyType(meta))
    if tags:
        raise ValueError(f"no shipped weights {model}.{tag}; {model} ships {', '.join(f'{model}.{t}' for t in tags)}")
    stem_of = {weight_file(meta["model"], meta["tag"]).stem: name for name, meta in shipped.items()}
    if model in stem_of:  # the file's name, e.g. resnet20-fast
        raise ValueError(f"{model!r} is the file's name; the weights are named {stem_of[model]}")
    if tag is None and (owners := [name for name, meta in shipped.items() if meta["tag"] == model]):
        raise ValueError(f"{model!r} is a tag: name the model too, e.g. {', '.join(owners)}")
    raise ValueError(f"no shipped weights for {model!r}; {WHERE_TO_LOOK} (a weight file or run directory loads "
                     "with pretrained=PATH)")


def resolve_pretrained(value: bool | str | Path | Pretrained, model: str | None = None,
                       task: str = "classification") -> Pretrained:
    """Parse a `pretrained=` value / `--pretrained` argument, for `model` when given:

    True: `model`'s default tag; "TAG": `model`'s shipped tag; "MODEL" or "MODEL.TAG": shipped weights (MODEL must
    be `model` when both are given); a weight file (ours, torchvision's, timm's) or a run directory (its model.pt,
    else its last checkpoint); a Pretrained passes through. task: which shipped weights names may mean
    ("detection": `maskrcnn_resnet18.pennfudan`). Raises ValueError / FileNotFoundError with one line
    saying what exists."""
    if isinstance(value, Pretrained):
        if model is not None and value.model is not None and value.model != model:
            raise ValueError(f"pretrained weights {value.name} are for {value.model}, not {model}")
        return value
    if model is not None:
        model, tag = split_name(model)
        if tag is not None:
            raise ValueError(f"give the model without a tag here ({model!r}); the tag goes in pretrained=")
    if isinstance(value, Path):
        return _from_path(value, model)
    if not isinstance(value, str) or not value.strip():
        if value is not True:
            raise ValueError(f"pretrained={value!r}: give True, a tag, MODEL.TAG, a weight file or a run directory")
        if model is None:
            raise ValueError(f"pretrained=True needs a model: name the weights as MODEL.TAG ({WHERE_TO_LOOK})")
        return _shipped(model, None, list_pretrained(task))
    value = value.strip()
    if _looks_like_path(value):
        return _from_path(Path(value).expanduser(), model)
    shipped = list_pretrained(task)
    named, tag = split_name(value)
    if tag is None:  # a bare word: a model name (its default tag), or a tag of `model` when that is given
        return _shipped(model, named, shipped) if model not in (None, named) else _shipped(named, None, shipped)
    if model is not None and named != model:
        raise ValueError(f"pretrained={value!r} names weights of {named}, not of {model}; write pretrained={tag!r} "
                         f"or create_model({value!r})")
    return _shipped(named, tag, shipped)

