"""The depth series (Table 6, Fig. 6 left and middle): plain and residual CIFAR-10 nets of growing depth, one
schedule for all, several seeds where affordable.

Input: a folder of finished run directories named `<model>-s<seed>` (what `resnets train --model M --seed S --out
DIR/M-sS` writes; `results/depth` holds the committed records: config, metrics, summary, curves). A network's
seeds are summarised as mean +- sample std (n-1), and every row says how many runs stand behind it. The curves are
the seed mean at the iterations every seed logged. The verdicts compare seed means: the paper's claims are that
deeper plain nets have higher training error (Fig. 6 left) and deeper ResNets lower training and test error
(Fig. 6 middle, Table 6: ResNet-110 < ResNet-56 < ... < ResNet-20).
"""

from __future__ import annotations

import functools
import itertools
import re
import statistics
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..models import model_spec
from ..models.specs import PAPER_CIFAR10_ERROR, ResNetSpec
from ..runs import RunDirectoryError, RunPaths, RunRecord, copy_records, load_run, require_test_error
from ..runtime import map_pinned, resolve_device
from ..train.recipes import Recipe, RunOptions, get_recipe, stretch
from .describe import thread_counts
from .experiments import final_train_error, label, train_or_resume, verdict

# The nets of Fig. 6 left and middle and Table 6 (ResNet-1202, Fig. 6 right, is beyond this machine).
PAPER_DEPTH_SERIES = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56",
                      "resnet110")
RUN_NAME = re.compile(r"^(?P<model>[a-z0-9_]+)-s(?P<seed>\d+)$")


