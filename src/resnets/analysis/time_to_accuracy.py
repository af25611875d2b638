"""Time to accuracy: how soon each recipe reaches an error, from its committed records; here the CIFAR-10 ResNet-20
section, and the parts it shares with the Imagenette one (`time_to_accuracy_imagenette`) through a `Task`.

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

import dataclasses
import itertools
import math
import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..models import list_pretrained
from ..plots import plot_time_to_accuracy
from ..runs import RunDirectoryError, RunPaths, RunRecord, load_run
from .depth import RUN_NAME, plus_minus, steady_seconds
from .describe import cpu_name, data_copy, duration, hardware_brief, table, training_command
from .experiments import label as net_label
from .experiments import last_epoch_mean


@dataclasses.dataclass(frozen=True)
class Task:
    """One time-to-accuracy comparison: which runs it reads, beside which folder, and what it measures."""

    models: tuple[str, ...]  # the networks whose runs count: one table row per recipe folder and network
    thresholds: tuple[float, ...]  # error milestones (%): the first evaluation at or below each
    beside: tuple[str, ...]  # the other recipes' folders, beside the named one (table order: named one first)
    tuning: str  # beside it too: held-out probes, listed apart
    figure: str  # the figure's file name
    error: str = "test error"  # what the trainer's `key` error is called in the table
    key: str = "test_error"  # the metrics.jsonl key of that error
    ymax: float = 40.0  # the figure's top (%): the first epochs above it are cut, every final error is below it
    optional: tuple[str, ...] = ()  # more folders beside it, read where they exist and unsaid where they do not

    @property
    def names(self) -> str:
        """`resnet20`, or `{plain18,resnet18}` for several networks: as run directories are named before -s<seed>."""
        return self.models[0] if len(self.models) == 1 else "{" + ",".join(self.models) + "}"

    def label(self, recipe: str, model: str) -> str:
        """A row's or curve's name: the recipe alone when the task has one network."""
        return recipe if len(self.models) == 1 else f"{recipe}: {net_label(model)}"


MODEL = "resnet20"
CIFAR = Task(models=(MODEL,), thresholds=(15.0, 13.0),  # the issue's milestones on the way to the paper's 12.28
             beside=("cifar-fast",), tuning="tuning-cifar14", figure="time-to-accuracy.png")
PAPER_WEIGHTS = f"{MODEL}.paper"
CONTENDED = 0.75  # a run whose median rate is under this share of the fastest record's shared its CPU

Point = dict[str, float]
Plot = Callable[[Callable[[Any, Path], Path], Any, str, str], str]  # ReportWriter.plot
Key = tuple[str, str]  # (recipe label, model): one row of a table


def curve(run: RunRecord, key: str = "test_error") -> list[Point]:
    """Each evaluation of `run`: epoch, wall-clock minutes as recorded, and its `key` error (%)."""
    return [{"epoch": r["epoch"], "minutes": r["elapsed_s"] / 60, key: r[key]} for r in run.metrics
            if r.get(key) is not None]


def last_epoch_training(run: RunRecord) -> dict[str, float] | None:
    """Mean training loss and error (%) over the run's last epoch (`experiments.last_epoch_mean`); None when it
    logged no training loss."""
    try:
        return {key: last_epoch_mean(run.metrics, run.config["iterations_per_epoch"], key)
                for key in ("train_loss", "train_error")}
    except ValueError:
        return None


def reach(points: Sequence[Point], threshold: float, key: str = "test_error") -> Point | None:
    """Minutes and epoch of the first evaluation at or below `threshold`; None when no evaluation got there."""
    return next(({"minutes": p["minutes"], "epoch": p["epoch"]} for p in points if p[key] <= threshold), None)


def cadence(points: Sequence[Point]) -> str:
    """How often a curve was evaluated: "once per epoch", "every 2 epochs" (the most common spacing)."""
    gaps = [round(b["epoch"] - a["epoch"], 3) for a, b in itertools.pairwise(points)]
    step = statistics.mode(gaps) if gaps else 1.0
    return "once per epoch" if step == 1 else f"every {step:g} epochs"


def median_rate(run: RunRecord) -> float:
    """The median of the logged images/s windows: a pause slows a few windows and hardly moves it."""
    rates = [r["images_per_s"] for r in run.metrics if r.get("images_per_s")]
    return statistics.median(rates) if rates else float("nan")


def run_summary(run: RunRecord, thresholds: Sequence[float] = CIFAR.thresholds,
                key: str = "test_error") -> dict[str, Any]:
    """One run: its curve, the first evaluation at or below each threshold, final error, median rate, wall time."""
    points = curve(run, key)
    final = run.summary["test_top1_error"] if key == "test_error" else points[-1][key]
    return {"name": run.path.name, "path": run.path.as_posix(), "seed": run.config["options"].get("seed"),
            "model": run.summary["model"], "recipe": run.config["recipe"]["name"], "settings": run.config["recipe"],
            "shortcut": shortcut_of(run),
            "epochs": run.summary["epochs"], "points": points, "final_error": final,
            "last_epoch_training": last_epoch_training(run),
            "reached": {t: reach(points, t, key) for t in thresholds}, "images_per_s": median_rate(run),
            "wall_seconds": run.summary["wall_seconds"], "steady_seconds": steady_seconds(run),
            "hardware": run.summary["hardware"], "precision": run.summary.get("precision")}


def finished_runs(folder: Path, task: Task = CIFAR, by_seed: bool = True) -> tuple[list[RunRecord], list[str]]:
    """The complete runs of the task's networks in `folder` (`<model>-s<seed>` directories when `by_seed`, any
    otherwise) and the names of the unfinished ones, left out (a series may be training there now)."""
    runs, unfinished = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else ():
        match = RUN_NAME.match(path.name)
        if by_seed and not (match and match["model"] in task.models):
            continue
        if not RunPaths(path).is_complete():
            unfinished.append(path.name)
            continue
        run = load_run(path)
        if run.summary["model"] in task.models:
            runs.append(run)
    return runs, unfinished


def shortcut_of(run: RunRecord) -> str:
    """The run's shortcut option as its model config records it: "A" to "C", or "none" for a plain net."""
    return run.config["model_config"].get("shortcut", "A")


