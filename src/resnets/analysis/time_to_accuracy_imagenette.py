"""Time to accuracy on Imagenette: how soon each recipe trains each network to a validation error, from the committed
records, beside issue #35's independent numbers and its targets.

Inputs: the folder the report's `--imagenette` names (`results/imagenette`: the paper-faithful `imagenette` recipe,
`<model>-s<seed>` for plain-18/34 and ResNet-18/34) and, beside it, `imagenette-fast/<model>-s<seed>` (the new
recipe, option A shortcuts) and, where they exist, `imagenette-fast/option-B/<model>-s<seed>` (`option-C`: Table 3's
projection shortcuts, with their own rows and verdicts). Each run is evaluated on all validation photos during
training (key `test_error`: the trainer's test set is Imagenette's validation set). A recipe folder that is missing
or holds no finished run is skipped and said so.
`tuning-imagenette/*` beside it are probes scored on held-out training photos (`val_error`): their own table, never
beside validation numbers or in the figure. The shared parts (curves, thresholds, table, probes) are
`time_to_accuracy`'s, through its `Task`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..plots import plot_time_to_accuracy
from .depth import plus_minus
from .describe import table
from .experiments import label as net_label
from .imagenette import IMAGENETTE_MODELS
from .time_to_accuracy import (
    Plot,
    Point,
    Task,
    cadence,
    contention_lines,
    figure_data,
    gap_state,
    gap_verdict,
    measure,
    runs_of,
)

NEW_RECIPE = "imagenette-fast"
PROJECTION_OPTIONS = ("B", "C")  # Table 3's shortcut options beyond A: runs under the recipe folder's `option-X`


def option_folder(option: str) -> str:
    """The subfolder of a recipe's records that holds its runs with a projection shortcut option."""
    return f"option-{option}"


IMAGENETTE = Task(models=IMAGENETTE_MODELS, thresholds=(20.0, 15.0, 10.0), beside=(NEW_RECIPE,),
                  optional=tuple(f"{NEW_RECIPE}/{option_folder(option)}" for option in PROJECTION_OPTIONS),
                  tuning="tuning-imagenette", figure="time-to-accuracy-imagenette.png", error="validation error",
                  ymax=50.0)  # plain-34 of the `imagenette` recipe ends at 46%
TARGET_MODEL, DEEPER_MODEL = "resnet18", "resnet34"
TARGET_ERROR, TARGET_MINUTES = 10.0, 60.0  # issue #35: ResNet-18 at most 10% val error in at most 60 minutes

# Issue #35's anchors: measured by others, not re-measured here. (who, net, setting, epochs, time, error %, hardware)
_SCRIPT = "an independent script (issue #35)"
_SCRIPT_SETTING = ("random-resized 112 px crops of 128 px photos, tested on the whole 128 px photo; bf16, one-cycle, "
                   "label smoothing 0.1")
_FASTAI = "fastai Imagenette leaderboard"
_FASTAI_SETTING = "128 px, from scratch, no test-time augmentation"
REFERENCES: tuple[tuple[str, str, str, int, str, float, str], ...] = (
    (_SCRIPT, "ResNet-18", _SCRIPT_SETTING, 16, "28 min", 19.0, "2-core CPU, the same machine class"),
    (_SCRIPT, "ResNet-34", _SCRIPT_SETTING, 16, "62 min", 19.5, "2-core CPU, the same machine class"),
    (_FASTAI, "xresnet50 variants", _FASTAI_SETTING, 5, "-", 100 - 85.8, "GPUs"),
    (_FASTAI, "xresnet50 variants", _FASTAI_SETTING, 20, "-", 100 - 91.6, "GPUs"),
    (_FASTAI, "xresnet50 variants", _FASTAI_SETTING, 80, "-", 100 - 93.6, "GPUs"),
)


def reference_table() -> str:
    rows = [(who, net, setting, epochs, time, f"{error:.1f}" + (f" ({100 - error:.1f}% accuracy)"
                                                                if who == _FASTAI else ""), hardware)
            for who, net, setting, epochs, time, error, hardware in REFERENCES]
    return table(("trainer (not ours)", "net", "setting", "epochs", "training time", "validation error (%)",
                  "hardware"), rows)


def by_budget(points: Sequence[Point], minutes: float) -> Point | None:
    """The last evaluation at or before `minutes` of training (elapsed, as recorded); None when none was."""
    return next((p for p in reversed(points) if p["minutes"] <= minutes), None)


