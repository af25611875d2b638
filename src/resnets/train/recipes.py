"""Named training recipes as plain frozen dataclasses (Sec. 3.4 ImageNet, Sec. 4.2 CIFAR), their overrides, the
datasets they apply to, and a run's options (`RunOptions`). `plan.resolve_run` puts them together.

Every schedule length is in iterations, as the paper states them (32k/48k/64k for CIFAR); a run
given --epochs converts with the iterations per epoch of its own data and batch size.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str = "paper"
    batch_size: int = 128  # global batch; each of W DDP ranks takes batch_size / W
    lr: float = 0.1  # for batch_size; scale linearly yourself when changing the batch (Goyal et al.)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_on_bn: bool = True  # the paper decays every weight; False exempts BN and biases
    # Fine-tuning (--pretrained): every parameter but the classifier (fc.*) trains at lr x this, so that a new head
    # learns fast while the pretrained body moves little. Runs from scratch train everything at lr.
    body_lr_scale: float = 1.0
    schedule: str = "step"  # step | cosine | onecycle | plateau
    milestones: tuple[float, ...] = (32000, 48000)  # step: iterations, or fractions of the run if all < 1
    gamma: float = 0.1
    iterations: int = 64000
    epochs: float | None = None  # when set, overrides `iterations`
    warmup_iterations: int = 0  # cosine: linear warm-up from 0 over these iterations
    peak_fraction: float = 0.25  # onecycle: lr rises linearly from lr/10 to lr over this part, then to 0
    # Sec. 4.2, ResNet-110: lr `error_warmup_lr` until training error < threshold %, then back to `lr`.
    error_warmup_lr: float | None = None
    error_warmup_threshold: float = 80.0
    error_warmup_max_iterations: int = 2000  # a bound so a run that never learns cannot stay warm forever
    plateau_patience: int = 3  # plateau: evaluations without improvement before lr /= 10
    label_smoothing: float = 0.0
    ema_decay: float | None = None  # exponential moving average of weights, evaluated and saved when set
    pad: int = 4  # CIFAR: pad-crop-flip augmentation
    scale_min: int = 256  # ImageNet (Sec. 3.4): shorter side uniformly random in [scale_min, scale_max]
    scale_max: int = 480
    crop_size: int = 224
    # Beyond the paper: random-resized crops (area fraction range, aspect 3/4-4/3) of the photo at eval_resize instead
    # of the scale augmentation; empty: the paper's. Decoded photo sets only (imagenette, folder).
    crop_area: tuple[float, ...] = ()
    # Beyond the paper, with crop_area: each batch's crops at a side drawn from these (multi-size training, cut from
    # the photo at the largest side); empty: every batch at crop_size.
    crop_sizes: tuple[int, ...] = ()
    eval_resize: int = 256  # evaluation during training: shorter side, then the centre crop
    eval_crop: int = 0  # that centre crop's side; 0: crop_size (train at 112, test the whole 128 photo: FixRes)
    lighting_std: float = 0.1  # AlexNet PCA lighting noise, 0 turns it off
    lighting_pca: str = "imagenet"  # "imagenet": AlexNet's eigenvalues/vectors; "computed": from the training images
    mean: str = "pixel"  # ImageNet: "pixel" (paper: per-pixel mean image) or "channel" (torchvision mean/std)
    mean_images: int = 10_000  # training images averaged for the mean image
    augment: bool = True
    val_split: int = 0  # hold out this many training images (paper: 5000) to choose the schedule
    eval_every: int = 0  # iterations between evaluations (0: once per epoch)
    family: str = "cifar"  # the datasets it is written for ("cifar" or "imagenet"); fixed, not a setting
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        data["crop_area"] = list(self.crop_area)  # as config.json reads back: comparisons with a record hold
        data["crop_sizes"] = list(self.crop_sizes)
        return data

    def unused_fields(self, dataset: str, pretrained: bool = False) -> dict[str, str]:
        """The fields a run of this recipe on `dataset` (from `pretrained` weights or not) never reads, each with why
        (its data code, optimizer or schedule does not look at it): refused when given explicitly, left out of the
        recipe a run prints and records."""
        kind = dataset_kind(dataset)
        unused = dict(kind.ignores)
        if self.crop_area and "crop_area" not in unused:
            unused.update(dict.fromkeys(("scale_min", "scale_max"), "the random-resized crops (crop_area) replace "
                                                                     "the scale augmentation"))
        if pretrained:
            unused.update(kind.ignores_pretrained)
        else:
            unused["body_lr_scale"] = "a fine-tuning setting, read only when the run starts from --pretrained weights"
        schedule_reads = SCHEDULE_FIELDS.get(self.schedule, ())
        for name in sorted({name for names in SCHEDULE_FIELDS.values() for name in names} - set(schedule_reads)):
            users = " and ".join(s for s, names in SCHEDULE_FIELDS.items() if name in names)
            unused[name] = f"a setting of the {users} schedule; this run's schedule is {self.schedule}"
        return unused

    def record(self, dataset: str, pretrained: bool = False) -> dict[str, Any]:
        """What a run on `dataset` prints and stores in config.json: the fields it reads (not `family`, which only
        says which datasets the recipe is for)."""
        unused = self.unused_fields(dataset, pretrained)
        return {k: v for k, v in self.to_dict().items() if k not in unused and k != "family"}

    def validate(self) -> Recipe:
        """One clear error for settings no run can use (a NaN lr would otherwise die at the first step)."""
        checks = [("lr", self.lr, 0.0, math.inf, False), ("weight_decay", self.weight_decay, 0.0, math.inf, True),
                  ("momentum", self.momentum, 0.0, 1.0, True), ("gamma", self.gamma, 0.0, math.inf, False),
                  ("label_smoothing", self.label_smoothing, 0.0, 1.0, True),
                  ("body_lr_scale", self.body_lr_scale, 0.0, math.inf, True),
                  ("error_warmup_lr", self.error_warmup_lr, 0.0, math.inf, False)]
        for name, value, low, high, low_allowed in checks:
            if value is None:
                continue
            inside = (low <= value if low_allowed else low < value) and value < high
            if not (math.isfinite(value) and inside):
                bound = f"{'>=' if low_allowed else '>'} {low:g}" + (f" and < {high:g}" if math.isfinite(high) else "")
                raise ValueError(f"recipe {self.name!r}: {name} = {value!r} is not a finite number {bound}; fix "
                                 f"--{name.replace('_', '-')} / --set {name}=...")
        for name, allowed in (("schedule", tuple(SCHEDULE_FIELDS)), ("lighting_pca", ("imagenet", "computed")),
                              ("mean", ("pixel", "channel"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe {self.name!r}: {name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}; fix --set {name}=...")
        if self.crop_area and not (len(self.crop_area) == 2 and 0 < self.crop_area[0] <= self.crop_area[1] <= 1):
            raise ValueError(f"recipe {self.name!r}: crop_area must be two fractions 0 < low <= high <= 1 of the photo "
                             f"area, got {self.crop_area}; fix --set crop_area=LOW,HIGH (e.g. 0.25,1)")
        if self.crop_sizes and not (self.crop_area and all(8 <= side <= 1024 for side in self.crop_sizes)):
            raise ValueError(f"recipe {self.name!r}: crop_sizes (sides from 8 to 1024 px, got {list(self.crop_sizes)}) "
                             "vary the random-resized crops and need crop_area; fix --set crop_sizes=112,144,176 "
                             "--set crop_area=0.25,1")
        if self.eval_crop and self.eval_crop > self.eval_resize:
            raise ValueError(f"recipe {self.name!r}: eval_crop ({self.eval_crop}) must be at most eval_resize "
                             f"({self.eval_resize}); fix --set eval_crop=...")
        if self.batch_size < 1 or (self.epochs is None and self.iterations < 1) or (
                self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0)):
            raise ValueError(f"recipe {self.name!r}: batch_size, iterations and epochs must be positive, got "
                             f"{self.batch_size}, {self.iterations}, {self.epochs}")
        return self


RECIPES: dict[str, Recipe] = {
    # Sec. 4.2: batch 128, lr 0.1 /10 at 32k and 48k, stop at 64k; wd 1e-4, momentum 0.9.
    "paper": Recipe(name="paper", notes="He et al. 2016, Sec. 4.2 (CIFAR-10)"),
    # Ours: the same network to the paper's accuracy in far fewer epochs. One-cycle lr (linear up, linear
    # down to 0), nesterov, label smoothing and no decay on BN/bias; each choice measured in README.
    "fast": Recipe(
        name="fast", batch_size=128, lr=0.2, nesterov=True, weight_decay=5e-4, weight_decay_on_bn=False,
        schedule="onecycle", epochs=30, peak_fraction=0.15, milestones=(), label_smoothing=0.1,
        notes="resnets fast recipe: one-cycle (peak at 15%, linear to 0), nesterov, wd 5e-4 on conv/fc weights, "
              "label smoothing 0.1, 30 epochs",
    ),
    # `fast` squeezed to 14 epochs (about 10 minutes of ResNet-20 on 2 cores) with the peak lr doubled: chosen on
    # 45k/5k of the training set (results/tuning-cifar14: 14 epochs at peak 0.2 -> 14.68% held-out error, 0.4 ->
    # 14.42%, label smoothing 0.2 no better, batch 64 at 0.2 14.20% at twice the steps; 1 run each).
    "cifar-fast": Recipe(
        name="cifar-fast", batch_size=128, lr=0.4, nesterov=True, weight_decay=5e-4, weight_decay_on_bn=False,
        schedule="onecycle", epochs=14, peak_fraction=0.15, milestones=(), label_smoothing=0.1,
        notes="resnets time-to-accuracy recipe: `fast` in 14 epochs at peak lr 0.4 (one-cycle, peak at 15%, linear "
              "to 0), nesterov, wd 5e-4 on conv/fc weights, label smoothing 0.1",
    ),
    # Sec. 3.4: batch 256, lr 0.1 /10 on plateaus of the validation error, up to 60e4 iterations.
    "paper-imagenet": Recipe(
        name="paper-imagenet", batch_size=256, schedule="plateau", iterations=600_000, milestones=(),
        family="imagenet", eval_every=5000, notes="He et al. 2016, Sec. 3.4 (ImageNet)",
    ),
    # The common 90-epoch variant (fb.resnet.torch, torchvision): /10 every 30 epochs.
    "step-90": Recipe(
        name="step-90", batch_size=256, schedule="step", epochs=90, milestones=(1 / 3, 2 / 3),
        family="imagenet", notes="90 epochs, lr /10 at epochs 30 and 60",
    ),
    # Sec. 3.4 scaled to Imagenette's 224x224 photos at half the resolution (our choice, not the paper's numbers):
    # 112 crops, shorter side in [128, 240] (the paper's [256, 480] for 224 crops, halved), evaluation at shorter
    # side 128; PCA lighting and the per-pixel mean as in the paper; batch 128 with lr 0.05 (the paper's 0.1 per
    # 256, scaled linearly); wd 1e-4, momentum 0.9; lr /10 at 50% and 75% of 30 epochs instead of on plateaus
    # (30 epochs: ResNet-34 at ~45 img/s on 2 cores is then ~1h50, one sitting).
    "imagenette": Recipe(
        name="imagenette", batch_size=128, lr=0.05, schedule="step", epochs=30, milestones=(0.5, 0.75),
        scale_min=128, scale_max=240, crop_size=112, eval_resize=128, family="imagenet",
        notes="He et al. 2016, Sec. 3.4 scaled to Imagenette at 112px: scale [128, 240], 112 crops, PCA lighting, "
              "per-pixel mean, batch 128, lr 0.05 /10 at 50% and 75% of 30 epochs, wd 1e-4",
    ),
    # Ours, for time to accuracy on Imagenette (beyond the paper): random-resized 112 px crops (area 25-100%, aspect
    # 3/4-4/3) of the photo at 128 px, tested on the whole 128 px photo (train low, test high: FixRes), flips, no PCA
    # lighting, torchvision's per-channel mean/std; one-cycle, nesterov, label smoothing 0.1, no decay on BN/bias.
    "imagenette-fast": Recipe(
        name="imagenette-fast", batch_size=64, lr=0.2, nesterov=True, weight_decay=5e-4, weight_decay_on_bn=False,
        schedule="onecycle", epochs=40, peak_fraction=0.25, milestones=(), label_smoothing=0.1, crop_size=112,
        crop_area=(0.25, 1.0), eval_resize=128, eval_crop=128, lighting_std=0.0, mean="channel", family="imagenet",
        notes="resnets time-to-accuracy recipe for Imagenette: random-resized 112 crops (area 25-100%) of 128 px "
              "photos, tested whole at 128; one-cycle to peak lr 0.2 at batch 64, nesterov, wd 5e-4 (not BN/bias), "
              "label smoothing 0.1, 40 epochs",
    ),
    # Ours, for `--dataset folder` (your photos, train/<class>/...), from --pretrained weights or from scratch: a short
    # cosine schedule; the new classifier at lr, the pretrained body at lr/10 (body_lr_scale; from scratch every
    # parameter at lr); label smoothing 0.1; no decay on BN/bias; the Imagenette augmentation (shorter side in
    # [128, 240], 112 crops, flips) without PCA lighting. From weights, the crop, resize and mean are the weights'
    # own (train/data.py), and the scale range is scaled by their crop / 112.
    "finetune": Recipe(
        name="finetune", batch_size=64, lr=0.05, nesterov=True, weight_decay=1e-4, weight_decay_on_bn=False,
        schedule="cosine", epochs=10, milestones=(), label_smoothing=0.1, body_lr_scale=0.1, scale_min=128,
        scale_max=240, crop_size=112, eval_resize=128, lighting_std=0.0, family="folder",
        notes="resnets finetune recipe: 10 epochs cosine, batch 64, lr 0.05 for the classifier and 0.005 for a "
              "pretrained body, nesterov, label smoothing 0.1, wd 1e-4 (not on BN/bias), scale [128, 240], flips",
    ),
}

# Which recipe fields only some datasets read (train/data.py): every other field is read by every run, the schedule's
# own fields (SCHEDULE_FIELDS) by runs of that schedule.
CIFAR_FIELDS = ("pad", "val_split")  # imagenette reads val_split too (DATASETS)
IMAGENET_FIELDS = ("scale_min", "scale_max", "crop_size", "crop_area", "crop_sizes", "eval_resize", "eval_crop",
                   "lighting_std", "lighting_pca", "mean", "mean_images")
SCHEDULE_FIELDS = {"step": ("milestones", "gamma"), "cosine": ("warmup_iterations",), "onecycle": ("peak_fraction",),
                   "plateau": ("gamma", "plateau_patience")}
_IMAGENET_ONLY = "an ImageNet-style setting; CIFAR runs do not read it"
_CIFAR_ONLY = "a CIFAR setting; ImageNet-style runs do not read it"


@dataclass(frozen=True)
class DatasetKind:
    family: str  # which recipes apply: those of the same family
    recipe: str  # the default recipe
    model: str  # the default model
    ignores: dict[str, str]  # recipe fields its runs do not read -> why
    ignores_pretrained: dict[str, str] = dataclasses.field(default_factory=dict)  # ... more, from --pretrained weights


# The one table of what each dataset defaults to and reads (train/data.py builds each).
DATASETS: dict[str, DatasetKind] = {
    "cifar10": DatasetKind("cifar", "paper", "resnet20", dict.fromkeys(IMAGENET_FIELDS, _IMAGENET_ONLY)),
    "cifar100": DatasetKind("cifar", "paper", "resnet20", dict.fromkeys(IMAGENET_FIELDS, _IMAGENET_ONLY)),
    "imagenet": DatasetKind("imagenet", "paper-imagenet", "resnet50", dict.fromkeys(CIFAR_FIELDS, _CIFAR_ONLY)),
    # Imagenette's decoded photos: the per-pixel mean of their centre views subtracted (Sec. 3.4), or mean="channel".
    "imagenette": DatasetKind("imagenet", "imagenette", "resnet18", {"pad": _CIFAR_ONLY}),
    # Your photos: train/<class>/* and val/<class>/* (or a held-out split) under --data, decoded once. From scratch
    # the per-pixel mean of the training photos is subtracted; from --pretrained weights, their own preprocessing.
    "folder": DatasetKind("folder", "finetune", "resnet18",
                          {**dict.fromkeys(CIFAR_FIELDS, _CIFAR_ONLY),
                           "mean": "an ImageNet-folder setting; folder runs subtract the per-pixel mean image of "
                                   "their photos, or the weights' own mean with --pretrained"},
                          dict.fromkeys(("crop_size", "eval_resize", "eval_crop", "mean_images"),
                                        "set by the --pretrained weights' own preprocessing (their crop, resize and "
                                        "mean)")),
}


def dataset_kind(dataset: str) -> DatasetKind:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[dataset]


# Sec. 4.2: "for the 110-layer network ... 0.01 to warm up". Every CIFAR recipe's deep nets get it, `fast` too:
# its one-cycle starts at 0.02 but climbs to 0.2 within 15% of the run, and squeezed to 2 epochs it left the
# original ResNet-164 at a uniform output (loss ln 10) by iteration 100. ImageNet-family recipes never do
# (ResNet-152 is deep but not a CIFAR net of Sec. 4.2).
DEPTH_NEEDING_ERROR_WARMUP = 110


def get_recipe(name: str, depth: int | None = None) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if recipe.family == "cifar" and depth is not None and depth >= DEPTH_NEEDING_ERROR_WARMUP:
        recipe = dataclasses.replace(recipe, error_warmup_lr=0.01)
    return recipe


def stretch(recipe: Recipe, epochs: float | None) -> Recipe:
    """The recipe's schedule squeezed or stretched to `epochs`, keeping its shape: milestones given as iterations
    (the paper's 32k and 48k of 64k) become the same fractions of the new length (50% and 75%)."""
    if epochs is None:
        return recipe
    milestones = recipe.milestones
    if milestones and not all(m < 1 for m in milestones):
        milestones = tuple(m / recipe.iterations for m in milestones)
    return dataclasses.replace(recipe, epochs=epochs, milestones=milestones)


def _coerce(recipe: Recipe, key: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(recipe)}
    if key == "family":
        raise ValueError(f"recipe field 'family' is the recipe's own ({recipe.name!r} is for {recipe.family} "
                         "datasets); choose another --recipe instead")
    if key not in kinds:
        hint = f"; {key} is a run option: give --{key.replace('_', '-')}" if key in RUN_OPTION_FIELDS else ""
        raise ValueError(f"unknown recipe field {key!r}; valid fields: "
                         f"{', '.join(sorted(set(kinds) - {'family'}))}{hint}")
    kind = str(kinds[key])
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if "None" not in kind:
            raise ValueError(f"recipe field {key!r} cannot be None")
        return None
    if kind.startswith("tuple"):
        items = value if isinstance(value, list | tuple) else [v for v in str(value).split(",") if v.strip()]
        try:
            return tuple((int if kind.startswith("tuple[int") else float)(v) for v in items)
        except ValueError:
            raise ValueError(f"recipe field {key!r} takes comma-separated numbers, got {value!r}") from None
    if kind.startswith("bool"):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"recipe field {key!r} takes true/false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    for caster in (int, float, str):
        if kind.startswith(caster.__name__):
            try:
                return caster(value)
            except (TypeError, ValueError):
                raise ValueError(f"recipe field {key!r} takes {caster.__name__}, got {value!r}") from None
    return value


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """Return a copy with `overrides` applied (values may be strings from the command line or TOML types)."""
    changes = {key.replace("-", "_"): value for key, value in overrides.items()}
    return dataclasses.replace(recipe, **{k: _coerce(recipe, k, v) for k, v in changes.items()})


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs from the command line."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML config: top-level keys are run options and recipe fields, e.g. `recipe = "fast"`, `lr = 0.2`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """What the training loop itself reads, the same for every task (classification, detection)."""

    out: str | None = None  # the run directory (RunPlan fills in runs/<model>-<recipe> when None)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only)
    device: str = "auto"
    compile: bool = False
    deterministic: bool = False
    seed: int = 0
    resume: bool | str = False  # True: continue the run in `out`; "auto": continue it if it has a checkpoint
    log_every: int = 50  # iterations between metric lines in metrics.jsonl
    tensorboard: bool = False  # also write the metrics lines as TensorBoard event files in RUN/tensorboard/
    checkpoint_every: int = 0  # iterations between checkpoints besides each evaluation (0: only at evaluations)
    max_iterations: int | None = None  # stop early (for tests and smoke runs) without changing the schedule
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class RunOptions(LoopOptions):
    """Everything about a classification run that is not the recipe: what to train, where, and how fast. The
    dataset is stated here only; the model defaults to the dataset's (DATASETS)."""

    model: str | None = None
    pretrained: bool | str | None = None  # weights to start from (models.resolve_pretrained); None: from scratch
    dataset: str = "cifar10"
    data: str | None = None
    channels_last: bool = True
    num_classes: int | None = None
    shortcut: str | None = None
    workers: int = 4
    on_bad_image: str = "fail"  # ImageNet folders: fail on an unreadable image, or skip it and count it
    val_labels: str | None = None  # labels file for a flat validation folder
    subset: int | None = None  # train on a fixed random subset of this many training images (smoke runs, tests)
    eval_subset: int | None = None  # evaluate on the first N test (and val) images

    def __post_init__(self) -> None:
        if self.model is None:  # frozen: the one place a default is filled in, at construction
            object.__setattr__(self, "model", dataset_kind(self.dataset).model)


RUN_OPTION_FIELDS = frozenset(f.name for f in fields(RunOptions))
