"""Tables 2 and 3 and Fig. 4 of Sec. 4.1 in miniature, one report section per Imagenette budget: ours,
`imagenette-fast` (`results/imagenette-fast`, the budget issue #36 decides the claims on), and the paper-faithful
`imagenette` recipe (`results/imagenette`, kept as the second budget).

A run's protocol results are its own protocols.json (`resnets experiment imagenette` tests the run's weights) or, for
a run that keeps none, the `imagenette-protocols/MODEL.TAG/` records of the weights shipped from it
(`shipped_protocols.tested_as_shipped`); the tables say which, with the precision each was tested at.

Table 3's shortcut rows: residual runs in a budget's folder use option A (Table 2's); runs trained with `--shortcut B`
(or C) live in its `option-B/<model>-s<seed>` (`option-C/`) subfolder, each with its own protocols.json, and join
Table 3 as "ResNet-34 B" beside the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluate.protocols import PROTOCOLS, multiscale_sides
from ..models import model_spec
from ..models.specs import PAPER_RESNET34_TOP1_10CROP_BY_SHORTCUT
from ..plots import plot_error_curves
from ..runs import RunDirectoryError, RunRecord
from .depth import load_series, plus_minus, schedule_of, series_panels, series_rows
from .describe import hardware_brief, parameter_count, table, training_command
from .experiments import label as net_label
from .imagenette import IMAGENETTE_MODELS, protocol_rows, verdicts_of_rows
from .shipped_protocols import FOLDER as SHIPPED_RECORDS
from .shipped_protocols import tested_as_shipped
from .time_to_accuracy import Plot
from .time_to_accuracy_imagenette import NEW_RECIPE as FAST_FOLDER  # beside --imagenette
from .time_to_accuracy_imagenette import PROJECTION_OPTIONS, option_folder  # Table 3's rows beyond option A

_REDUCTIONS = {"mean_then_softmax": "each score map averaged over positions, then the softmax (VGG's dense evaluation, "
                                    "the paper's)",
               "softmax_then_mean": "the softmax at each position of a score map, then averaged (not the paper's "
                                    "order, and no longer the default: `resnets eval --fcn-reduction`)"}


@dataclass
class Budget:
    """One Imagenette series, loaded and checked before the report writes anything."""
    folder: Path
    title: str
    figure: str  # file name under figures/
    series: dict[str, list[RunRecord]]
    rows: list[dict[str, Any]]  # `imagenette.protocol_rows`: own protocols.json, else the shipped weights' records
    by_shortcut: dict[str, list[dict[str, Any]]]  # "B"/"C" -> protocol rows of the runs under option-B/C


def _option_folder(budget: Path, option: str) -> Path:
    """Where a budget keeps its runs with shortcut `option`: option A (and plain nets) in the budget's folder."""
    return budget / option_folder(option) if option in PROJECTION_OPTIONS else budget


def _require_shortcut(series: dict[str, list[RunRecord]], option: str, budget: Path) -> None:
    """Every residual run of the option's folder was trained with that shortcut; plain nets only in the budget's own
    folder (beside option A, as in Table 2)."""
    here = _option_folder(budget, option)
    for runs in series.values():
        for run in runs:
            used = run.config["model_config"].get("shortcut")
            if used == option or (option == "A" and not model_spec(run.summary["model"]).residual):
                continue
            raise RunDirectoryError(f"{run.path}: trained with shortcut {used}, but {here} holds option {option} "
                                    f"runs; move it to {_option_folder(budget, used)}")


def _shortcut_rows(budget: Path) -> dict[str, list[dict[str, Any]]]:
    rows = {}
    for option in PROJECTION_OPTIONS:
        if _option_folder(budget, option).is_dir():
            series = load_series(_option_folder(budget, option))
            _require_shortcut(series, option, budget)
            rows[option] = protocol_rows(series)
    return rows


def load_budget(folder: Path, title: str, figure: str, shipped_records: Path | None = None) -> Budget:
    """Every run under `folder` with its protocol results (refused in one line where a run has none);
    `shipped_records`: the `imagenette-protocols` folder to read for runs that keep no protocols.json."""
    series = load_series(folder)
    _require_shortcut(series, "A", folder)
    elsewhere = tested_as_shipped(series, shipped_records) if shipped_records is not None else {}
    return Budget(folder, title, figure, series, protocol_rows(series, elsewhere), _shortcut_rows(folder))


