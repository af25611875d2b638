"""`resnets experiment degradation` (Sec. 4.2, Fig. 6): plain-20/56 and ResNet-20/56 on CIFAR-10 under one budget,
their training (dashed) and test (solid) error against iterations, and whether depth hurts the plain nets'
training error and helps the ResNets'.

Budget: the paper's schedule (64k iterations, lr /10 at 32k and 48k) by default; `budget` epochs keeps its shape
(lr /10 at 50% and 75% of the run, where 32k and 48k fall in 64k). Each network trains in its own run directory
under `out`; a complete run is kept, an interrupted one resumed, so the command can be re-run until it finishes.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, read_json
from ..models import model_spec
from ..plots import plot_error_curves
from ..runs import RunPaths, decide_resume, load_run, require_test_error
from ..train.plan import RunPlan
from ..train.recipes import Recipe, RunOptions, get_recipe, stretch

DEGRADATION_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
PAPER_ITERATIONS = 64_000
PAPER_EPOCHS = PAPER_ITERATIONS * 128 / 50_000  # 163.84: batch 128 over the 50k training images


def degradation_recipe(budget: float | None, depth: int) -> Recipe:
    recipe = get_recipe("paper", depth=depth)
    if budget is None:
        return recipe
    if budget <= 0:
        raise ValueError(f"--budget is a number of epochs > 0, got {budget:g}")
    return stretch(recipe, budget)


def budget_statement(budget: float | None, iterations: int | None, train_images: int | None = None) -> str:
    paper = f"{PAPER_ITERATIONS:,} iterations, about {PAPER_EPOCHS:.0f} epochs, lr /10 at 32k and 48k"
    subset = f", on a subset of {train_images:,} training images" if train_images and train_images < 50_000 else ""
    if budget is None:
        return f"budget: the paper's schedule ({paper}){subset}"
    its = f" = {iterations:,} iterations" if iterations else ""
    relation = "shorter than" if budget < PAPER_EPOCHS else "not shorter than"
    return (f"budget: {budget:g} epochs{its}, lr /10 at 50% and 75%{subset}; {relation} the paper's "
            f"{PAPER_EPOCHS:.0f} epochs ({paper})")


def degradation_command(out: str | Path, models: Sequence[str], budget: float | None, precision: str,
                        data: str | Path | None, subset: int | None, eval_subset: int | None,
                        compile: bool = False) -> str:
    """The command line that (re)makes this experiment, recorded in degradation.json and the report."""
    words = ["resnets", "experiment", "degradation", "--out", str(out)]
    if tuple(models) != DEGRADATION_MODELS:
        words += ["--models", *models]
    for flag, value in (("--budget", budget), ("--data", data), ("--subset", subset),
                        ("--eval-subset", eval_subset)):
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if precision != "fp32":
        words += ["--precision", precision]
    if compile:
        words.append("--compile")
    return shlex.join(words)


def check_same_plan(run_dir: Path, recipe: Recipe, options: RunOptions) -> None:
    """A run directory made under another budget or subset must not be silently resumed or reported as this one."""
    config_path = RunPaths(run_dir).config
    if not config_path.is_file():
        return
    config = read_json(config_path, "run config")
    theirs = config.get("options", {})
    differs = [key for key in ("model", "seed", "subset", "eval_subset") if theirs.get(key) != getattr(options, key)]
    theirs_recipe, ours_recipe = config.get("recipe") or {}, recipe.to_dict()
    # Only fields both know: a field added to Recipe since the run started must not orphan a resumable run.
    if any(theirs_recipe[k] != ours_recipe[k] for k in theirs_recipe.keys() & ours_recipe.keys()):
        differs.append("recipe/budget")
    if differs:
        raise ValueError(f"{run_dir} holds a run with another {', '.join(differs)} than this experiment; "
                         "use another --out or delete that directory")


def train_or_resume(run_dir: Path, recipe: Recipe, options: RunOptions, log: Callable[[str], Any]) -> str:
    """One network of an experiment: skipped when complete, resumed when it has a checkpoint, trained otherwise;
    refused when the directory holds another plan. Returns what was done."""
    from ..train.classify import train  # the training stack is heavy; importing it only here keeps the CLI fast

    check_same_plan(run_dir, recipe, options)
    if RunPaths(run_dir).is_complete():
        log(f"{run_dir.name}: complete in {run_dir}, skipped")
        return "skipped (complete)"
    resume = decide_resume("auto", run_dir)
    log(f"{run_dir.name}: {'resuming' if resume else 'training'} in {run_dir}")
    train(RunPlan(dataclasses.replace(options, out=str(run_dir), resume=resume), recipe))
    return "resumed" if resume else "trained"


def run_degradation(out: str | Path = "runs/degradation", models: Sequence[str] = DEGRADATION_MODELS,
                    budget: float | None = None, precision: str = "fp32", data: str | Path | None = None,
                    subset: int | None = None, eval_subset: int | None = None, device: str = "auto",
                    max_iterations: int | None = None, progress: bool = True, compile: bool = False,
                    log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train (or resume, or skip) each network, then write degradation.png and degradation.json; returns the JSON.

    max_iterations stops every run early without changing its schedule (smoke tests); a later call resumes it.
    """
    out = Path(out)
    if not models:
        raise ValueError("--models needs at least one model name")
    statuses: dict[str, str] = {}
    for name in models:
        spec = model_spec(name)
        if spec.family != "cifar":
            raise ValueError(f"{name} is not a CIFAR network; the degradation experiment takes plain<6n+2> and "
                             f"resnet<6n+2> (default {' '.join(DEGRADATION_MODELS)})")
        run_dir = out / name
        recipe = degradation_recipe(budget, spec.depth)
        options = RunOptions(model=name, dataset="cifar10", data=None if data is None else str(data),
                             out=str(run_dir), precision=precision, device=device, subset=subset,
                             eval_subset=eval_subset, max_iterations=max_iterations, progress=progress,
                             compile=compile)
        statuses[name] = train_or_resume(run_dir, recipe, options, log)
    command = degradation_command(out, models, budget, precision, data, subset, eval_subset, compile)
    result = write_degradation(out, models, budget, command)
    result["status"] = statuses
    for line in [result["budget"]["statement"], *result["verdict"]["lines"]]:
        log(line)
    log(f"figure: {out / 'degradation.png'}; results: {out / 'degradation.json'}")
    return result


