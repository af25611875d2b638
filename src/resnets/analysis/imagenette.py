"""ImageNet in miniature (Table 2, Table 3, Fig. 4 of Sec. 4.1) on Imagenette: plain-18/34 and ResNet-18/34
(option A shortcuts, as in Table 2) on one schedule, the `imagenette` recipe (Sec. 3.4 scaled to 112px crops),
each trained network then tested on the validation photos with the three protocols of Sec. 3.4 (`center`,
`10crop`, `multiscale` at the paper's scales times 112/224).

Run directories are named `<model>-s<seed>` as in the CIFAR depth series (`depth.load_series` reads both); each
holds `protocols.json` beside the usual records. Paper numbers for the reference column: Table 2's top-1 10-crop
validation error on ImageNet, which Imagenette's 10 classes do not reproduce in scale, only in direction.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluate.protocols import DEFAULT_FCN_REDUCTION, PROTOCOLS
from ..evaluate.run import evaluate_checkpoint
from ..io import atomic_write_json, read_json
from ..models import model_spec
from ..models.specs import PAPER_IMAGENET_TOP1_10CROP
from ..runs import RunDirectoryError, RunPaths, RunRecord, copy_records
from ..train.recipes import RunOptions, get_recipe, stretch
from .depth import load_series, map_series, mean_curve, series_members, series_rows, series_verdict
from .experiments import shallowest_and_deepest, train_or_resume

IMAGENETTE_MODELS = ("plain18", "plain34", "resnet18", "resnet34")
PROTOCOLS_FILE = "protocols.json"
_COMMON_KEYS = ("top1_error", "top5_error", "images", "views_per_image", "seconds")
# multi-scale records name their score-map reduction; records without it used "softmax_then_mean" (issue 36)
PROTOCOL_KEYS = {"center": _COMMON_KEYS, "10crop": _COMMON_KEYS,
                 "multiscale": (*_COMMON_KEYS, "per_scale_top1_error", "fcn_reduction")}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_protocols(run_dir: Path, data: str | Path | None = None, device: str = "auto",
                       precision: str = "fp32", log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Top-1/top-5 validation error of the run's final weights under each protocol, written to protocols.json;
    each protocol's entry is reused when the file belongs to these weights (its sha256) and precision and holds all
    its keys (multi-scale: with the default score-map reduction, recorded as fcn_reduction)."""
    weights = RunPaths(run_dir).weights
    if not weights.is_file():
        raise RunDirectoryError(f"{run_dir} has no {weights.name}: the run is not complete; finish it first")
    digest, path = file_sha256(weights), run_dir / PROTOCOLS_FILE
    previous = read_json(path, "protocol results") if path.is_file() else {}
    same = (previous.get("weights_sha256"), previous.get("precision")) == (digest, precision)
    results = previous.get("protocols", {}) if same else {}
    record = {"weights_sha256": digest, "precision": precision, "source": previous.get("source") if same else None,
              "protocols": results}
    for protocol in PROTOCOLS:
        done = results.get(protocol, {})
        current = done.get("fcn_reduction", DEFAULT_FCN_REDUCTION) == DEFAULT_FCN_REDUCTION  # multiscale's only
        if set(PROTOCOL_KEYS[protocol]) <= set(done) and current:
            continue  # measured on these weights already (each protocol is saved as soon as it is done)
        result = evaluate_checkpoint(run_dir, data=None if data is None else str(data),
                                     dataset="imagenette", precision=precision, device=device, protocol=protocol,
                                     num_workers=2, batch_size=50, progress=False)
        results[protocol] = {key: result[key] for key in PROTOCOL_KEYS[protocol]}
        log(f"{run_dir.name} {protocol}: top-1 {result['top1_error']:.2f}%, top-5 {result['top5_error']:.2f}% "
            f"({result['images']} images, {result['seconds']:.0f} s)")
        record["source"] = result["source"]
        atomic_write_json(path, record)
    return record


def train_and_test_member(member: tuple[Path, RunOptions, Path | None], data: str | Path | None, device: str,
                          precision: str, epochs: float | None, log: Callable[[str], Any] = print,
                          recipe: str = "imagenette") -> None:
    """One network of the series: train (or resume, or skip) it, test it with the three protocols, copy its records
    (module level: `--jobs` sends it to a worker process)."""
    run_dir, options, records = member
    train_or_resume(run_dir, stretch(get_recipe(recipe), epochs), options, log)
    evaluate_protocols(run_dir, data, device, precision, log)
    if records is not None:
        copy_records(run_dir, records, extra=(PROTOCOLS_FILE,))


