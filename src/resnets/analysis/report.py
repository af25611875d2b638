"""`resnets report`: REPRODUCTION.md from run directories. Every number is read from the runs' files or computed
here (Table 1 by `complexity`); the paper's values come from `models.specs`. Nothing is typed by hand.

A run directory is refused, with one error naming it and the problem, when summary.json, config.json or
metrics.jsonl is missing or unreadable, or when they disagree (model, dataset, iteration counts).
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, atomic_write_text
from ..models import create_model, list_pretrained
from ..models.specs import (
    IMAGENET_STAGES,
    PAPER_CIFAR10_ERROR,
    PAPER_IMAGENET_GFLOPS,
    followup_error,
)
from ..plots import plot_error_curves
from ..runs import RunDirectoryError, RunRecord, load_run, require_test_error
from .complexity import complexity
from .depth import PAPER_DEPTH_SERIES, load_series, plus_minus, schedule_of, series_panels, series_rows, series_verdict
from .describe import (
    DATASET_NAMES,
    data_copy,
    duration,
    hardware_brief,
    parameter_count,
    read_run_json,
    recipe_brief,
    table,
    training_command,
)
from .detection import detection_section, load_detection_runs, pennfudan_section
from .experiments import degradation_results, load_runs
from .experiments import label as net_label
from .imagenette_tables import budget_section, load_budget, load_fast_budget
from .preact import preact_panels, preact_rows, preact_verdict
from .responses import read_responses_csv, response_verdicts
from .shipped_check import shipped_check_section
from .shipped_protocols import shipped_protocols_section
from .time_to_accuracy import time_to_accuracy_section
from .time_to_accuracy_depth import deep_time_to_accuracy_section
from .time_to_accuracy_imagenette import imagenette_time_to_accuracy_section


def table1() -> str:
    rows = []
    for depth, (block, _stages) in IMAGENET_STAGES.items():
        costs = []
        for stride_in_1x1 in (True, False):
            with torch.device("meta"):
                model = create_model(f"resnet{depth}", stride_in_1x1=None if block == "basic" else stride_in_1x1)
            costs.append(complexity(model))
        v1, v15 = costs
        rows.append((f"ResNet-{depth}", block, f"{v1.params:,}", f"{v1.gmacs:.2f}", f"{v15.gmacs:.2f}",
                     f"{PAPER_IMAGENET_GFLOPS[depth]:.1f}"))
    return table(("model", "block", "params", "GMACs v1 (stride on 1x1, paper)", "GMACs v1.5 (stride on 3x3)",
                  "paper FLOPs (1e9)"), rows)


def paper_error(run: RunRecord) -> str:
    """The published test error for this run's model and dataset: Table 6 for the paper's CIFAR-10 nets (option A),
    the follow-up's table ("Identity Mappings", ECCV 2016) for the 9n+2 bottleneck nets, original or pre-activation."""
    config, dataset = run.config["model_config"], run.summary["dataset"]
    if config["family"] != "cifar":
        return "-"
    if config["block"] == "bottleneck":
        value = followup_error(dataset, bool(config.get("preact")), config["depth"])
        return f"{value:.2f} (follow-up)" if value is not None else "-"
    known = dataset == "cifar10" and config["shortcut"] == "A" and config["depth"] in PAPER_CIFAR10_ERROR
    return f"{PAPER_CIFAR10_ERROR[config['depth']]:.2f}" if known else "-"


def run_row(run: RunRecord) -> tuple[Any, ...]:
    s = run.summary
    done = "" if s["complete"] else f" (stopped at {s['iterations']:,} of {s['scheduled_iterations']:,})"
    return (f"`{run.name}` {s['model']}", f"{parameter_count(run.config['model_config']):,}",
            f"{s['test_top1_error']:.2f}{done}", paper_error(run), recipe_brief(run.config["recipe"],
                                                                               s["scheduled_iterations"]),
            f"{s['epochs']:g} ({s['iterations']:,} it.)", duration(s["wall_seconds"]), s["precision"],
            hardware_brief(s["hardware"]), data_copy(s["data"]),
            f"{s['data'].get('train_images', '?'):,} / {s['test_images']:,}")