def recipe_label(folder: Path, runs: Sequence[RunRecord], task: Task = CIFAR) -> str:
    """"fast, 30 epochs": the recipe and length all runs of `folder` share (one folder, one recipe), and ", option B"
    when its residual nets have projection shortcuts (Table 3's options B/C; option A, Table 2's, goes unsaid)."""
    kinds = sorted({(run.config["recipe"]["name"], run.summary["epochs"]) for run in runs})
    options = sorted({shortcut_of(run) for run in runs} - {"none"})
    if len(kinds) > 1 or len(options) > 1:
        raise RunDirectoryError(f"{folder}: its {task.names} runs used different recipes, lengths or shortcut "
                                f"options ({kinds}, {options}); one folder holds one recipe's runs: move the others "
                                "to their own folder")
    name, epochs = kinds[0]
    return f"{name}, {epochs:g} epochs" + (f", option {options[0]}" if options and options != ["A"] else "")


def load_test_series(folders: Sequence[Path], task: Task = CIFAR) -> tuple[dict[Key, list[RunRecord]], list[str]]:
    """(recipe label, model) -> its finished runs, for each folder (one recipe each) and network of the task, in
    that order; and a line for each folder skipped or run left out."""
    series: dict[Key, list[RunRecord]] = {}
    notes = []
    for folder in folders:
        runs, unfinished = finished_runs(folder, task)
        if unfinished:
            notes.append(f"`{folder}`: {', '.join(unfinished)} not finished, left out.")
        if not runs:
            notes.append(f"`{folder}`: no finished {task.names}-s<seed> run recorded yet; no row, no curve.")
            continue
        recipe = recipe_label(folder, runs, task)
        for model in task.models:  # two folders of one recipe and length: one row
            series.setdefault((recipe, model), []).extend(run for run in runs if run.summary["model"] == model)
    series = {key: runs for key, runs in series.items() if runs}
    return series, notes


def paper_point() -> dict[str, Any] | None:
    """The paper recipe's shipped ResNet-20 (final error, epochs, minutes, whole-run images/s); None if not shipped."""
    meta = list_pretrained().get(PAPER_WEIGHTS)
    if meta is None:
        return None
    images = meta["iterations"] * meta["recipe"]["batch_size"]
    return {"label": f"paper, {meta['epochs']:g} epochs: final only (no curve recorded)", "epochs": meta["epochs"],
            "minutes": meta["wall_seconds"] / 60, "test_error": meta["test_top1_error"],
            "images_per_s": images / meta["wall_seconds"], "hardware": meta["hardware"],
            "precision": meta.get("precision")}