def load_series(folder: str | Path, required: Collection[str] | None = None) -> dict[str, list[RunRecord]]:
    """model -> its finished runs, by seed; every run must be complete and all must share one schedule.
    `required`: only these run directories (by name) must be complete; an unfinished other is left out, since
    another series may be training it in the same folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirectoryError(f"{folder} is not a directory; give the folder holding <model>-s<seed> run "
                                "directories (e.g. results/depth)")
    series: dict[str, list[RunRecord]] = {}
    budgets: dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = RUN_NAME.match(path.name)
        if not match:
            continue
        if required is not None and path.name not in required and not RunPaths(path).is_complete():
            continue
        run = load_run(path)
        require_test_error(run, f"move it out of {folder}: a series compares test errors")
        model, seed = match["model"], int(match["seed"])
        if run.summary["model"] != model or run.config["options"].get("seed") != seed:
            raise RunDirectoryError(f"{path}: its name says {model} seed {seed}, its files say "
                                    f"{run.summary['model']} seed {run.config['options'].get('seed')}; rename it")
        if not run.summary["complete"]:
            raise RunDirectoryError(f"{path} stopped at {run.summary['iterations']:,} of "
                                    f"{run.summary['scheduled_iterations']:,} iterations; finish it with "
                                    f"`resnets train --resume --out {path}` or move it out of {folder}")
        budgets[path.name] = schedule_of(run)
        series.setdefault(model, []).append(run)
    if not series:
        raise RunDirectoryError(f"{folder} holds no <model>-s<seed> run directories")
    if len(set(budgets.values())) > 1:
        first = next(iter(budgets))
        odd = next(name for name, budget in budgets.items() if budget != budgets[first])
        raise RunDirectoryError(f"{folder}: {odd} was trained on another schedule than {first} ({budgets[odd]} vs "
                                f"{budgets[first]}); one series has one budget: move it to another folder")
    return dict(sorted(series.items(), key=lambda item: (model_spec(item[0]).residual, model_spec(item[0]).depth)))


def schedule_of(run: RunRecord) -> str:
    recipe = run.config["recipe"]
    return f"{recipe['name']} recipe, {run.summary['scheduled_iterations']:,} iterations, batch {recipe['batch_size']}"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def plus_minus(values: Sequence[float], spec: str = ".2f") -> str:
    """Mean ± sample std, each formatted by `spec`; a single value alone."""
    mean, std = mean_std(values)
    return format(mean, spec) if std is None else f"{format(mean, spec)} ± {format(std, spec)}"


def series_rows(series: Mapping[str, Sequence[RunRecord]]) -> list[dict[str, Any]]:
    """One row per network: seeds, test and final training error of each run, their means, wall time, precision."""
    rows = []
    for model, runs in series.items():
        spec = model_spec(model)
        test = [run.summary["test_top1_error"] for run in runs]
        train = [final_train_error(run.metrics, run.config["iterations_per_epoch"]) for run in runs]
        rows.append({"model": model, "label": label(model), "depth": spec.depth, "residual": spec.residual,
                     "seeds": [run.config["options"]["seed"] for run in runs], "test_errors": test,
                     "train_errors": train, "final_test_error": statistics.fmean(test),
                     "final_train_error": statistics.fmean(train),
                     "paper_error": PAPER_CIFAR10_ERROR.get(spec.depth) if spec.residual else None,
                     "wall_seconds": statistics.fmean(run.summary["wall_seconds"] for run in runs),
                     "steady_seconds": statistics.fmean(steady_seconds(run) for run in runs),
                     "threads": "/".join(map(str, thread_counts(*(run.summary["hardware"] for run in runs)))) or "?",
                     "precision": "/".join(sorted({run.summary["precision"] for run in runs}))})
    return rows


def steady_seconds(run: RunRecord) -> float:
    """The run's training time at its median logged rate: wall time without the pauses of a shared machine (a
    window that held a pause logs a low rate and does not move the median); evaluation time not included."""
    rates = [r["images_per_s"] for r in run.metrics if r.get("images_per_s")]
    images = run.summary["iterations"] * run.config["recipe"]["batch_size"]
    return images / statistics.median(rates) if rates else float("nan")


def series_verdict(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Deepest vs shallowest of each family (as Fig. 6 is read), then whether the order holds at every depth."""
    lines = list(verdict({row["model"]: row for row in rows})["lines"])
    claims = ((False, "final_train_error", "plain training error rises with every added depth", 1),
              (True, "final_train_error", "ResNet training error falls with every added depth", -1),
              (True, "final_test_error", "ResNet test error falls with every added depth", -1))
    for residual, key, claim, sign in claims:
        members = sorted((r for r in rows if r["residual"] == residual), key=lambda r: r["depth"])
        if len(members) < 3:
            continue
        holds = all(sign * (b[key] - a[key]) > 0 for a, b in itertools.pairwise(members))
        order = " -> ".join(f"{r['label']} {r[key]:.2f}" for r in members)
        lines.append(f"{claim}: {'yes' if holds else 'no'} ({order})")
    return lines


