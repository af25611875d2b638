"""The follow-up's comparison ("Identity Mappings in Deep Residual Networks", He et al., ECCV 2016): the original
(post-activation) ResNet against the pre-activation one at the same depth, trained with the same recipe on
CIFAR-10, and whether pre-activation trains to lower training error and tests better, computed from the runs.

Input: a folder of finished `<model>-s<seed>` run directories, as for the depth series (`resnets experiment preact`
writes them; `results/preact` holds the committed records). Several seeds are summarised as mean +- std.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..models import model_spec
from ..models.specs import followup_error
from ..runs import RunRecord
from .depth import series_panels, series_rows, train_cifar_series

PREACT_MODELS = ("resnet164", "preact_resnet164")


def preact_rows(series: Mapping[str, Sequence[RunRecord]]) -> list[dict[str, Any]]:
    """`series_rows` with each network's kind and the follow-up's CIFAR-10 error for it (None where it has none)."""
    rows = series_rows(series)
    for row in rows:
        spec = model_spec(row["model"])
        row["preact"] = spec.preact
        row["paper_error"] = followup_error("cifar10", spec.preact, spec.depth)
    return rows


def preact_verdict(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """At every depth with both kinds: does pre-activation end with lower training error, and lower test error?"""
    lines = []
    by_depth: dict[int, dict[bool, Mapping[str, Any]]] = {}
    for row in rows:
        if row["residual"]:
            by_depth.setdefault(row["depth"], {})[row["preact"]] = row
    for depth, pair in sorted(by_depth.items()):
        if len(pair) < 2:
            continue
        original, preact = pair[False], pair[True]
        runs = f"{len(original['seeds'])} and {len(preact['seeds'])} runs"
        for key, what in (("final_train_error", "trains to lower training error"),
                          ("final_test_error", "has lower test error")):
            holds = preact[key] < original[key]
            lines.append(f"pre-activation {what} at depth {depth}: {'yes' if holds else 'no'} "
                         f"({preact['label']} {preact[key]:.2f} vs {original['label']} {original[key]:.2f}, {runs})")
    if not lines:
        lines.append("no depth has both an original and a pre-activation network: nothing to compare")
    return lines


def preact_panels(series: Mapping[str, Sequence[RunRecord]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The comparison's figure (`depth.series_panels`): original networks left, pre-activation right."""
    return series_panels(series, ("original (post-activation)", "pre-activation"),
                         lambda spec: "pre-activation" if spec.preact else "original (post-activation)")


def run_preact_comparison(out: str | Path, models: Sequence[str] = PREACT_MODELS, seeds: Sequence[int] = (0,),
                          recipe: str = "fast", precision: str = "fp32", compile: bool = False,
                          data: str | Path | None = None, device: str = "auto", records: str | Path | None = None,
                          epochs: float | None = None, progress: bool = True,
                          log: Callable[[str], Any] = print, jobs: int = 1) -> list[str]:
    """Train (or resume, or skip) every network and seed under `out`, `jobs` at a time; returns the verdict lines
    so far."""
    series = train_cifar_series(out, models, seeds, "the comparison takes CIFAR nets, e.g. resnet164 "
                                "preact_resnet164", recipe, precision, compile, data, device, records, epochs,
                                progress, log, jobs)
    lines = preact_verdict(preact_rows(series))
    for line in lines:
        log(line)
    return lines