def aggregate(key: Key, runs: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = CIFAR.thresholds
              ) -> dict[str, Any]:
    """A recipe's runs of one network (`run_summary`) as one row: the per-run values listed, for mean ± std."""
    label, model = key
    return {"label": label, "model": model, "recipe": runs[0]["recipe"], "runs": len(runs),
            "seeds": [r["seed"] for r in runs], "epochs": runs[0]["epochs"],
            "images_per_s": [r["images_per_s"] for r in runs],
            "wall_seconds": statistics.fmean(r["wall_seconds"] for r in runs),
            "steady_seconds": statistics.fmean(r["steady_seconds"] for r in runs),
            "reached": {t: [r["reached"][t] for r in runs] for t in thresholds},
            "final_errors": [r["final_error"] for r in runs]}


def runs_of(found: Measured, recipe: str, model: str, shortcut: str = "A") -> list[dict[str, Any]]:
    """Every finished run (`run_summary`) of `model` under the named `recipe` with that shortcut option, whatever
    its length or folder."""
    return [run for (_, name), runs in found.summaries.items() if name == model for run in runs
            if run["recipe"] == recipe and run["shortcut"] == shortcut]


def sampling_noise(errors: Sequence[float], images: int) -> float:
    """Two standard errors (points) of the difference of two test errors (%) on `images` test images each: how far
    two nets of equal true error can land apart from the finite test set alone (seed-to-seed spread comes on top)."""
    return 200 * math.sqrt(sum(e / 100 * (1 - e / 100) / images for e in errors))


def gap_state(error: float, other: float, images: int) -> str:
    """Is `error` lower than `other` (mean errors, %, each on `images` test images)? "yes" / "no", or "level" when
    the gap is inside the test set's sampling noise (`sampling_noise`): a finite test set cannot tell."""
    gap = error - other
    return "level" if abs(gap) < sampling_noise((error, other), images) else "yes" if gap < 0 else "no"


def gap_verdict(error: float, other: float, images: int, test_set: str = "test images") -> str:
    """`gap_state` with the gap in points, and the noise it is inside of when level."""
    gap, state = error - other, gap_state(error, other, images)
    verdict = f"{state}, {abs(gap):.2f} points {'lower' if gap < 0 else 'higher'}"
    if state == "level":
        noise = sampling_noise((error, other), images)
        verdict += (f", within the {images:,} {test_set}' sampling noise ({noise:.2f} points: two standard errors of "
                    "the difference)")
    return verdict


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


def figure_data(summaries: Mapping[Key, Sequence[Mapping[str, Any]]], paper: Mapping[str, Any] | None,
                task: Task = CIFAR) -> dict[str, Any]:
    """What the figure draws (`plots.plot_time_to_accuracy`): curve label -> run -> its error curve."""
    def rounded(points: Sequence[Point]) -> list[Point]:
        return [{key: round(value, 3) for key, value in p.items()} for p in points]

    data: dict[str, Any] = {"thresholds": list(task.thresholds), "ylabel": f"{task.error} (%)", "ymax": task.ymax}
    if paper is not None:
        data["reference"] = {key: round(paper[key], 3) if key != "label" else paper[key]
                             for key in ("label", "epochs", "minutes", "test_error")}
    data["recipes"] = {task.label(*key): {r["name"]: rounded(r["points"]) for r in runs}
                       for key, runs in summaries.items()}
    return data


def machine(record: Mapping[str, Any]) -> str:
    """The kind of machine a record ran on, as far as it says (CPU model, precision): rates compare only within one,
    since these sittings' CPUs differ several-fold (bf16 is native on some and emulated on others)."""
    hardware = record.get("hardware") or {}
    traits = [hardware.get("cpu_capability")] + ["native bf16"] * bool(hardware.get("cpu_native_bf16"))
    device = (hardware.get("gpu") or cpu_name(hardware)
              or "a CPU of unrecorded model" + (f" ({', '.join(t for t in traits if t)})" if any(traits) else ""))
    return f"{device}, {record.get('precision') or 'unrecorded precision'}"


def contention_note(rates: Mapping[str, float], what: str = net_label(MODEL), where: str = "") -> str:
    """The records (`rates`: what -> images/s) well below the fastest `what` record of the same machine (`where`):
    they shared their CPU."""
    fastest_record, fastest = max(rates.items(), key=lambda item: item[1])
    slow = [f"{record} ({rate:,.0f})" for record, rate in rates.items() if rate < CONTENDED * fastest]
    if not slow:
        return ""
    return (f"Contention: these records ran under {CONTENDED:.0%} of the fastest {what} record's rate "
            f"{f'on {where} ' if where else 'here '}({fastest:,.0f} img/s, {fastest_record}), so they shared their "
            f"CPU with other jobs: {', '.join(slow)}. Their minutes are as recorded and overstate what the recipe "
            "takes alone; a wall time's bracket takes out pauses, not a slowdown that lasted the whole run.")


