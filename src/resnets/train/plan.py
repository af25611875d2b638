"""One resolved description of a classification run: `resolve_run` merges the named recipe < a TOML config <
`--set` overrides < explicit flags into a frozen `RunPlan`, checked once, which `train.loop.train` runs unchanged.

The dataset is stated once (`RunOptions.dataset`); the recipe and model default to the dataset's (`DATASETS`). A
recipe made for another dataset family is refused, and so is a recipe field given explicitly that the run would not
read (`Recipe.unused_fields`): one line naming where it came from. Families: cifar (cifar10, cifar100), imagenet
(imagenet, imagenette) and folder (your photos: `finetune` is written for them and refused elsewhere, since the
other datasets have recipes of their own; --pretrained works on every dataset).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import model_spec
from ..models.pretrained import split_name
from ..runs import require_tensorboard
from ..runtime import fastest_precision, resolve_device
from .recipes import (
    DATASETS,
    RECIPES,
    RUN_OPTION_FIELDS,
    Recipe,
    RunOptions,
    apply_overrides,
    dataset_kind,
    get_recipe,
    read_toml,
)

# Flags of `resnets train` that set recipe fields (the rest set RunOptions fields).
RECIPE_FLAGS = ("epochs", "iterations", "batch_size", "lr", "val_split", "weight_decay")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RunPlan:
    """A classification run, resolved and checked: its options and its recipe. Building one checks it, so that
    every RunPlan can be trained; `out` defaults to runs/<model>-<recipe>."""

    options: RunOptions
    recipe: Recipe

    def __post_init__(self) -> None:
        options, recipe = self.options, self.recipe
        kind = dataset_kind(options.dataset)
        if recipe.family != kind.family:
            fitting = ", ".join(name for name, r in RECIPES.items() if r.family == kind.family)
            its = " or ".join(name for name, k in DATASETS.items() if k.family == recipe.family)
            raise ValueError(f"recipe {recipe.name!r} is written for {its}, not {options.dataset}: give --dataset "
                             f"{its}, or a recipe for {options.dataset} ({fitting})")
        recipe.validate()
        model_spec(str(options.model))  # an unknown model name: one error listing the valid ones
        if options.resume not in (True, False, "auto"):
            raise ValueError(f"--resume takes no value or 'auto', got {options.resume!r}")
        if options.precision == "auto":  # resolved here, so that config.json records what the run computes in
            options = dataclasses.replace(options, precision=fastest_precision(resolve_device(options.device)))
            object.__setattr__(self, "options", options)
        if options.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
        if self.pretrained:
            _check_pretrained_model(options.pretrained, str(options.model))
        if options.tensorboard:
            require_tensorboard()  # before any data is read: one line saying what to install
        if options.out is None:
            object.__setattr__(self, "options", dataclasses.replace(options, out=f"runs/{options.model}-"
                                                                                 f"{recipe.name}"))

    def recorded_recipe(self) -> dict[str, Any]:
        """The recipe as the run prints it and stores it in config.json: only the fields this run reads."""
        return self.recipe.record(self.options.dataset, pretrained=self.pretrained)

    @property
    def pretrained(self) -> bool:
        """Whether the run starts from weights (fine-tuning) rather than from scratch."""
        return self.options.pretrained not in (None, False)


def _check_pretrained_model(pretrained: bool | str, model: str) -> None:
    """Shipped weights of another model (`--pretrained resnet18.imagenette --model resnet34`): one line in the
    command line's words, before anything is loaded (files and run directories are checked when loaded)."""
    if not isinstance(pretrained, str) or Path(pretrained).exists():
        return
    named, tag = split_name(pretrained)
    try:
        model_spec(named)
    except ValueError:
        return  # a tag alone ("imagenette"), or not a model name: resolve_pretrained says what is wrong with it
    if tag is not None and named != model:
        raise ValueError(f"--pretrained {pretrained} holds weights of {named}, not of --model {model}; give --model "
                         f"{named}, or weights of {model} (`resnets models --pretrained` lists them)")


def resolve_run(recipe_name: str | None = None, *, config: str | Path | dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None, **flags: Any) -> RunPlan:
    """The run described by a named recipe < a TOML config (a path, or its parsed dict) < `overrides` (the
    `--set` fields) < `flags` (RunOptions fields and the recipe flags of RECIPE_FLAGS; None means not given).

    The dataset defaults to RunOptions' (cifar10), the recipe and model to the dataset's. An explicitly given recipe
    field that the run would not read is refused, naming where it was given."""
    where = f"--config {config}" if isinstance(config, str | Path) else "config"
    values = read_toml(config) if isinstance(config, str | Path) else dict(config or {})
    flags = {k: v for k, v in flags.items() if v is not None}
    unknown = set(flags) - RUN_OPTION_FIELDS - set(RECIPE_FLAGS)
    if unknown:
        raise TypeError(f"resolve_run: unknown flags {', '.join(sorted(unknown))}")
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    unknown = set(values) - recipe_fields - RUN_OPTION_FIELDS - {"recipe", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}; valid keys are `recipe`, run options "
                         "and recipe fields")

    options = {k: v for k, v in values.items() if k in RUN_OPTION_FIELDS}
    options.update({k: v for k, v in flags.items() if k in RUN_OPTION_FIELDS})
    dataset = options.get("dataset", RunOptions.dataset)
    kind = dataset_kind(dataset)
    options.setdefault("model", kind.model)
    name = recipe_name or values.get("recipe") or kind.recipe
    recipe = get_recipe(name, depth=model_spec(options["model"]).depth)

    # Each layer of explicit recipe fields, lowest first, with the words that name it in an error.
    layers = [({k: v for k, v in values.items() if k in recipe_fields}, lambda k: f"{where}: {k}"),
              ({k.replace("-", "_"): v for k, v in (overrides or {}).items()}, lambda k: f"--set {k}"),
              ({k: v for k, v in flags.items() if k in RECIPE_FLAGS}, lambda k: f"--{k.replace('_', '-')}")]
    if "iterations" in flags:
        layers.append(({"epochs": None}, lambda k: "--iterations"))  # an explicit iteration count wins over epochs
    given: dict[str, str] = {}
    for fields, source in layers:
        recipe = apply_overrides(recipe, fields)
        given.update({k: source(k) for k in fields})
    unused = recipe.unused_fields(dataset, pretrained=options.get("pretrained") not in (None, False))
    for field, source in given.items():
        if field in unused:
            raise ValueError(f"{source}: recipe {recipe.name!r} on {dataset} does not use {field} ({unused[field]}); "
                             "leave it out")
    return RunPlan(RunOptions(**options), recipe)
