"""Time to accuracy: how soon each CIFAR-10 ResNet-20 recipe reaches a test error, from its committed records.

Inputs: the depth series' folder (`results/depth`: `resnet20-s<seed>` there are the old `fast` recipe, 30 epochs)
and, beside it, `cifar-fast/resnet20-s<seed>` (the new recipe), each evaluated on the test set once per epoch; a
folder that is missing or holds no finished ResNet-20 run is skipped and the report says so. The paper recipe left
no curve, only its shipped weights' metadata (`resnet20.paper`: final error, epochs, wall time): one point.
`tuning-cifar14/*` beside it are tuning probes scored on held-out training images: listed apart, never beside test
numbers or in the figure.

Per run: the curve (epoch, minutes, error at each evaluation; minutes are the trainer's `elapsed_s`, wall-clock as
recorded, evaluation and any pause of a shared machine included), the minutes and epoch of the first evaluation at
or below each threshold, the final error and the median logged images/s. Seeds: mean ± sample std, with the count.
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..models import list_pretrained
from ..plots import plot_time_to_accuracy
from ..runs import RunDirectoryError, RunPaths, RunRecord, load_run
from .depth import RUN_NAME, plus_minus, steady_seconds
from .describe import data_copy, duration, hardware_brief, table, training_command
from .experiments import label as net_label

MODEL = "resnet20"
THRESHOLDS = (15.0, 13.0)  # test error (%): the issue's milestones on the way to the paper recipe's 12.28
NEW_RECIPE_FOLDER = "cifar-fast"  # beside the depth folder: the new recipe's ResNet-20 runs, scored on the test set
TUNING_FOLDER = "tuning-cifar14"  # beside it too: held-out probes
PAPER_WEIGHTS = f"{MODEL}.paper"
CONTENDED = 0.75  # a run whose median rate is under this share of the fastest record's shared its CPU

Point = dict[str, float]
Plot = Callable[[Callable[[Any, Path], Path], Any, str, str], str]  # ReportWriter.plot


def curve(run: RunRecord, key: str = "test_error") -> list[Point]:
    """Each evaluation of `run`: epoch, wall-clock minutes as recorded, and its `key` error (%)."""
    return [{"epoch": r["epoch"], "minutes": r["elapsed_s"] / 60, key: r[key]} for r in run.metrics
            if r.get(key) is not None]


def reach(points: Sequence[Point], threshold: float, key: str = "test_error") -> Point | None:
    """Minutes and epoch of the first evaluation at or below `threshold`; None when no evaluation got there."""
    return next(({"minutes": p["minutes"], "epoch": p["epoch"]} for p in points if p[key] <= threshold), None)


def median_rate(run: RunRecord) -> float:
    """The median of the logged images/s windows: a pause slows a few windows and hardly moves it."""
    rates = [r["images_per_s"] for r in run.metrics if r.get("images_per_s")]
    return statistics.median(rates) if rates else float("nan")


def run_summary(run: RunRecord, key: str = "test_error") -> dict[str, Any]:
    """One run: its curve, the first evaluation at or below each threshold, final error, median rate, wall time."""
    points = curve(run, key)
    final = run.summary["test_top1_error"] if key == "test_error" else points[-1][key]
    return {"name": run.path.name, "path": run.path.as_posix(), "seed": run.config["options"].get("seed"),
            "epochs": run.summary["epochs"], "points": points, "final_error": final,
            "reached": {t: reach(points, t, key) for t in THRESHOLDS}, "images_per_s": median_rate(run),
            "wall_seconds": run.summary["wall_seconds"], "steady_seconds": steady_seconds(run),
            "hardware": run.summary["hardware"]}


def finished_runs(folder: Path, by_seed: bool = True) -> tuple[list[RunRecord], list[str]]:
    """The complete ResNet-20 runs in `folder` (`resnet20-s<seed>` directories when `by_seed`, any otherwise) and the
    names of the unfinished ones, left out (a series may be training there now)."""
    runs, unfinished = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else ():
        match = RUN_NAME.match(path.name)
        if by_seed and not (match and match["model"] == MODEL):
            continue
        if not RunPaths(path).is_complete():
            unfinished.append(path.name)
            continue
        run = load_run(path)
        if run.summary["model"] == MODEL:
            runs.append(run)
    return runs, unfinished


def recipe_label(folder: Path, runs: Sequence[RunRecord]) -> str:
    """"fast, 30 epochs": the recipe and length all runs of `folder` share (one folder, one recipe)."""
    kinds = sorted({(run.config["recipe"]["name"], run.summary["epochs"]) for run in runs})
    if len(kinds) > 1:
        raise RunDirectoryError(f"{folder}: its {MODEL} runs used different recipes or lengths ({kinds}); one "
                                "folder holds one recipe's runs: move the others to their own folder")
    name, epochs = kinds[0]
    return f"{name}, {epochs:g} epochs"


def load_test_series(folders: Sequence[Path]) -> tuple[dict[str, list[RunRecord]], list[str]]:
    """Recipe label -> its finished ResNet-20 runs, for each folder (one recipe each); and a line for each folder
    skipped or run left out."""
    series: dict[str, list[RunRecord]] = {}
    notes = []
    for folder in folders:
        runs, unfinished = finished_runs(folder)
        if unfinished:
            notes.append(f"`{folder}`: {', '.join(unfinished)} not finished, left out.")
        if not runs:
            notes.append(f"`{folder}`: no finished {MODEL}-s<seed> run recorded yet; no row, no curve.")
            continue
        series[recipe_label(folder, runs)] = runs
    return series, notes


def paper_point() -> dict[str, Any] | None:
    """The paper recipe's shipped ResNet-20 (final error, epochs, minutes, whole-run images/s); None if not shipped."""
    meta = list_pretrained().get(PAPER_WEIGHTS)
    if meta is None:
        return None
    images = meta["iterations"] * meta["recipe"]["batch_size"]
    return {"label": f"paper, {meta['epochs']:g} epochs: final only (no curve recorded)", "epochs": meta["epochs"],
            "minutes": meta["wall_seconds"] / 60, "test_error": meta["test_top1_error"],
            "images_per_s": images / meta["wall_seconds"], "hardware": meta["hardware"]}