def shortcut_verdicts(rows: list[dict[str, Any]], by_shortcut: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Table 3's comparison: each projection option against option A for the same net, on 10-crop top-1."""
    option_a = {row["model"]: row for row in rows}
    lines = []
    for option, option_rows in by_shortcut.items():
        for row in option_rows:
            if row["model"] not in option_a:
                continue
            ours, theirs = row["10crop_top1_error"], option_a[row["model"]]["10crop_top1_error"]
            paper = PAPER_RESNET34_TOP1_10CROP_BY_SHORTCUT
            cited = f" (ImageNet: {paper[option]:.2f}% vs {paper['A']:.2f}%)" if row["model"] == "resnet34" else ""
            lines.append(f"option {option} shortcuts beat option A for {net_label(row['model'])}{cited}: "
                         f"{'yes' if ours < theirs else 'no'} ({ours:.2f}% vs {theirs:.2f}% 10-crop top-1, "
                         f"{row['runs']} vs {option_a[row['model']]['runs']} runs)")
    if not lines:
        lines.append("option B/C shortcuts against option A (Table 3): not measured on this budget (no run under "
                     "option-B/ or option-C/)")
    return lines


def load_fast_budget(imagenette: Path) -> Budget | None:
    """The `imagenette-fast` series beside the report's --imagenette folder, or None when there is none."""
    folder = imagenette.parent / FAST_FOLDER
    if not folder.is_dir():
        return None
    return load_budget(folder, "ImageNet in miniature on our budget: Tables 2 and 3, Fig. 4 with `imagenette-fast`",
                       "imagenette-fast-fig4.png", imagenette.parent / SHIPPED_RECORDS)


def _table3_label(model: str, option: str) -> str:
    return f"{net_label(model)} {option}" if model_spec(model).residual else net_label(model)


def budget_section(plot: Plot, budget: Budget) -> list[str]:
    series, rows, folder = budget.series, budget.rows, budget.folder
    first = next(iter(series.values()))[0]
    recipe = first.config["recipe"]
    train_list = series_rows(series)
    train_rows = {row["model"]: row for row in train_list}
    table2 = [(net_label(row["model"]), f"{parameter_count(series[row['model']][0].config['model_config']):,}",
               row["runs"], f"{row['10crop_top1_error']:.2f}", f"{row['center_top1_error']:.2f}",
               plus_minus(train_rows[row["model"]]["train_errors"]),
               "-" if row["paper_10crop"] is None else f"{row['paper_10crop']:.2f}", row["tested_with"])
              for row in rows]
    table3 = [(_table3_label(row["model"], option), *(f"{row[f'{p}_top1_error']:.2f} / {row[f'{p}_top5_error']:.2f}"
                                                   for p in PROTOCOLS))
              for option, option_rows in [("A", rows), *budget.by_shortcut.items()] for row in option_rows]
    figure = plot(plot_error_curves, series_panels(series), budget.figure,
                  f"Fig. 4 in miniature ({recipe['name']}): plain (left) and ResNet (right) on Imagenette")
    sides = multiscale_sides(recipe["crop_size"])
    reductions = sorted({reduction for row in rows for reduction in row["multiscale_reduction"]})
    by_scale = [(net_label(row["model"]), *("-" if row["multiscale_per_scale"] is None
                                            else f"{row['multiscale_per_scale'][str(side)]:.2f}" for side in sides),
                 f"{row['multiscale_top1_error']:.2f}") for row in rows]
    area = recipe.get("crop_area")  # random-resized crops replace the scale augmentation (train/data.py)
    seen = (f"random-resized {recipe['crop_size']} px crops of {area[0]:.0%}-{area[1]:.0%} of the photo at "
            f"{recipe['eval_resize']} px" if area else
            f"shorter sides {recipe['scale_min']}-{recipe['scale_max']}, cropped to {recipe['crop_size']}")
    # the command as the series lays runs out (RUNS/<folder>/<model>-s<seed>), not where this one happened to train
    in_series = {**first.config, "options": {**first.config["options"], "out": f"RUNS/{folder.name}/{first.path.name}"}}
    hardware = hardware_brief(*(run.summary["hardware"] for runs in series.values() for run in runs))
    missing = [net_label(model) for model in IMAGENETTE_MODELS if model not in series]
    crop = recipe.get("eval_crop") or recipe["crop_size"]  # 0 or absent: the training crop's side
    center = f"shorter side {recipe['eval_resize']}, one {crop} crop" + (
        " (the whole photo: Imagenette's photos are square)" if crop == recipe["eval_resize"] else "")
    return [f"## {budget.title}",
            f"Every run under `{folder}`, all on one budget: {schedule_of(first)} ({first.summary['epochs']:g} "
            f"epochs; {recipe['notes']}); {first.summary['data']['train_images']:,} training photos of Imagenette "
            f"(10 ImageNet classes, a 224x224 copy); {hardware}. "
            f"Each run: `{training_command(in_series)}` with its model and seed (RUNS: a folder outside the work "
            "tree; residual nets: option A shortcuts, as in Table 2). These are not ImageNet numbers: the paper's "
            "column is there for direction only."
            + (f" Not trained on this budget yet: {', '.join(missing)}." if missing else ""),
            "Table 2 in miniature: top-1 validation error (%) of each net, mean over its runs, and what the "
            "protocols were measured on.",
            table(("net", "params", "runs", "10-crop top-1", "center top-1", "final train error (%)",
                   "paper: ImageNet 10-crop top-1", "tested with"), table2),
            f"Table 3 in miniature: top-1 / top-5 validation error (%) per test protocol. center: {center}; 10crop: "
            f"corners and centre and their flips; multiscale: the whole image, fully convolutional, at shorter sides "
            f"{', '.join(map(str, sides))} and flips; " + "; ".join(f"`{r}`: {_REDUCTIONS[r]}" for r in reductions)
            + ".",
            table(("net", *PROTOCOLS), table3),
            f"Multi-scale testing, each scale alone (the whole image and its flip): top-1 validation error (%). "
            f"Training saw {seen}; the photos are 224 px, so larger sides upsample them.",
            table(("net", *(f"side {side}" for side in sides), "all five"), by_scale),
            figure, "Dashed: training error; solid: validation error (centre view).",
            "Verdicts (computed from the data):\n\n" + "\n".join(
                f"- {line}" for line in (verdicts_of_rows(series, train_list, rows)
                                         + shortcut_verdicts(rows, budget.by_shortcut)))]