def last_epoch_mean(records: Sequence[Mapping[str, Any]], iterations_per_epoch: int, key: str) -> float:
    """`key` (train_error, train_loss) over the last epoch: the logged windows that end within it, weighted by their
    iterations."""
    logged = [r for r in records if r.get(key) is not None]
    if not logged:
        raise ValueError(f"no {key} records")
    last = logged[-1]["iteration"]
    window = [r for r in logged if r["iteration"] > last - iterations_per_epoch]
    weights = [r.get("iterations") or 1 for r in window]
    return sum(r[key] * w for r, w in zip(window, weights, strict=True)) / sum(weights)


def final_train_error(records: Sequence[Mapping[str, Any]], iterations_per_epoch: int) -> float:
    """Training error over the last epoch (`last_epoch_mean`)."""
    return last_epoch_mean(records, iterations_per_epoch, "train_error")


def label(name: str) -> str:
    spec = model_spec(name)
    return f"{'pre-act ' if spec.preact else ''}{'ResNet' if spec.residual else 'plain'}-{spec.depth}"


def load_runs(out: str | Path, models: Sequence[str]) -> dict[str, Any]:
    """The validated run directory of each network (see report.load_run)."""
    runs = {name: load_run(Path(out) / name) for name in models}
    for run in runs.values():
        require_test_error(run, "train the networks on the whole training set for this figure")
    return runs