class ReportWriter:
    """Collects figures to copy into figures/ beside the output; they are written only once all inputs passed.
    A figure drawn here (`plot`) gets its data beside it, figures/<name>.json: what it shows, for a check (CI) to
    compare by value where PNG bytes depend on the matplotlib version."""

    def __init__(self, out: Path) -> None:
        self.figures = out.parent / "figures"
        self.pending: dict[Path, bytes] = {}

    def figure(self, source: Path, name: str, caption: str) -> str:
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing; regenerate it with the command that wrote {source.parent}")
        self.pending[self.figures / name] = source.read_bytes()
        return f"![{caption}](figures/{name})"

    def plot(self, draw: Callable[[Any, Path], Path], data: Any, name: str, caption: str) -> str:
        """`draw(data, path)` into figures/`name`, with `data` (JSON-able: what it is drawn from) as its .json."""
        with tempfile.TemporaryDirectory() as scratch:
            link = self.figure(draw(data, Path(scratch) / name), name, caption)
        self.pending[self.figures / Path(name).with_suffix(".json").name] = (record_lines(data) + "\n").encode()
        return link

    def flush(self) -> None:
        for target, data in self.pending.items():
            atomic_write_bytes(target, lambda f, data=data: f.write(data))


def record_lines(value: Any, depth: int = 0) -> str:
    """JSON with each flat record (an object or array of scalars) on one line: a figure's data diffs record by
    record, at a third of the size of one key per line."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    if not any(isinstance(child, dict | list) for child in children):
        return json.dumps(value)
    inner, outer = " " * (depth + 1), " " * depth
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(key)}: {record_lines(child, depth + 1)}" for key, child in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{outer}}}"
    return "[\n" + ",\n".join(inner + record_lines(child, depth + 1) for child in value) + f"\n{outer}]"


def report_command(run_dirs: Sequence[str | Path], out: str | Path, degradation: str | Path | None,
                   responses: str | Path | None, depth: str | Path | None = None,
                   imagenette: str | Path | None = None, detection: str | Path | None = None,
                   preact: str | Path | None = None, pennfudan: str | Path | None = None) -> str:
    words = ["resnets", "report", *map(str, run_dirs)]
    for flag, value in (("--depth", depth), ("--preact", preact), ("--imagenette", imagenette),
                        ("--detection", detection), ("--pennfudan", pennfudan),
                        ("--degradation", degradation),
                        ("--responses", responses)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join([*words, "--out", str(out)])


def write_report(run_dirs: Sequence[str | Path], out: str | Path = "REPRODUCTION.md",
                 degradation: str | Path | None = None, responses: str | Path | None = None,
                 command: str | None = None, depth: str | Path | None = None,
                 imagenette: str | Path | None = None, detection: str | Path | None = None,
                 preact: str | Path | None = None, pennfudan: str | Path | None = None) -> Path:
    """Validate every input first (nothing is written if one is refused), then write `out` and figures/."""
    out = Path(out)
    runs = [load_run(path) for path in run_dirs]
    for run in runs:
        require_test_error(run, "report runs trained on the whole training set")
    if not runs and all(v is None for v in (degradation, responses, depth, preact, imagenette, detection, pennfudan)):
        raise ValueError("nothing to report: give run directories, --depth DIR, --preact DIR, --imagenette DIR, "
                         "--detection DIR, --pennfudan DIR, --degradation DIR or --responses DIR")
    series = load_series(depth) if depth is not None else None
    followup = load_series(preact) if preact is not None else None
    budgets = [] if imagenette is None else [  # each refuses runs without protocol results
        budget for budget in (load_fast_budget(Path(imagenette)), load_budget(
            Path(imagenette), "ImageNet in miniature, second budget: Tables 2 and 3, Fig. 4 with the paper-faithful "
            "`imagenette` recipe", "imagenette-fig4.png")) if budget is not None]
    transfer = load_detection_runs(detection) if detection is not None else None
    pedestrians = load_detection_runs(pennfudan) if pennfudan is not None else None
    fig6 = None
    if degradation is not None:
        fig6 = _read_degradation(Path(degradation))
        degradation_runs = load_runs(degradation, fig6["models"])
        fig6["recomputed"] = degradation_results(degradation_runs)
        fig6["setting"] = sorted({f"{data_copy(r.summary['data'])} on {hardware_brief(r.summary['hardware'])}"
                                  for r in degradation_runs.values()})
        if fig6["recomputed"]["verdict"] != fig6["verdict"]:
            raise RunDirectoryError(f"{degradation}/degradation.json disagrees with its run directories; rerun "
                                    f"`{fig6.get('command')}` (complete runs are skipped) to rewrite it")
    writer = ReportWriter(out)
    command = command or report_command(run_dirs, out, degradation, responses, depth, imagenette, detection, preact,
                                        pennfudan)
    parts = ["# Reproduction: measured results",
             "Generated by `resnets report` from the run directories named below; every number is read from "
             "their files or computed by the package. Regenerate this file with:",
             f"```\n{command}\n```",
             "## Table 1: ImageNet architectures (parameters, multiply-adds)",
             "Computed by `resnets.complexity` at 224x224 (conv and FC multiply-adds for one image), beside the "
             "paper's FLOPs row. v1 puts the bottleneck's stride on the first 1x1 (the paper), v1.5 on the 3x3 "
             "(torchvision); basic blocks are the same in both.",
             table1()]
    if series is not None:
        parts += _depth_section(writer, Path(depth), series)  # type: ignore[arg-type]
        parts += time_to_accuracy_section(Path(depth), writer.plot)  # and results/cifar-fast beside it
        parts += deep_time_to_accuracy_section(Path(depth), writer.plot)  # its ResNet-56/110, cifar-fast beside
    if followup is not None:
        parts += _preact_section(writer, Path(preact), followup)  # type: ignore[arg-type]
    for budget in budgets:
        parts += budget_section(writer.plot, budget)
    if imagenette is not None:
        parts += imagenette_time_to_accuracy_section(Path(imagenette), writer.plot)  # imagenette-fast beside it
        parts += shipped_protocols_section(Path(imagenette))  # imagenette-protocols beside it
    if transfer is not None:
        parts += detection_section(Path(detection), transfer, writer.plot,  # type: ignore[arg-type]
                                   real_photos=pedestrians is not None)
    if pedestrians is not None:
        parts += pennfudan_section(Path(pennfudan), pedestrians, writer.plot)  # type: ignore[arg-type]
    results = next((Path(folder).parent for folder in (depth, imagenette) if folder is not None), None)
    if results is not None:
        parts += shipped_check_section(results)  # results/shipped-check.json beside the series
    if runs:  # `resnet20-paper` and `degradation/resnet20`, not two runs both called `resnet20`
        common = Path(os.path.commonpath([run.path.resolve().parent for run in runs]))
        for run in runs:
            run.label = run.path.resolve().relative_to(common).as_posix()
    by_dataset: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_dataset.setdefault(run.summary["dataset"], []).append(run)
    header = ("run / model", "params", "test error (%)", "paper (%)", "recipe", "epochs", "wall time", "precision",
              "hardware", "data", "train / test images")
    for dataset, members in by_dataset.items():
        title = ("Table 6: CIFAR-10 test error" if dataset == "cifar10" and series is None
                 else f"Runs on {DATASET_NAMES.get(dataset)}")  # with a depth series, that section is Table 6
        jpeg = any("JPEG" in data_copy(run.summary["data"]) for run in members)
        parts += [f"## {title}", table(header, [run_row(run) for run in members]),
                  "Single 32x32 view of each test image; paper: Table 6 (option A shortcuts)."
                  + (" JPEG compression removes detail, so a JPEG copy costs test error against the official "
                     "binaries the paper used." if jpeg else ""), "### How each run was made"]
        for run in members:
            curves = writer.figure(run.paths.curves, f"{run.name.replace('/', '-')}-curves.png",
                                   f"{run.name} curves")
            parts += [f"- `{run.name}`: `{training_command(run.config)}`; {hardware_brief(run.summary['hardware'])}",
                      f"  {curves}"]
    if fig6 is not None:
        parts += _degradation_section(writer, Path(degradation), fig6)  # type: ignore[arg-type]
    if responses is not None:
        parts += _responses_section(writer, Path(responses))
    writer.flush()
    atomic_write_text(out, "\n\n".join(part for part in parts if part) + "\n")
    return out


def _series_table(series: dict[str, list[RunRecord]], rows: Sequence[dict[str, Any]], paper: str) -> str:
    """One row per network of a CIFAR series (`series_rows`): runs, test and training error as mean ± std."""
    params = {model: f"{parameter_count(runs[0].config['model_config']):,}" for model, runs in series.items()}
    body = [(row["label"], params[row["model"]], f"{len(row['seeds'])} ({', '.join(map(str, row['seeds']))})",
             plus_minus(row["test_errors"]), plus_minus(row["train_errors"]),
             "-" if row["paper_error"] is None else f"{row['paper_error']:.2f}",
             f"{duration(row['wall_seconds'])} ({duration(row['steady_seconds'])})", row["threads"],
             row["precision"]) for row in rows]
    return table(("net", "params", "runs (seeds)", "test error (%)", "final train error (%)", paper,
                  "wall time per run (at its median rate)", "threads", "precision"), body)


def _series_hardware(series: dict[str, list[RunRecord]]) -> str:
    return hardware_brief(*(run.summary["hardware"] for runs in series.values() for run in runs))


def _series_setting(folder: Path, series: dict[str, list[RunRecord]]) -> str:
    first = next(iter(series.values()))[0]
    return (f"Every run under `{folder}` (one directory per network and seed), all on one budget: "
            f"{schedule_of(first)} ({first.summary['epochs']:g} epochs); {data_copy(first.summary['data'])}; "
            f"{_series_hardware(series)}. Each run: `{training_command(first.config)}` with its "
            f"model and seed. Test error: single 32x32 view of all {first.summary['test_images']:,} test images "
            "after the last iteration; training error: the last epoch's augmented mini-batches in train mode. "
            "Mean ± sample std over the runs counted in the third column.")


def _depth_section(writer: ReportWriter, folder: Path, series: dict[str, list[RunRecord]]) -> list[str]:
    rows = series_rows(series)
    missing = [model for model in PAPER_DEPTH_SERIES if model not in series]
    anchor = [f"`{name}` ({meta['recipe']['name']} recipe, {meta.get('epochs') or meta['recipe']['iterations']:g}"
              f"{' epochs' if meta.get('epochs') else ' iterations'}, 1 run): {meta['test_top1_error']:.2f}%"
              for name, meta in list_pretrained().items()
              if meta.get("model") == "resnet20" and meta.get("dataset") == "cifar10"]
    figure = writer.plot(plot_error_curves, series_panels(series), "depth-series.png",
                         "Fig. 6: plain and residual nets of growing depth")
    return ["## Table 6 and Fig. 6: the depth series", _series_setting(folder, series),
            _series_table(series, rows, "paper (%, 64k it.)"),
            f"Not run yet (no complete run under `{folder}`): {', '.join(map(net_label, missing))}." if missing else "",
            "Anchor rows, shipped ResNet-20 weights (their metadata): " + "; ".join(anchor) + "."
            if anchor else "",
            figure,
            "Seed-mean curves. Dashed: training error; solid: test error.",
            "Verdicts (computed from the seed means):\n\n" + "\n".join(f"- {line}" for line in series_verdict(rows))]


def _preact_section(writer: ReportWriter, folder: Path, series: dict[str, list[RunRecord]]) -> list[str]:
    rows = preact_rows(series)
    figure = writer.plot(plot_error_curves, preact_panels(series), "preact-comparison.png",
                         "original vs pre-activation ResNet: training and test error")
    return ["## Identity Mappings (ECCV 2016): original vs pre-activation at the same depth",
            _series_setting(folder, series),
            _series_table(series, rows, "follow-up (%, CIFAR-10, 64k it.)"),
            figure, "Left: original (BN and ReLU after each convolution, ReLU after the addition); right: "
            "pre-activation (BN and ReLU before each convolution, nothing after the addition). Dashed: training "
            "error; solid: test error.",
            "Verdicts (computed from the data):\n\n" + "\n".join(f"- {line}" for line in preact_verdict(rows))]


def _read_degradation(folder: Path) -> dict[str, Any]:
    path = folder / "degradation.json"
    if not path.is_file():
        raise RunDirectoryError(f"{path} is missing; run `resnets experiment degradation --out {folder}` first")
    return read_run_json(path)


def _degradation_section(writer: ReportWriter, folder: Path, fig6: dict[str, Any]) -> list[str]:
    runs, statement = fig6["recomputed"]["runs"], fig6["budget"]["statement"]
    rows = [(r["label"], f"`{folder / name}`", f"{r['final_train_error']:.2f}", f"{r['final_test_error']:.2f}",
             f"{r['epochs']:g} ({r['iterations']:,} it.)" + ("" if r["complete"] else " incomplete"),
             duration(r["wall_seconds"]), r["precision"]) for name, r in runs.items()]
    return ["## Fig. 6: plain vs residual nets of growing depth (degradation)",
            f"Made by `{fig6['command']}`. {statement[0].upper()}{statement[1:]}. Data and hardware: "
            f"{'; '.join(fig6['setting'])}.",
            writer.figure(folder / "degradation.png", "degradation.png", "Fig. 6: degradation"),
            "Dashed: training error (augmented mini-batches, train mode); solid: test error.",
            table(("net", "run", "final train error (%, last epoch)", "test error (%)", "epochs", "wall time",
                   "precision"), rows),
            "Verdict (computed from the runs):\n\n" + "\n".join(f"- {line}" for line in
                                                                fig6["recomputed"]["verdict"]["lines"])]


def _responses_section(writer: ReportWriter, folder: Path) -> list[str]:
    series = read_responses_csv(folder / "responses.csv")
    provenance_path = folder / "responses.json"
    provenance = read_run_json(provenance_path) if provenance_path.is_file() else {}
    mean = {label: sum(stds) / len(stds) for label, stds in series.items()}
    rows = [(label, len(stds), f"{mean[label]:.3f}", f"{max(stds):.3f}") for label, stds in series.items()]
    claims = response_verdicts(mean)
    made_by = f"Made by `{provenance['command']}`. " if provenance.get("command") else ""
    return ["## Fig. 7: layer responses",
            f"{made_by}Std of each 3x3 layer's output after BN and before the addition/ReLU, over "
            f"{provenance.get('test_images', 'the')} test images; top: in layer order, bottom: sorted by magnitude.",
            writer.figure(folder / "responses_by_layer.png", "responses_by_layer.png", "Fig. 7 top"),
            writer.figure(folder / "responses_sorted.png", "responses_sorted.png", "Fig. 7 bottom"),
            table(("model", "3x3 layers", "mean std", "max std"), rows),
            "\n".join(f"- {claim}" for claim in claims)]