def mean_curve(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Seed mean of train and test error at the iterations every run logged (the schedule is the same)."""
    records = []
    for key in ("train_error", "test_error"):
        logged = [{r["iteration"]: r[key] for r in run.metrics if r.get(key) is not None} for run in runs]
        common = sorted(set.intersection(*(set(points) for points in logged)))
        records += [{"iteration": i, key: statistics.fmean(points[i] for points in logged)} for i in common]
    return sorted(records, key=lambda r: r["iteration"])


def series_panels(series: Mapping[str, Sequence[RunRecord]], titles: Sequence[str] = ("plain", "ResNet"),
                  panel_of: Callable[[ResNetSpec], str] = lambda spec: "ResNet" if spec.residual else "plain"
                  ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """What a series' figure shows (`plots.plot_error_curves` draws it: training error dashed, test error solid):
    panel title -> network (with its seed count) -> seed-mean curve, one panel per title in order (default: Fig. 6
    left, plain, and middle, ResNet); `panel_of` says which panel a network's spec belongs to."""
    panels: dict[str, dict[str, list[dict[str, Any]]]] = {title: {} for title in titles}
    for model, runs in series.items():
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        panels[panel_of(model_spec(model))][label(model) + seeds] = mean_curve(runs)
    return {title: runs for title, runs in panels.items() if runs}


def series_members(out: Path, models: Sequence[str], seeds: Sequence[int], family: str, which: str,
                   **options: Any) -> Iterator[tuple[Path, RunOptions, ResNetSpec]]:
    """(run directory out/<model>-s<seed>, its RunOptions, the model's spec) for every network and seed of a series;
    `options` are the RunOptions all of them share. A network of another family than `family` is refused."""
    for model, seed in itertools.product(models, seeds):
        spec = model_spec(model)
        if spec.family != family:
            raise ValueError(f"{model} is not a {family} network; {which}")
        run_dir = out / f"{model}-s{seed}"
        yield run_dir, RunOptions(model=model, out=str(run_dir), seed=seed, **options), spec


def map_series(function: Callable[[Any], Any], members: Sequence[Any], jobs: int, device: str) -> None:
    """`function(member)` for every member of a series, `jobs` networks at a time on their own CPU cores
    (`runtime.map_pinned`). Splitting cores is a CPU matter: on a GPU, one series per GPU does it."""
    if jobs > 1 and resolve_device(device).type != "cpu":
        raise ValueError(f"--jobs {jobs} splits the CPU's cores between networks; on {resolve_device(device)} "
                         "run one series per GPU instead (CUDA_VISIBLE_DEVICES=i resnets experiment ...)")
    map_pinned(function, members, jobs)


def train_cifar_member(member: tuple[Path, Recipe, RunOptions, Path | None],
                       log: Callable[[str], Any] = print) -> None:
    """One network of a CIFAR series: train, resume or skip it, then copy its records (module level: `--jobs`
    sends it to a worker process)."""
    run_dir, plan, options, records = member
    train_or_resume(run_dir, plan, options, log)
    if records is not None:
        copy_records(run_dir, records)


def train_cifar_series(out: str | Path, models: Sequence[str], seeds: Sequence[int], which: str,
                       recipe: str = "fast", precision: str = "fp32", compile: bool = False,
                       data: str | Path | None = None, device: str = "auto", records: str | Path | None = None,
                       epochs: float | None = None, progress: bool = True,
                       log: Callable[[str], Any] = print, jobs: int = 1) -> dict[str, list[RunRecord]]:
    """Train every CIFAR-10 network with every seed under `out` (<model>-s<seed>): a complete run is skipped, an
    interrupted one resumed, so the command can be re-run until the series is done, one sitting at a time.
    `records`: copy each complete run's small records (config, metrics, summary, curves) there, the folder
    `resnets report` reads. `epochs` shortens or lengthens the recipe (its schedule keeps its shape). `which` says,
    in the error for a non-CIFAR network, what the series takes. `jobs`: networks trained at once, each on its own
    CPU cores (`map_series`). Returns the series loaded back (`load_series`)."""
    out = Path(out)
    members = [(run_dir, stretch(get_recipe(recipe, depth=spec.depth), epochs), options,
                None if records is None else Path(records))
               for run_dir, options, spec in series_members(
                   out, models, seeds, "cifar", which, dataset="cifar10", data=None if data is None else str(data),
                   precision=precision, device=device, compile=compile, progress=progress)]
    map_series(functools.partial(train_cifar_member, log=log), members, jobs, device)
    return load_series(out, required={run_dir.name for run_dir, *_ in members})


def run_depth_series(out: str | Path, models: Sequence[str], seeds: Sequence[int], recipe: str = "fast",
                     precision: str = "fp32", compile: bool = False, data: str | Path | None = None,
                     device: str = "auto", records: str | Path | None = None, epochs: float | None = None,
                     progress: bool = True, log: Callable[[str], Any] = print, jobs: int = 1) -> list[str]:
    """The depth series (`train_cifar_series`, records e.g. results/depth); returns the verdict lines of what is
    complete so far."""
    series = train_cifar_series(out, models, seeds, "the depth series takes resnet<6n+2> and plain<6n+2>", recipe,
                                precision, compile, data, device, records, epochs, progress, log, jobs)
    lines = series_verdict(series_rows(series))
    for line in lines:
        log(line)
    return lines