def with_shortcut(shortcut: str, both: bool = False) -> str:
    """How a claim names the shortcut option: option A (Table 2's, the recipes' default) goes unsaid."""
    return "" if shortcut == "A" else f", {'both ' if both else ''}with option {shortcut} shortcuts"


def target_verdict(runs: Sequence[Mapping[str, Any]], shortcut: str = "A") -> str:
    """Issue #35's ResNet-18 target, from the `imagenette-fast` runs with that shortcut option: met when the mean
    over runs of the error at each run's last evaluation within the time budget is at most the target error."""
    claim = (f"{net_label(TARGET_MODEL)} at most {TARGET_ERROR:g}% validation error within {TARGET_MINUTES:g} "
             f"minutes of training (`{NEW_RECIPE}`{with_shortcut(shortcut)})")
    if not runs:
        return f"{claim}: not measured yet (no finished `{NEW_RECIPE}` {TARGET_MODEL} run)."
    count = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
    final = (f"final {plus_minus([r['final_error'] for r in runs])}% after "
             f"{plus_minus([r['points'][-1]['minutes'] for r in runs], '.1f')} min")
    budget = [by_budget(r["points"], TARGET_MINUTES) for r in runs]
    if any(p is None for p in budget):
        return f"{claim}: missed, no evaluation within {TARGET_MINUTES:g} minutes ({final}, {count})."
    errors = [p["test_error"] for p in budget if p is not None]
    mean = statistics.fmean(errors)
    state = "met" if mean <= TARGET_ERROR else f"missed by {mean - TARGET_ERROR:.2f} points"
    if all(r["points"][-1]["minutes"] <= TARGET_MINUTES for r in runs):
        return f"{claim}: {state} ({final}, {count})."
    return (f"{claim}: {state} ({plus_minus(errors)}% at the last evaluation within {TARGET_MINUTES:g} min; "
            f"{final}; {count}).")


def deeper_verdict(shallow: Sequence[Mapping[str, Any]], deep: Sequence[Mapping[str, Any]], images: int,
                   shortcut: str = "A") -> str:
    """Issue #35's second target: the deeper ResNet's mean final error below the shallower's under the new recipe,
    both nets with the same shortcut option; "level" when the gap is inside the sampling noise of the `images`
    validation photos (`gap_verdict`)."""
    claim = (f"{net_label(DEEPER_MODEL)} lower than {net_label(TARGET_MODEL)} under `{NEW_RECIPE}`"
             f"{with_shortcut(shortcut, both=True)}")
    missing = [model for model, runs in ((TARGET_MODEL, shallow), (DEEPER_MODEL, deep)) if not runs]
    if missing:
        return f"{claim}: not measured yet (no finished `{NEW_RECIPE}` {' or '.join(missing)} run)."
    errors = {model: [r["final_error"] for r in runs]
              for model, runs in ((DEEPER_MODEL, deep), (TARGET_MODEL, shallow))}
    means = [statistics.fmean(errors[model]) for model in (DEEPER_MODEL, TARGET_MODEL)]
    values = "; ".join(f"{net_label(model)} {plus_minus(values)}% final, {len(values)} run"
                       f"{'s' if len(values) > 1 else ''}" for model, values in errors.items())
    lower = gap_state(*means, images) == "yes"
    return (f"{claim}: {gap_verdict(*means, images, 'validation photos')} ({values})."
            f"{'' if lower else why_deeper_lost(shallow, deep)}")


def why_deeper_lost(shallow: Sequence[Mapping[str, Any]], deep: Sequence[Mapping[str, Any]]) -> str:
    """Under-trained or over-fitted? The two nets' training loss over their last epoch (`last_epoch_training`): a
    deeper net that fits its training photos worse than the shallower one has not been trained long enough to show
    its depth (the paper's Fig. 4: ResNet-34's training error is below ResNet-18's); one that fits them better and
    tests worse over-fits."""
    training = {model: [r["last_epoch_training"] for r in runs if r.get("last_epoch_training")]
                for model, runs in ((DEEPER_MODEL, deep), (TARGET_MODEL, shallow))}
    if not all(training.values()):
        return ""
    loss = {model: statistics.fmean(t["train_loss"] for t in values) for model, values in training.items()}
    error = {model: statistics.fmean(t["train_error"] for t in values) for model, values in training.items()}
    gap = {model: statistics.fmean(r["final_error"] for r in runs) - error[model]
           for model, runs in ((DEEPER_MODEL, deep), (TARGET_MODEL, shallow))}
    state = ("it fits its training photos worse too, so at this length it is under-trained"
             if loss[DEEPER_MODEL] > loss[TARGET_MODEL] else "it fits its training photos better and tests worse: "
             "it over-fits")
    return (f" Why, measured: over the last epoch, training loss {loss[DEEPER_MODEL]:.3f} vs {loss[TARGET_MODEL]:.3f}"
            f" and training error {error[DEEPER_MODEL]:.2f}% vs {error[TARGET_MODEL]:.2f}% (on the augmented crops, "
            f"label smoothing in the loss), {net_label(DEEPER_MODEL)} vs {net_label(TARGET_MODEL)}: {state}; its "
            f"validation error is {'further' if gap[DEEPER_MODEL] > gap[TARGET_MODEL] else 'no further'} above its "
            f"training error ({gap[DEEPER_MODEL]:.2f} vs {gap[TARGET_MODEL]:.2f} points).")