def run_imagenette_series(out: str | Path, models: Sequence[str] = IMAGENETTE_MODELS, seeds: Sequence[int] = (0,),
                          precision: str = "fp32", compile: bool = False, data: str | Path | None = None,
                          device: str = "auto", records: str | Path | None = None, epochs: float | None = None,
                          progress: bool = True, log: Callable[[str], Any] = print, jobs: int = 1,
                          recipe: str = "imagenette", shortcut: str = "A", **overrides: Any) -> list[str]:
    """Train (or resume, or skip when complete) every network and seed under `out`/<model>-s<seed>, `jobs` at a
    time (`depth.map_series`), test each with the three protocols, and copy the records (with protocols.json) to
    `records` (e.g. results/imagenette). `overrides` are RunOptions fields (subset, eval_subset, ... for smoke
    runs). `recipe`: one ImageNet-family recipe for every network (the paper-faithful `imagenette` by default, or
    `imagenette-fast`; keep one recipe per `out` folder). `shortcut`: the residual nets' option, A as in Table 2, or
    B/C for Table 3's rows (their own `out` and `records`, e.g. results/imagenette-fast/option-B; residual nets
    only). Returns the verdict lines."""
    if get_recipe(recipe).family != "imagenet":
        raise ValueError(f"recipe {recipe!r} is not an ImageNet-family recipe; use imagenette or imagenette-fast")
    plain = [model for model in models if not model_spec(model).residual]
    if shortcut != "A" and plain:
        raise ValueError(f"--shortcut {shortcut} is for residual nets (Table 3); {', '.join(plain)} has no shortcut: "
                         "train it in the option A series")
    out = Path(out)
    members = []
    for run_dir, options, spec in series_members(
            out, models, seeds, "imagenet", "this series takes plain18/34, resnet18/34, ...", dataset="imagenette",
            data=None if data is None else str(data), precision=precision, device=device, compile=compile,
            progress=progress, **overrides):
        # Table 2 compares plain nets with option A ResNets; Table 3 adds B and C
        options = dataclasses.replace(options, shortcut=shortcut if spec.residual else None)
        members.append((run_dir, options, None if records is None else Path(records)))
    map_series(functools.partial(train_and_test_member, data=data, device=device, precision=precision,
                                 epochs=epochs, log=log, recipe=recipe), members, jobs, device)
    lines = imagenette_verdicts(load_series(out, required={run_dir.name for run_dir, *_ in members}))
    for line in lines:
        log(line)
    return lines


def protocol_results(run: RunRecord, elsewhere: Mapping[Path, Mapping[str, Any]] | None = None
                     ) -> tuple[dict[str, dict[str, Any]], str]:
    """Protocol -> result of the run's final weights, and what was tested: the run's protocols.json first, else
    `elsewhere[run.path]` (records of the same weights tested elsewhere, e.g. the shipped copy:
    `shipped_protocols.tested_as_shipped`)."""
    path = run.path / PROTOCOLS_FILE
    if path.is_file():
        record = read_json(path, "protocol results")
        return record["protocols"], f"the run's weights, {record['precision']}"
    if elsewhere and run.path in elsewhere:
        first = next(iter(elsewhere[run.path].values()))
        return dict(elsewhere[run.path]), f"`{first['weights']}` (shipped copy), {first['precision']}"
    raise RunDirectoryError(f"{run.path} has no {PROTOCOLS_FILE}; run `resnets experiment imagenette` again "
                            "(complete runs are only tested) to write it")


