"""Time to accuracy of the deeper CIFAR-10 ResNets (issue #35: "the same recipe then trains ResNet-56 and ResNet-110
to their best error for 30 epochs"), from the committed records.

Inputs: the depth series' folder (`results/depth`: `resnet56-s<seed>` and `resnet110-s<seed>` there are the old
`fast` recipe, 30 epochs) and, beside it, `cifar-fast/resnet{56,110}-s<seed>` (the new recipe at the same length: it
was tuned on ResNet-20 in 14 epochs, `tuning-cifar14`); each run evaluated on the test set once per epoch. A network
without a finished run of a recipe has no row, and its verdict says so. The shared parts (curves, thresholds, table,
figure, contention) are `time_to_accuracy`'s, through its `Task`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..plots import plot_time_to_accuracy
from .depth import plus_minus
from .describe import data_copy
from .experiments import label as net_label
from .time_to_accuracy import Measured, Plot, Task, contention_lines, figure_data, gap_verdict, measure, runs_of

OLD_RECIPE, NEW_RECIPE = "fast", "cifar-fast"
DEEP = Task(models=("resnet56", "resnet110"), thresholds=(12.0, 10.0), beside=(NEW_RECIPE,),
            tuning="tuning-cifar-deep", figure="time-to-accuracy-deep.png", ymax=30.0)
# Table 6 of the paper (164 epochs on the original CIFAR-10, not this JPEG copy): the scale of what is left.
PAPER_ERROR = {"resnet56": 6.97, "resnet110": 6.43}


def recipe_verdict(model: str, old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                   images: int) -> str:
    """Does the new recipe train `model` better than the old one at the same length? Mean final test error; "level"
    when the two are closer than the test set's sampling noise (`gap_verdict`)."""
    claim = f"{net_label(model)}: `{NEW_RECIPE}` better than `{OLD_RECIPE}`"
    runs = {NEW_RECIPE: new, OLD_RECIPE: old}
    missing = [f"`{name}`" for name, found in runs.items() if not found]
    if missing:
        return f"{claim}: not measured yet (no finished {' or '.join(missing)} {model} run)."
    errors = {name: [r["final_error"] for r in found] for name, found in runs.items()}
    means = {name: statistics.fmean(values) for name, values in errors.items()}
    values = "; ".join(f"`{name}` {plus_minus(errors[name])}% after {found[0]['epochs']:g} epochs, {len(found)} "
                       f"run{'s' if len(found) > 1 else ''}" for name, found in runs.items())
    verdict = gap_verdict(means[NEW_RECIPE], means[OLD_RECIPE], images)
    return (f"{claim}: {verdict} ({values}; the paper {PAPER_ERROR[model]:.2f}% after 164 epochs on "
            "the original CIFAR-10).")


def deep_time_to_accuracy_section(depth: Path, plot: Plot) -> list[str]:
    """The report's section from the depth folder and `cifar-fast` beside it: setting, table, figure (drawn by
    `plot`: ReportWriter.plot), verdicts, notes. Empty when neither holds a finished ResNet-56 or -110 run."""
    found: Measured | None = measure(depth, DEEP)
    if found is None:
        return []
    notes = [*contention_lines(found), *found.notes]
    images = found.first.summary["test_images"]
    verdicts = [recipe_verdict(model, runs_of(found, OLD_RECIPE, model), runs_of(found, NEW_RECIPE, model), images)
                for model in DEEP.models]
    thresholds = " and ".join(f"{t:g}%" for t in DEEP.thresholds)
    figure = plot(plot_time_to_accuracy, figure_data(found.summaries, None, DEEP), DEEP.figure,
                  "Time to accuracy: ResNet-56 and ResNet-110 test error against wall-clock minutes and epochs")
    return ["## Time to accuracy: the deeper CIFAR-10 ResNets, by recipe",
            "Issue #35: the recipe tuned for ResNet-20 in 14 epochs (`cifar-fast`), run for 30 epochs on ResNet-56 "
            "and ResNet-110, beside the old `fast` recipe at the same length. Runs: "
            + ", ".join(f"`{folder}/{DEEP.names}-s<seed>`" for folder in found.folders)
            + f"; data: {data_copy(found.first.summary['data'])}. Each run is evaluated on all "
            f"{images:,} test images (single 32x32 view) once per epoch. Minutes: the "
            f"trainer's elapsed time at that evaluation, wall-clock as recorded. Time to {thresholds}: the first "
            "evaluation at or below it. Mean ± sample std over the runs counted in the third column.",
            found.table(DEEP),
            figure,
            "Left: test error against wall-clock minutes as recorded; right: against epochs. One line per run, one "
            f"colour per recipe and network; thin grey: {thresholds}. The y axis stops at {DEEP.ymax:g}%.",
            "Verdicts (computed from the records):\n\n" + "\n".join(f"- {line}" for line in verdicts),
            "\n".join(f"- {line}" for line in notes)]