def contention_notes(records: Mapping[str, Mapping[str, Any]], what: str = net_label(MODEL)) -> list[str]:
    """`contention_note` within each kind of machine (`machine`) of `records` (name -> a `run_summary`)."""
    groups: dict[str, dict[str, float]] = {}
    for name, record in records.items():
        groups.setdefault(machine(record), {})[name] = record["images_per_s"]
    return [note for where, rates in groups.items() if (note := contention_note(rates, what, where))]


def contention_lines(found: Measured) -> list[str]:
    """`contention_notes` within each recipe and network (probes with their recipe's runs): the networks and
    recipes run at their own rates, so only records of the same pair are compared."""
    groups: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for run in (run for runs in found.summaries.values() for run in runs):
        groups.setdefault((run["recipe"], run["model"]), {})[f"`{run['path']}`"] = run
    for probe in found.probes:
        groups.setdefault((probe["recipe"], probe["model"]), {})[f"probe `{probe['path']}`"] = probe
    return [note for (recipe, model), records in groups.items()
            for note in contention_notes(records, f"{net_label(model)} `{recipe}`")]


def tuning_table(folder: Path, task: Task = CIFAR) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The held-out probes of `folder`: their table (network when the task has several, changes from the named
    recipe, length, rate, held-out error), their `run_summary`s and a line for each unfinished one."""
    runs, unfinished = finished_runs(folder, task, by_seed=False)
    several = len(task.models) > 1
    summaries, rows = [], []
    for run in runs:
        words = shlex.split(training_command(run.config))
        changes = [words[i + 1] for i, word in enumerate(words) if word == "--set"
                   and not words[i + 1].startswith(("epochs=", "val_split="))]
        row = run_summary(run, task.thresholds, "val_error")
        data = run.summary["data"]
        summaries.append(row)
        rows.append((f"`{run.path.name}`", *([net_label(row["model"])] if several else []),
                     run.config["recipe"]["name"], ", ".join(changes) or "-",
                     f"{row['epochs']:g}", f"{data['train_images']:,} / {data['val_images']:,}",
                     f"{row['images_per_s']:,.0f}", machine(row), duration(row["wall_seconds"]),
                     *(reach_cell([row["reached"][t]]) for t in task.thresholds), f"{row['final_error']:.2f}"))
    held_out = sorted({f"{run.summary['data']['val_images']:,}" for run in runs})
    every = sorted({cadence(row["points"]) for row in summaries})
    text = (f"Tuning probes (held-out {' or '.join(held_out)} training images): every run under `{folder}`, scored "
            f"{' or '.join(every)} on training images kept out of its training. They chose the recipe; they are not "
            f"{task.error} and are not in the figure.\n\n"
            + table(("probe", *(["net"] if several else []), "recipe", "changed (--set)", "epochs",
                     "train / held-out images", "images/s (median)", "on", "wall time",
                     *(f"to {t:g}% held-out error" for t in task.thresholds), "final held-out error (%)"),
                    rows)) if runs else ""
    return text, summaries, [f"`{folder}`: {', '.join(unfinished)} not finished, left out."] if unfinished else []


def recipe_table(rows: Sequence[Mapping[str, Any]], hardware: Mapping[Key, Sequence[Mapping[str, Any]]],
                 paper: Mapping[str, Any] | None, task: Task = CIFAR) -> str:
    """One row per recipe and network (`aggregate`), then the paper recipe's single point."""
    several = len(task.models) > 1
    body = [(row["label"], *([net_label(row["model"])] if several else []),
             f"{row['runs']} ({', '.join(map(str, row['seeds']))})", f"{row['epochs']:g}",
             plus_minus(row["images_per_s"], ",.0f"),
             f"{duration(row['wall_seconds'])} ({duration(row['steady_seconds'])})",
             *(reach_cell(row["reached"][t]) for t in task.thresholds), plus_minus(row["final_errors"]),
             cpu_brief(*hardware[row["label"], row["model"]])) for row in rows]
    if paper is not None:
        by_end = f"≤ {paper['minutes']:.1f} min (final only)"
        body.append((paper["label"], f"1 (shipped `{PAPER_WEIGHTS}`)", f"{paper['epochs']:g}",
                     f"{paper['images_per_s']:,.0f} (whole run: images / wall time)", duration(paper["minutes"] * 60),
                     *(by_end if paper["test_error"] <= t else "not reached" for t in task.thresholds),
                     f"{paper['test_error']:.2f}", cpu_brief(paper["hardware"])))
    return table(("recipe", *(["net"] if several else []), "runs (seeds)", "epochs", "images/s (median)",
                  "wall time per run (at its median rate)", *(f"to {t:g}% {task.error}" for t in task.thresholds),
                  f"final {task.error} (%)", "hardware"), body)


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a section shows, read from the named folder and the task's folders beside it."""

    folders: tuple[Path, ...]  # the recipe folders read, named one first
    first: RunRecord  # the first finished run: the data and test set all runs share
    summaries: dict[Key, list[dict[str, Any]]]  # (recipe label, model) -> its runs' `run_summary`
    rows: list[dict[str, Any]]  # one `aggregate` per key
    notes: list[str]  # folders skipped and runs left out
    tuning: str  # the probes' table ("" when none)
    probes: list[dict[str, Any]]  # their `run_summary`s
    tuning_notes: list[str]  # probes left out

    def table(self, task: Task, paper: Mapping[str, Any] | None = None) -> str:
        hardware = {key: [r["hardware"] for r in runs] for key, runs in self.summaries.items()}
        return recipe_table(self.rows, hardware, paper, task)