def aggregate(label: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A recipe's runs (`run_summary`) as one row: the per-run values listed, for mean ± std."""
    return {"label": label, "runs": len(runs), "seeds": [r["seed"] for r in runs],
            "epochs": runs[0]["epochs"], "images_per_s": [r["images_per_s"] for r in runs],
            "wall_seconds": statistics.fmean(r["wall_seconds"] for r in runs),
            "steady_seconds": statistics.fmean(r["steady_seconds"] for r in runs),
            "reached": {t: [r["reached"][t] for r in runs] for t in THRESHOLDS},
            "final_errors": [r["final_error"] for r in runs]}


def reach_cell(reached: Sequence[Point | None]) -> str:
    """Minutes (epoch) over the runs that got there; "not reached" when none did, a count when only some did."""
    got = [r for r in reached if r is not None]
    if not got:
        return "not reached"
    minutes, epochs = ([r[key] for r in got] for key in ("minutes", "epoch"))
    text = f"{plus_minus(minutes, '.1f')} min (epoch {plus_minus(epochs, '.1f')})"
    missed = len(reached) - len(got)
    return text + (f"; not reached in {missed} of {len(reached)} runs" if missed else "")


def cpu_brief(*hardware: Mapping[str, Any]) -> str:
    """`hardware_brief`, with the CPU's vector extension and native bf16 where every record states them."""
    extras = {(h.get("cpu_capability"), h.get("cpu_native_bf16")) for h in hardware}
    capability, bf16 = next(iter(extras)) if len(extras) == 1 else (None, None)
    extra = ", ".join(filter(None, [capability, "native bf16" if bf16 else None]))
    return hardware_brief(*hardware) + (f" ({extra})" if extra else "")


def figure_data(series: Mapping[str, Sequence[Mapping[str, Any]]], paper: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the figure draws (`plots.plot_time_to_accuracy`): recipe -> run -> its test-error curve."""
    def rounded(points: Sequence[Point]) -> list[Point]:
        return [{key: round(value, 3) for key, value in p.items()} for p in points]

    data: dict[str, Any] = {"thresholds": list(THRESHOLDS)}
    if paper is not None:
        data["reference"] = {key: round(paper[key], 3) if key != "label" else paper[key]
                             for key in ("label", "epochs", "minutes", "test_error")}
    data["recipes"] = {label: {r["name"]: rounded(r["points"]) for r in runs} for label, runs in series.items()}
    return data


def contention_note(rates: Mapping[str, float]) -> str:
    """The records (`rates`: what -> images/s) well below the fastest one here: they shared their CPU."""
    where, fastest = max(rates.items(), key=lambda item: item[1])
    slow = [f"{what} ({rate:,.0f})" for what, rate in rates.items() if rate < CONTENDED * fastest]
    if not slow:
        return ""
    return (f"Contention: these records ran under {CONTENDED:.0%} of the fastest ResNet-20 record's rate here "
            f"({fastest:,.0f} img/s, {where}), so they shared their CPU with other jobs: {', '.join(slow)}. Their "
            "minutes are as recorded and overstate what the recipe takes alone; a wall time's bracket takes out "
            "pauses, not a slowdown that lasted the whole run.")


def tuning_table(folder: Path) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The held-out probes of `folder`: their table (changes from the named recipe, length, rate, held-out error),
    their `run_summary`s and a line for each unfinished one."""
    runs, unfinished = finished_runs(folder, by_seed=False)
    summaries, rows = [], []
    for run in runs:
        words = shlex.split(training_command(run.config))
        changes = [words[i + 1] for i, word in enumerate(words) if word == "--set"
                   and not words[i + 1].startswith(("epochs=", "val_split="))]
        row = run_summary(run, "val_error")
        data = run.summary["data"]
        summaries.append(row)
        rows.append((f"`{run.path.name}`", run.config["recipe"]["name"], ", ".join(changes) or "-",
                     f"{row['epochs']:g}", f"{data['train_images']:,} / {data['val_images']:,}",
                     f"{row['images_per_s']:,.0f}", duration(row["wall_seconds"]),
                     *(reach_cell([row["reached"][t]]) for t in THRESHOLDS), f"{row['final_error']:.2f}"))
    held_out = sorted({f"{run.summary['data']['val_images']:,}" for run in runs})
    text = (f"Tuning probes (held-out {' or '.join(held_out)} training images): every run under `{folder}`, scored "
            "once per epoch on training images kept out of its training. They chose the recipe; they are not test "
            "error and are not in the figure.\n\n"
            + table(("probe", "recipe", "changed (--set)", "epochs", "train / held-out images", "images/s (median)",
                     "wall time", *(f"to {t:g}% held-out error" for t in THRESHOLDS), "final held-out error (%)"),
                    rows)) if runs else ""
    return text, summaries, [f"`{folder}`: {', '.join(unfinished)} not finished, left out."] if unfinished else []


def recipe_table(rows: Sequence[Mapping[str, Any]], hardware: Mapping[str, Sequence[Mapping[str, Any]]],
                 paper: Mapping[str, Any] | None) -> str:
    """One row per recipe (`aggregate`), then the paper recipe's single point."""
    body = [(row["label"], f"{row['runs']} ({', '.join(map(str, row['seeds']))})", f"{row['epochs']:g}",
             plus_minus(row["images_per_s"], ",.0f"),
             f"{duration(row['wall_seconds'])} ({duration(row['steady_seconds'])})",
             *(reach_cell(row["reached"][t]) for t in THRESHOLDS), plus_minus(row["final_errors"]),
             cpu_brief(*hardware[row["label"]])) for row in rows]
    if paper is not None:
        by_end = f"≤ {paper['minutes']:.1f} min (final only)"
        body.append((paper["label"], f"1 (shipped `{PAPER_WEIGHTS}`)", f"{paper['epochs']:g}",
                     f"{paper['images_per_s']:,.0f} (whole run: images / wall time)", duration(paper["minutes"] * 60),
                     *(by_end if paper["test_error"] <= t else "not reached" for t in THRESHOLDS),
                     f"{paper['test_error']:.2f}", cpu_brief(paper["hardware"])))
    return table(("recipe", "runs (seeds)", "epochs", "images/s (median)", "wall time per run (at its median rate)",
                  *(f"to {t:g}% test error" for t in THRESHOLDS), "final test error (%)", "hardware"), body)


def time_to_accuracy_section(depth: Path, plot: Plot) -> list[str]:
    """The report's section from the depth folder and the recipe folders beside it: setting, table, figure (drawn
    by `plot`: ReportWriter.plot), notes, tuning probes. Empty when none holds a finished ResNet-20 run."""
    results = depth.parent
    folders = (depth, results / NEW_RECIPE_FOLDER)
    series, notes = load_test_series(folders)
    if not series:
        return []
    summaries = {label: [run_summary(run) for run in runs] for label, runs in series.items()}
    rows = [aggregate(label, runs) for label, runs in summaries.items()]
    paper = paper_point()
    tuning, probes, tuning_notes = tuning_table(results / TUNING_FOLDER)
    rates = {f"`{run['path']}`": run["images_per_s"] for runs in summaries.values() for run in runs}
    rates.update({f"probe `{probe['path']}`": probe["images_per_s"] for probe in probes})
    if paper is not None:
        rates[f"`{PAPER_WEIGHTS}`, whole run"] = paper["images_per_s"]
    gap = ([f"Final test error against the paper recipe's {paper['test_error']:.2f}% (mean): "
            + "; ".join(f"{row['label']} {statistics.fmean(row['final_errors']) - paper['test_error']:+.2f} points"
                        for row in rows) + "."] if paper is not None else [])
    first = next(iter(series.values()))[0]
    figure = plot(plot_time_to_accuracy, figure_data(summaries, paper), "time-to-accuracy.png",
                  "Time to accuracy: ResNet-20 test error against wall-clock minutes and epochs, by recipe")
    lines = [line for line in (contention_note(rates), *notes, *gap, *tuning_notes) if line]
    return [f"## Time to accuracy: {net_label(MODEL)} on CIFAR-10, by recipe",
            f"{net_label(MODEL)} runs of each recipe, "
            + ", ".join(f"`{folder}/{MODEL}-s<seed>`" for folder in folders)
            + f"; data: {data_copy(first.summary['data'])}. Each run is evaluated on all "
            f"{first.summary['test_images']:,} test images (single 32x32 view) once per epoch; the paper recipe is "
            "known by its shipped weights' metadata only. "
            "Minutes: the trainer's elapsed time at that evaluation, wall-clock as recorded (evaluation included). "
            f"Time to {' and '.join(f'{t:g}%' for t in THRESHOLDS)}: the first evaluation at or below it. Mean ± "
            "sample std over the runs counted in the second column; images/s: each run's median logged rate.",
            recipe_table(rows, {label: [r["hardware"] for r in runs] for label, runs in summaries.items()}, paper),
            figure,
            "Left: test error against wall-clock minutes as recorded; right: against epochs. One line per run, one "
            "colour per recipe; dotted, and the star at its wall time: the paper recipe's final error (no curve "
            "recorded); thin grey: "
            + " and ".join(f"{t:g}%" for t in THRESHOLDS) + ". The y axis stops at 40%.",
            "\n".join(f"- {line}" for line in lines), tuning]
