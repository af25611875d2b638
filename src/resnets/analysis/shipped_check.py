"""The report's check of the shipped weights: every shipped classifier on every test/validation image through
`create_model` + `preprocess`, from the record `benchmarks/check_shipped.py` writes (issue #35)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.paths import TEST_FOLDERS
from ..io import read_json
from ..models import list_pretrained
from .describe import table

RECORD = "shipped-check.json"
TOLERANCE = 0.1  # points: issue #35's "within 0.1 points" of the metadata


def shipped_check_section(results: Path) -> list[str]:
    """The section from results/shipped-check.json (nothing when absent). A file shipped or re-saved since the
    record was made (another SHA-256) is listed as not checked, never with the old file's number."""
    path = results / RECORD
    if not path.is_file():
        return []
    record: Mapping[str, Mapping[str, Any]] = read_json(path, "shipped-weights record")
    shipped = list_pretrained()
    rows, gaps, unchecked = [], {}, []
    for name in sorted(shipped):
        entry, stated = record.get(name), shipped[name]
        if entry is None or entry["sha256"] != stated["sha256"]:
            if "classes" in stated and stated.get("dataset") in TEST_FOLDERS:
                unchecked.append(name)
            continue
        gaps[name] = entry["top1_error"] - stated["test_top1_error"]
        rows.append((f"`{name}`", f"{entry['images']:,} ({entry['folder']})", f"{stated['test_top1_error']:.2f}",
                     f"{entry['top1_error']:.2f}", f"{round(gaps[name], 2) + 0:+.2f}", entry.get("cpu") or "-"))
    if not rows:
        return []
    worst = max(gaps, key=lambda name: abs(gaps[name]))
    holds = all(abs(gap) <= TOLERANCE + 1e-9 for gap in gaps.values())
    verdict = (f"every checked file gives the error in its metadata within {TOLERANCE:g} points: "
               f"{'yes' if holds else 'no'} (largest difference {gaps[worst]:+.2f}, `{worst}`)"
               + (f"; not checked since shipped or re-saved: {', '.join(f'`{n}`' for n in unchecked)}"
                  if unchecked else ""))
    return ["## The shipped weights, checked on every image",
            "Each shipped classifier through a loop that uses only `resnets.create_model` and `resnets.preprocess` "
            "(fp32) on every test (CIFAR-10) or validation (Imagenette) image, beside the top-1 error in its .json. "
            f"`python benchmarks/check_shipped.py --json results/{RECORD}`; the record holds each image's predicted "
            "class and the file's SHA-256, and tests/test_shipped_check.py runs a sixteenth of the images again.",
            table(("weights", "images", "error in its .json (%)", "measured (%)", "difference", "CPU"), rows),
            f"Verdict (computed from the data): {verdict}."]