def degradation_results(runs: Mapping[str, Any]) -> dict[str, Any]:
    """Per-network final errors and the Fig. 6 verdict from loaded run directories (no writes)."""
    results: dict[str, Any] = {}
    for name, run in runs.items():
        spec = model_spec(name)
        results[name] = {
            "label": label(name), "run_dir": name, "depth": spec.depth, "residual": spec.residual,
            "final_train_error": round(final_train_error(run.metrics, run.config["iterations_per_epoch"]), 3),
            "final_test_error": run.summary["test_top1_error"], "iterations": run.summary["iterations"],
            "scheduled_iterations": run.summary["scheduled_iterations"], "epochs": run.summary["epochs"],
            "complete": run.summary["complete"], "wall_seconds": run.summary["wall_seconds"],
            "precision": run.summary["precision"], "test_images": run.summary["test_images"],
            "train_images": run.summary["data"].get("train_images"),
        }
    return {"runs": results, "verdict": verdict(results)}


def shallowest_and_deepest(rows: Iterable[Mapping[str, Any]], residual: bool
                           ) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The shallowest and the deepest row of one family (plain or residual), or None without two depths."""
    members = sorted((r for r in rows if r["residual"] == residual), key=lambda r: r["depth"])
    if len(members) < 2 or members[0]["depth"] == members[-1]["depth"]:
        return None
    return members[0], members[-1]


def verdict(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Deepest vs shallowest of each family: the paper's claims are plain-56 > plain-20 in training error and
    ResNet-56 < ResNet-20 in training and test error."""
    result: dict[str, Any] = {"lines": []}
    for family, residual in (("plain", False), ("resnet", True)):
        pair = shallowest_and_deepest(runs.values(), residual)
        if pair is None:
            result["lines"].append(f"{family}: not measured (needs two depths)")
            continue
        shallow, deep = pair

        def compare(key: str, deep: Mapping[str, Any] = deep, shallow: Mapping[str, Any] = shallow) -> str:
            return f"{deep['label']} {deep[key]:.2f}% vs {shallow['label']} {shallow[key]:.2f}%"

        entry: dict[str, Any] = {"deeper": deep["label"], "shallower": shallow["label"]}
        if not residual:
            entry["deeper_has_higher_train_error"] = deep["final_train_error"] > shallow["final_train_error"]
            entry["text"] = [f"deeper plain net has higher training error than the shallower one: "
                             f"{'yes' if entry['deeper_has_higher_train_error'] else 'no'} "
                             f"({compare('final_train_error')})"]
        else:
            entry["deeper_has_lower_train_error"] = deep["final_train_error"] < shallow["final_train_error"]
            entry["deeper_has_lower_test_error"] = deep["final_test_error"] < shallow["final_test_error"]
            entry["text"] = [f"deeper ResNet has lower training error: "
                             f"{'yes' if entry['deeper_has_lower_train_error'] else 'no'} "
                             f"({compare('final_train_error')})",
                             f"deeper ResNet has lower test error: "
                             f"{'yes' if entry['deeper_has_lower_test_error'] else 'no'} "
                             f"({compare('final_test_error')})"]
        result[family] = entry
        result["lines"].extend(entry["text"])
    return result


def write_degradation(out: str | Path, models: Sequence[str], budget: float | None, command: str) -> dict[str, Any]:
    """degradation.png (Fig. 6: plain and ResNet panels) and degradation.json from the run directories in `out`."""
    out = Path(out)
    runs = load_runs(out, models)
    result = degradation_results(runs)
    panels: dict[str, dict[str, list[dict[str, Any]]]] = {"plain": {}, "ResNet": {}}
    for name, run in runs.items():
        panels["ResNet" if model_spec(name).residual else "plain"][label(name)] = run.metrics
    plot_error_curves({k: v for k, v in panels.items() if v}, out / "degradation.png")
    scheduled = {r["scheduled_iterations"] for r in result["runs"].values()}
    train_images = {r["train_images"] for r in result["runs"].values()}
    iterations = scheduled.pop() if len(scheduled) == 1 else None
    images = train_images.pop() if len(train_images) == 1 else None
    document = {
        "experiment": "degradation (Fig. 6)", "command": command, "models": list(models),
        "budget": {"epochs": budget, "scheduled_iterations": iterations, "paper_iterations": PAPER_ITERATIONS,
                   "paper_epochs": round(PAPER_EPOCHS), "train_images": images,
                   "statement": budget_statement(budget, iterations, images)},
        **result, "figure": "degradation.png",
    }
    atomic_write_json(out / "degradation.json", document)
    return document
