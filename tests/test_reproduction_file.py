"""The committed REPRODUCTION.md and figures/ are what `resnets report` makes from the committed results/: the
command at the top of REPRODUCTION.md is run again into a temporary folder and every line and every figure must
match. Figures the report draws are compared by their data (figures/<name>.json, the series drawn), and by their
pixels where this matplotlib is the one that drew the committed PNG (its Software tag); figures it copies from
results/ by their bytes. Then two edits to a copy of results/ show that the check sees a changed number and a
changed curve."""

from __future__ import annotations

import difflib
import json
import re
import shlex
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from resnets.analysis.report import write_report
from resnets.cli import build_parser

REPOSITORY = Path(__file__).resolve().parents[1]
COMMITTED = REPOSITORY / "REPRODUCTION.md"


def committed_command() -> str:
    """The command line in the first code block of REPRODUCTION.md."""
    match = re.search(r"^```\n(resnets report .+)\n```$", COMMITTED.read_text(), flags=re.M)
    assert match, f"{COMMITTED} has no ```resnets report ...``` block at its top"
    return match[1]


def regenerate(root: Path, out_dir: Path) -> Path:
    """Run the committed command with `root` as the working directory (its paths are relative: results/...), writing
    REPRODUCTION.md and figures/ into `out_dir`; the text still names the committed command."""
    command = committed_command()
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.out == "REPRODUCTION.md"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return write_report(args.run_dirs, out_dir / "REPRODUCTION.md", args.degradation, args.responses,
                            command=command, depth=args.depth, imagenette=args.imagenette,
                            detection=args.detection, preact=args.preact, pennfudan=args.pennfudan)


def matplotlib_of(png: Path) -> str:
    """The matplotlib version that wrote `png` ("Matplotlib version3.11.2, https://matplotlib.org/")."""
    with Image.open(png) as image:
        software = image.info.get("Software", "")
    match = re.match(r"Matplotlib version(\S+?),", software)
    return match[1] if match else ""