def setting(recipe: Mapping[str, Any]) -> str:
    """How a recipe's runs trained and were tested, from a run's recorded recipe."""
    crop, area = recipe["crop_size"], recipe.get("crop_area")
    train = (f"random-resized {crop} px crops (area {area[0]:.0%}-{area[1]:.0%})" if area
             else f"{crop} px crops of the photo resized to shorter side {recipe['scale_min']}-{recipe['scale_max']}")
    test, side = recipe.get("eval_crop") or crop, recipe["eval_resize"]
    return f"trained on {train}, tested on the centre {test}x{test} of the photo at shorter side {side}"


def imagenette_time_to_accuracy_section(imagenette: Path, plot: Plot) -> list[str]:
    """The report's section from the `--imagenette` folder and the recipe folders beside it: setting, table,
    independent numbers, figure (drawn by `plot`: ReportWriter.plot), target verdicts, notes, tuning probes.
    Empty when no folder holds a finished run."""
    found = measure(imagenette, IMAGENETTE)
    if found is None:
        return []
    recipes: dict[str, tuple[Mapping[str, Any], list[str]]] = {}  # name -> (its first run's settings, cadences)
    for run in (run for runs in found.summaries.values() for run in runs):
        cadences, how_often = recipes.setdefault(run["recipe"], (run["settings"], []))[1], cadence(run["points"])
        if how_often not in cadences:  # runs of one recipe may have been evaluated more often
            cadences.append(how_often)
    data = found.first.summary
    verdicts = []
    for shortcut in ("A", *PROJECTION_OPTIONS):  # a projection option only where its runs are
        shallow, deep = (runs_of(found, NEW_RECIPE, model, shortcut) for model in (TARGET_MODEL, DEEPER_MODEL))
        if shortcut == "A" or shallow or deep:
            verdicts += [target_verdict(shallow, shortcut),
                         deeper_verdict(shallow, deep, data["test_images"], shortcut)]
    *most, last = (f"{t:g}%" for t in IMAGENETTE.thresholds)
    thresholds = f"{', '.join(most)} and {last}"
    figure = plot(plot_time_to_accuracy, figure_data(found.summaries, None, IMAGENETTE), IMAGENETTE.figure,
                  "Time to accuracy on Imagenette: validation error against wall-clock minutes and epochs")
    notes = [*contention_lines(found), *found.notes, *found.tuning_notes]
    return ["## Time to accuracy on Imagenette, by recipe and network",
            "Runs of each recipe and network, "
            + ", ".join(f"`{folder}/<model>-s<seed>`" for folder in found.folders)
            + f"; {data['data']['train_images']:,} training photos of Imagenette. Each run is evaluated on all "
            f"{data['test_images']:,} validation photos during training: "
            + "; ".join(f"`{name}` {setting(settings)}, evaluated {' or '.join(cadences)}"
                        for name, (settings, cadences) in recipes.items())
            + ". Minutes: the trainer's elapsed time at that evaluation, wall-clock as recorded (evaluation "
            f"included). Time to {thresholds}: the first evaluation at or below it. Mean ± sample std over the runs "
            "counted in the third column; images/s: each run's median logged rate.",
            found.table(IMAGENETTE),
            "Independent numbers (issue #35), not measured by this package and not re-run here: other trainers on "
            "Imagenette's 10 classes and validation set (the script on this data copy, the leaderboard on fastai's).",
            reference_table(),
            figure,
            "Left: validation error against wall-clock minutes as recorded; right: against epochs. One line per run, "
            f"one colour per recipe and network; thin grey: {thresholds}. The y axis stops at "
            f"{IMAGENETTE.ymax:g}%: the first epochs are above it.",
            "Targets of issue #35 (computed from the records):\n\n"
            + "\n".join(f"- {line}" for line in verdicts),
            "\n".join(f"- {line}" for line in notes), found.tuning]