def measure(folder: Path, task: Task) -> Measured | None:
    """The task's runs in `folder` and the recipe folders beside it, with the probes; None when no folder holds a
    finished run of the task's networks."""
    results = folder.parent
    folders = (folder, *(results / name for name in task.beside),
               *(results / name for name in task.optional if (results / name).is_dir()))
    series, notes = load_test_series(folders, task)
    if not series:
        return None
    summaries = {key: [run_summary(run, task.thresholds, task.key) for run in runs] for key, runs in series.items()}
    tuning, probes, tuning_notes = tuning_table(results / task.tuning, task)
    return Measured(folders, next(iter(series.values()))[0], summaries,
                    [aggregate(key, runs, task.thresholds) for key, runs in summaries.items()], notes, tuning,
                    probes, tuning_notes)


def time_to_accuracy_section(depth: Path, plot: Plot) -> list[str]:
    """The report's section from the depth folder and the recipe folders beside it: setting, table, figure (drawn
    by `plot`: ReportWriter.plot), notes, tuning probes. Empty when none holds a finished ResNet-20 run."""
    found = measure(depth, CIFAR)
    if found is None:
        return []
    paper = paper_point()
    records = {f"`{run['path']}`": run for runs in found.summaries.values() for run in runs}
    records.update({f"probe `{probe['path']}`": probe for probe in found.probes})
    if paper is not None:
        records[f"`{PAPER_WEIGHTS}`, whole run"] = paper
    gap = ([f"Final test error against the paper recipe's {paper['test_error']:.2f}% (mean): "
            + "; ".join(f"{row['label']} {statistics.fmean(row['final_errors']) - paper['test_error']:+.2f} points"
                        for row in found.rows) + "."] if paper is not None else [])
    figure = plot(plot_time_to_accuracy, figure_data(found.summaries, paper), CIFAR.figure,
                  "Time to accuracy: ResNet-20 test error against wall-clock minutes and epochs, by recipe")
    lines = [line for line in (*contention_notes(records), *found.notes, *gap, *found.tuning_notes) if line]
    return [f"## Time to accuracy: {net_label(MODEL)} on CIFAR-10, by recipe",
            f"{net_label(MODEL)} runs of each recipe, "
            + ", ".join(f"`{folder}/{MODEL}-s<seed>`" for folder in found.folders)
            + f"; data: {data_copy(found.first.summary['data'])}. Each run is evaluated on all "
            f"{found.first.summary['test_images']:,} test images (single 32x32 view) once per epoch; the paper "
            "recipe is known by its shipped weights' metadata only. "
            "Minutes: the trainer's elapsed time at that evaluation, wall-clock as recorded (evaluation included). "
            f"Time to {' and '.join(f'{t:g}%' for t in CIFAR.thresholds)}: the first evaluation at or below it. "
            "Mean ± sample std over the runs counted in the second column; images/s: each run's median logged rate.",
            found.table(CIFAR, paper),
            figure,
            "Left: test error against wall-clock minutes as recorded; right: against epochs. One line per run, one "
            "colour per recipe; dotted, and the star at its wall time: the paper recipe's final error (no curve "
            "recorded); thin grey: "
            + " and ".join(f"{t:g}%" for t in CIFAR.thresholds) + f". The y axis stops at {CIFAR.ymax:g}%.",
            "\n".join(f"- {line}" for line in lines), found.tuning]