def pixels(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGBA"))


def differences(made: Path, committed: Path = REPOSITORY) -> list[str]:
    """Every way `made` (REPRODUCTION.md and figures/) differs from the committed files; [] when they agree."""
    found = [line for line in difflib.unified_diff((committed / "REPRODUCTION.md").read_text().splitlines(),
                                                   (made / "REPRODUCTION.md").read_text().splitlines(),
                                                   "committed", "regenerated", n=0, lineterm="")]
    committed_names = {path.name for path in (committed / "figures").iterdir()}
    made_names = {path.name for path in (made / "figures").iterdir()}
    found += [f"figures/{name}: committed, not made by the report" for name in sorted(committed_names - made_names)]
    found += [f"figures/{name}: made by the report, not committed" for name in sorted(made_names - committed_names)]
    for name in sorted(committed_names & made_names):
        old, new = committed / "figures" / name, made / "figures" / name
        if name.endswith(".json"):
            if json.loads(old.read_text()) != json.loads(new.read_text()):
                found.append(f"figures/{name}: the data differ")
        elif not (old.with_suffix(".json")).is_file():  # copied from results/: the same bytes
            if old.read_bytes() != new.read_bytes():
                found.append(f"figures/{name}: not a copy of what the report copies")
        elif matplotlib_of(old) == matplotlib.__version__:  # drawn here: the same pixels from the same matplotlib
            a, b = pixels(old), pixels(new)
            if a.shape != b.shape or not np.array_equal(a, b):
                found.append(f"figures/{name}: the pixels differ")
    return found


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduction")
    regenerate(REPOSITORY, out)
    return out


def test_committed_reproduction_file_is_what_the_report_makes(made: Path) -> None:
    """Fails on any difference: rerun the command at the top of REPRODUCTION.md and commit what it writes."""
    found = differences(made)
    assert not found, ("REPRODUCTION.md or figures/ differ from what `resnets report` makes from results/; rerun "
                       f"`{committed_command()}` and commit the result:\n" + "\n".join(found[:60]))


def test_every_drawn_figure_has_its_data(made: Path) -> None:
    """The nine figures the report draws carry the data they are drawn from; the others are copies."""
    drawn = sorted(path.stem for path in (made / "figures").glob("*.json"))
    assert drawn == ["depth-series", "detection-curves", "imagenette-fast-fig4", "imagenette-fig4", "pennfudan-curves",
                     "preact-comparison", "time-to-accuracy", "time-to-accuracy-deep", "time-to-accuracy-imagenette"]
    depth = json.loads((made / "figures" / "depth-series.json").read_text())
    assert list(depth) == ["plain", "ResNet"] and next(iter(depth["ResNet"])) == "ResNet-20 (3 seeds)"
    last = [r for r in depth["ResNet"]["ResNet-110"] if "test_error" in r][-1]
    summary = json.loads((REPOSITORY / "results" / "depth" / "resnet110-s0" / "summary.json").read_text())
    assert last == {"iteration": summary["iterations"], "test_error": summary["test_top1_error"]}


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    """A working directory holding a copy of the committed results/ (2 MB), for the report to read."""
    shutil.copytree(REPOSITORY / "results", tmp_path / "root" / "results")
    return tmp_path / "root"


def changed_lines(found: list[str]) -> tuple[list[str], list[str]]:
    """The lines a unified diff removes and adds, without their -/+."""
    return ([line[1:] for line in found if line.startswith("-") and not line.startswith("---")],
            [line[1:] for line in found if line.startswith("+") and not line.startswith("+++")])


def test_a_changed_summary_number_is_seen(made: Path, results_copy: Path, tmp_path: Path) -> None:
    """ResNet-56's test error (one seed) one point higher: its Table 6 row, the depth verdict that lists it, its
    row of the deeper nets' time-to-accuracy table and its recipe verdict there change, nothing else. Compared with
    the report made from the unchanged results/ (`made`), so that only the edit can differ."""
    summary_path = results_copy / "results" / "depth" / "resnet56-s0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    before, after = f"{summary['test_top1_error']:.2f}", f"{summary['test_top1_error'] + 1:.2f}"
    summary_path.write_text(json.dumps({**summary, "test_top1_error": summary["test_top1_error"] + 1}))
    out = tmp_path / "out"
    out.mkdir()
    removed, added = changed_lines(differences(regenerate(results_copy, out).parent, made))
    row = next(line for line in removed if line.startswith("| ResNet-56 |"))
    assert added[removed.index(row)] == row.replace(f"| {before} |", f"| {after} |", 1)
    deep = next(line for line in removed if line.startswith("| fast, 30 epochs | ResNet-56 |"))
    assert added[removed.index(deep)] == deep.replace(f"| {before} |", f"| {after} |", 1)
    recipes = next(line for line in added if line.startswith("- ResNet-56: `cifar-fast` better than `fast`: "))
    assert f"`fast` {after}% after" in recipes and f"`fast` {before}% after" in removed[added.index(recipes)]
    assert len(removed) == len(added) == 4
    verdict = next(line for line in added if line.startswith("- ResNet test error falls with every added depth: "))
    assert f"ResNet-56 {after} ->" in verdict and f"ResNet-56 {before} ->" in removed[added.index(verdict)]


def test_a_changed_curve_point_is_seen_in_the_figure_data(made: Path, results_copy: Path, tmp_path: Path) -> None:
    """One early training-error point of ResNet-18 on Imagenette, 1 point higher: no number in the text moves
    (the last-epoch error and the curve comparisons stay), only Fig. 4's data and pixels."""
    metrics_path = results_copy / "results" / "imagenette" / "resnet18-s0" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    first = next(r for r in records if r.get("train_error") is not None)
    first["train_error"] += 1.0
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    out.mkdir()
    assert differences(regenerate(results_copy, out).parent, made) == [
        "figures/imagenette-fig4.json: the data differ", "figures/imagenette-fig4.png: the pixels differ"]
