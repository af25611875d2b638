"""Tables 2 and 3 and Fig. 4 of Sec. 4.1 in miniature, one report section per Imagenette budget: ours,
`imagenette-fast` (`results/imagenette-fast`, the budget issue #36 decides the claims on), and the paper-faithful
`imagenette` recipe (`results/imagenette`, kept as the second budget).

A run's protocol results are its own protocols.json (`resnets experiment imagenette` tests the run's weights) or, for
a run that keeps none, the `imagenette-protocols/MODEL.TAG/` records of the weights shipped from it
(`shipped_protocols.tested_as_shipped`); the tables say which, with the precision each was tested at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluate.protocols import PROTOCOLS, multiscale_sides
from ..io import read_json
from ..plots import plot_error_curves
from ..runs import RunRecord
from .depth import load_series, plus_minus, schedule_of, series_panels, series_rows
from .describe import hardware_brief, parameter_count, table, training_command
from .experiments import label as net_label
from .imagenette import IMAGENETTE_MODELS, PROTOCOLS_FILE, imagenette_verdicts, protocol_rows
from .shipped_protocols import FOLDER as SHIPPED_RECORDS
from .shipped_protocols import tested_as_shipped
from .time_to_accuracy import Plot

FAST_FOLDER = "imagenette-fast"  # beside the report's --imagenette folder
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
    elsewhere: dict[Path, dict[str, Any]]  # run path -> protocol -> record, for runs tested through shipped weights
    rows: list[dict[str, Any]]  # `imagenette.protocol_rows`


def load_budget(folder: Path, title: str, figure: str, shipped_records: Path | None = None) -> Budget:
    """Every run under `folder` with its protocol results (refused in one line where a run has none);
    `shipped_records`: the `imagenette-protocols` folder to read for runs that keep no protocols.json."""
    series = load_series(folder)
    elsewhere = tested_as_shipped(series, shipped_records) if shipped_records is not None else {}
    return Budget(folder, title, figure, series, elsewhere, protocol_rows(series, elsewhere))


def load_fast_budget(imagenette: Path) -> Budget | None:
    """The `imagenette-fast` series beside the report's --imagenette folder, or None when there is none."""
    folder = imagenette.parent / FAST_FOLDER
    if not folder.is_dir():
        return None
    return load_budget(folder, "ImageNet in miniature on our budget: Tables 2 and 3, Fig. 4 with `imagenette-fast`",
                       "imagenette-fast-fig4.png", imagenette.parent / SHIPPED_RECORDS)


def _tested_with(run: RunRecord, elsewhere: Mapping[Path, Mapping[str, Any]]) -> str:
    if run.path in elsewhere and not (run.path / PROTOCOLS_FILE).is_file():
        record = next(iter(elsewhere[run.path].values()))
        return f"`{record['weights']}` (shipped copy), {record['precision']}"
    return f"the run's weights, {read_json(run.path / PROTOCOLS_FILE, 'protocol results')['precision']}"


def budget_section(plot: Plot, budget: Budget) -> list[str]:
    series, rows, folder = budget.series, budget.rows, budget.folder
    first = next(iter(series.values()))[0]
    recipe = first.config["recipe"]
    train_rows = {row["model"]: row for row in series_rows(series)}
    tested = {model: "; ".join(sorted({_tested_with(run, budget.elsewhere) for run in runs}))
              for model, runs in series.items()}
    table2 = [(net_label(row["model"]), f"{parameter_count(series[row['model']][0].config['model_config']):,}",
               row["runs"], f"{row['10crop_top1_error']:.2f}", f"{row['center_top1_error']:.2f}",
               plus_minus(train_rows[row["model"]]["train_errors"]),
               "-" if row["paper_10crop"] is None else f"{row['paper_10crop']:.2f}", tested[row["model"]])
              for row in rows]
    table3 = [(net_label(row["model"]), *(f"{row[f'{p}_top1_error']:.2f} / {row[f'{p}_top5_error']:.2f}"
                                      for p in PROTOCOLS)) for row in rows]
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
    hardware = hardware_brief(*(run.summary["hardware"] for runs in series.values() for run in runs))
    missing = [net_label(model) for model in IMAGENETTE_MODELS if model not in series]
    crop = recipe.get("eval_crop") or recipe["crop_size"]  # 0 or absent: the training crop's side
    center = f"shorter side {recipe['eval_resize']}, one {crop} crop" + (
        " (the whole photo: Imagenette's photos are square)" if crop == recipe["eval_resize"] else "")
    return [f"## {budget.title}",
            f"Every run under `{folder}`, all on one budget: {schedule_of(first)} ({first.summary['epochs']:g} "
            f"epochs; {recipe['notes']}); {first.summary['data']['train_images']:,} training photos of Imagenette "
            f"(10 ImageNet classes, a 224x224 copy); {hardware}. "
            f"Each run: `{training_command(first.config)}` with its model (residual nets: option A shortcuts, as in "
            "Table 2). These are not ImageNet numbers: the paper's column is there for direction only."
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
                f"- {line}" for line in imagenette_verdicts(series, budget.elsewhere))]