def protocol_rows(series: Mapping[str, Sequence[RunRecord]],
                  elsewhere: Mapping[Path, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per network: seed-mean top-1 and top-5 validation error under each protocol, multi-scale's top-1 error
    of each scale alone (`multiscale_per_scale`, shorter side -> %, None when a record predates it) and what was
    tested (`tested_with`). `elsewhere`: as `protocol_results`."""
    rows = []
    for model, runs in series.items():
        results, tested_with = zip(*(protocol_results(run, elsewhere) for run in runs), strict=True)
        row: dict[str, Any] = {"model": model, "runs": len(runs), "paper_10crop": PAPER_IMAGENET_TOP1_10CROP.get(model),
                               "tested_with": "; ".join(sorted(set(tested_with)))}
        for protocol in PROTOCOLS:
            for key in ("top1_error", "top5_error"):
                row[f"{protocol}_{key}"] = statistics.fmean(r[protocol][key] for r in results)
        per_scale = [r["multiscale"].get("per_scale_top1_error") for r in results]  # absent in older records
        row["multiscale_per_scale"] = ({side: statistics.fmean(p[side] for p in per_scale) for side in per_scale[0]}
                                       if all(per_scale) else None)
        # records written before the reduction was recorded averaged softmax over positions (then the default)
        row["multiscale_reduction"] = sorted({r["multiscale"].get("fcn_reduction", "softmax_then_mean")
                                              for r in results})
        rows.append(row)
    return rows


def protocol_verdicts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sec. 3.4's ordering of the protocols, on the mean top-1 error over the networks (and per network)."""
    lines = []
    for better, worse, claim in (("10crop", "center", "10-crop testing is better than a single centre crop"),
                                 ("multiscale", "10crop", "multi-scale testing is better than 10-crop")):
        ours = statistics.fmean(row[f"{better}_top1_error"] for row in rows)
        theirs = statistics.fmean(row[f"{worse}_top1_error"] for row in rows)
        wins = sum(row[f"{better}_top1_error"] < row[f"{worse}_top1_error"] for row in rows)
        lines.append(f"{claim}: {'yes' if ours < theirs else 'no'} (mean top-1 over the {len(rows)} nets "
                     f"{ours:.2f}% vs {theirs:.2f}%; better for {wins} of {len(rows)})")
    return lines


def same_depth_verdicts(train_rows: Sequence[Mapping[str, Any]], test_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Table 2's own comparison: at each depth trained in both families, the residual net against the plain one on
    10-crop top-1 validation error (the paper's column), with both final training errors beside it."""
    by_depth: dict[int, dict[bool, Mapping[str, Any]]] = {}
    for row in train_rows:
        by_depth.setdefault(row["depth"], {})[row["residual"]] = row
    tested = {row["model"]: row for row in test_rows}
    lines = []
    for depth, pair in sorted(by_depth.items()):
        if len(pair) < 2:
            continue
        plain, residual = pair[False], pair[True]
        ours, theirs = (tested[r["model"]]["10crop_top1_error"] for r in (residual, plain))
        paper = [PAPER_IMAGENET_TOP1_10CROP.get(r["model"]) for r in (residual, plain)]
        cited = f" (ImageNet: {paper[0]:.2f}% vs {paper[1]:.2f}%)" if None not in paper else ""
        holds = "yes" if ours < theirs else "no"
        lines.append(f"at {depth} layers the residual net beats the plain one{cited}: {holds} "
                     f"({residual['label']} {ours:.2f}% vs {plain['label']} {theirs:.2f}% 10-crop top-1; final "
                     f"training error {residual['final_train_error']:.2f}% vs {plain['final_train_error']:.2f}%)")
    return lines


def curve_comparisons(series: Mapping[str, Sequence[RunRecord]], train_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a depth verdict came out as it did, read off Fig. 4: in each family, how often along the run the deeper
    net's training error was above the shallower one's (a deeper net behind all the way is still converging at
    this budget, not over-fitting), and their means over the last quarter of the logged points."""
    lines = []
    for residual in (False, True):
        pair = shallowest_and_deepest(train_rows, residual)
        if pair is None:
            continue
        shallow, deep = pair
        curves = [{r["iteration"]: r["train_error"] for r in mean_curve(series[row["model"]]) if "train_error" in r}
                  for row in (deep, shallow)]
        common = sorted(set(curves[0]) & set(curves[1]))
        if not common:
            continue
        above = sum(curves[0][i] > curves[1][i] for i in common)
        tail = common[-max(1, len(common) // 4):]
        means = [statistics.fmean(curve[i] for i in tail) for curve in curves]
        lines.append(f"along the run (Fig. 4), {deep['label']}'s training error is above {shallow['label']}'s at "
                     f"{above} of {len(common)} logged points (last quarter: {means[0]:.2f}% vs {means[1]:.2f}%)")
    return lines


def imagenette_verdicts(series: Mapping[str, Sequence[RunRecord]],
                        elsewhere: Mapping[Path, Mapping[str, Any]] | None = None) -> list[str]:
    """Table 2 / Fig. 4 (deeper plain trains worse, deeper ResNet better, residual beats plain at equal depth, with
    the curves' account of each family) and the protocol ordering of Table 3. `elsewhere`: as `protocol_results`."""
    return verdicts_of_rows(series, series_rows(series), protocol_rows(series, elsewhere))


def verdicts_of_rows(series: Mapping[str, Sequence[RunRecord]], train_rows: Sequence[Mapping[str, Any]],
                     test_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`imagenette_verdicts` from rows already made (`depth.series_rows`, `protocol_rows`)."""
    return (series_verdict(train_rows) + same_depth_verdicts(train_rows, test_rows)
            + curve_comparisons(series, train_rows) + protocol_verdicts(test_rows))
