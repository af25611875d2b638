"""`resnets report --pennfudan`: the Penn-Fudan section (Mask R-CNN, box and mask AP) from fabricated run
directories (2 backbones x 2 seeds, AP values chosen here; no detector is trained). Expected table cells are means and
sample standard deviations worked out by hand; the verdict must flip when the two backbones swap values; the curves
figure draws the test-split box and mask AP."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from resnets import plots
from resnets.analysis.report import report_command, write_report
from resnets.cli import main
from resnets.detection.train import PENNFUDAN_RECIPE
from resnets.runs import RunDirectoryError

HARDWARE = {"device": "cpu", "world_size": 1, "torch": "2.14.1+cu130", "cpu": "x86_64", "cpu_count": 2, "threads": 2}
SPLIT = {"train": [f"FudanPed{i:05d}" for i in range(120)], "test": [f"PennPed{i:05d}" for i in range(50)]}
# box AP@[.5:.95], box AP@.5, mask AP@[.5:.95], mask AP@.5 (%), train seconds, per run
VALUES = {
    "plain18": [(40.0, 70.0, 35.0, 60.0, 1800.0), (44.0, 74.0, 36.0, 66.0, 1920.0)],
    "resnet18": [(46.0, 75.0, 38.5, 70.0, 2400.0), (47.0, 80.0, 41.5, 70.0, 2520.0)],
}
# by hand: mean ± sample std; e.g. plain18 box AP (40, 44): 42, sqrt(((-2)^2 + 2^2) / 1) = sqrt(8) = 2.83
ROWS = {
    "plain18": "| plain18 | imagenette | 2 (0, 1) | 42.00 ± 2.83 | 72.00 ± 2.83 | 35.50 ± 0.71 | 63.00 ± 4.24 "
               "| 31.0 min |",
    "resnet18": "| resnet18 | imagenette | 2 (0, 1) | 46.50 ± 0.71 | 77.50 ± 3.54 | 40.00 ± 2.12 | 70.00 ± 0.00 "
                "| 41.0 min |",
}
VERDICT = ("residual backbone transfers better (resnet18 vs plain18): {answer} (mAP@[.5:.95] {mine} vs {other}, "
           "mAP@.5 {mine50} vs {other50}, mask mAP@[.5:.95] {mask} vs {other_mask}; 2 and 2 run(s))")


def scores(split: str, values: tuple[float, ...]) -> dict[str, float]:
    box, box50, mask, mask50 = values[:4]
    return {f"{split}_map": box, f"{split}_map_50": box50, f"{split}_map_75": box - 5, f"{split}_mask_map": mask,
            f"{split}_mask_map_50": mask50, f"{split}_mask_map_75": mask - 5}


def fabricate(folder: Path, values: dict[str, list[tuple[float, ...]]] = VALUES, split: str = "test",
              photos: dict[str, list[str]] = SPLIT) -> Path:
    """Run directories as `resnets experiment detection` on Penn-Fudan writes them: summary, config, metrics."""
    recipe = json.loads(json.dumps(asdict(PENNFUDAN_RECIPE)))
    for backbone, runs in values.items():
        for seed, run in enumerate(runs):
            run_dir = folder / f"{backbone}-s{seed}"
            run_dir.mkdir(parents=True)
            summary = {"complete": True, "iterations": 420, "backbone": backbone, "backbone_source": "imagenette",
                       "form": "fpn", "kind": "mask_rcnn", "recipe": "pennfudan", "seed": seed, "eval_split": split,
                       f"{split}_images": 50, "train_images": 120, "train_seconds": run[4], "precision": "bf16",
                       "hardware": HARDWARE, **scores(split, run)}
            config = {"options": {"backbone": backbone, "seed": seed, "recipe": recipe}, "split": photos}
            losses = [{"iteration": i, "loss": 3.0 / i, "loss_classifier": 1.0 / i, "loss_box_reg": 0.5 / i,
                       "loss_mask": 1.0 / i, "loss_objectness": 0.3 / i, "loss_rpn_box_reg": 0.2 / i}
                      for i in range(20, 421, 20)]
            early = {"iteration": 140, **scores(split, tuple(v / 2 for v in run)), f"{split}_images": None}
            final = {"iteration": 420, **scores(split, run), f"{split}_images": None}
            (run_dir / "summary.json").write_text(json.dumps(summary))
            (run_dir / "config.json").write_text(json.dumps(config))
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*losses, early, final]))
    return folder


def section(text: str) -> str:
    start = text.index("## Sec. 4.3 on real photos")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_table_holds_box_and_mask_ap_as_mean_and_std_over_seeds(tmp_path: Path) -> None:
    records = fabricate(tmp_path / "records")
    out = write_report([], tmp_path / "REPRODUCTION.md", pennfudan=records)
    text = section(out.read_text())
    assert ("| backbone | pre-training | runs (seeds) | box AP@[.5:.95] (%) | box AP@.5 (%) | mask AP@[.5:.95] (%) "
            "| mask AP@.5 (%) | train time (mean per run) |") in text
    assert ROWS["plain18"] in text.splitlines() and ROWS["resnet18"] in text.splitlines()
    setting = text.splitlines()[2]
    for fact in ("torchvision's Mask R-CNN, FPN form", "420 iterations of batch 4", "lr 0.01", "frozen BN",
                 "top 3 stages trained", "shorter side 320 px", "at most 544 px", "256/288/320/352/384 px",
                 "Penn-Fudan (170 photos", "not COCO or VOC", "120 photos to train, 50 held out to test",
                 "(seed 0;", "on the 50 test photos", "CPU x86_64, 2 threads"):
        assert fact in setting, fact
    assert "As printed in the tutorial:" in text and "box AP@[.5:.95] 79.9" in text and "mask AP@[.5:.95] 76.1" in text
    assert "ours saw 9,469 Imagenette photos of 10 classes" in text  # the shipped weights' metadata
    assert f"```\nresnets report --pennfudan {records} --out " in out.read_text()  # the regenerating command
    assert (tmp_path / "figures" / "pennfudan-curves.png").is_file()
    drawn = json.loads((tmp_path / "figures" / "pennfudan-curves.json").read_text())
    assert sorted(drawn) == ["plain18-s0", "plain18-s1", "resnet18-s0", "resnet18-s1"]
    assert drawn["resnet18-s1"][-1]["test_mask_map"] == 41.5


def test_the_verdict_flips_when_the_backbones_swap_values(tmp_path: Path) -> None:
    text = write_report([], tmp_path / "a.md", pennfudan=fabricate(tmp_path / "a")).read_text()
    assert "- " + VERDICT.format(answer="yes", mine="46.50", other="42.00", mine50="77.50", other50="72.00",
                                 mask="40.00", other_mask="35.50") in text.splitlines()
    swapped = {"plain18": VALUES["resnet18"], "resnet18": VALUES["plain18"]}
    text = write_report([], tmp_path / "b.md", pennfudan=fabricate(tmp_path / "b", swapped)).read_text()
    assert "- " + VERDICT.format(answer="no", mine="42.00", other="46.50", mine50="72.00", other50="77.50",
                                 mask="35.50", other_mask="40.00") in text.splitlines()


def test_the_synthetic_section_points_to_the_real_photo_one_and_the_command_names_it(tmp_path: Path) -> None:
    synthetic = Path(__file__).resolve().parents[1] / "results" / "detection"
    both = write_report([], tmp_path / "both.md", detection=synthetic,
                        pennfudan=fabricate(tmp_path / "records")).read_text()
    alone = write_report([], tmp_path / "alone.md", detection=synthetic).read_text()
    assert "synthetic composition; the real-photo experiment is the next section (Mask R-CNN on Penn-Fudan)" in both
    assert both.index("## Sec. 4.3 in miniature") < both.index("## Sec. 4.3 on real photos")
    assert "is not in this report" in alone and "## Sec. 4.3 on real photos" not in alone
    assert report_command([], "R.md", None, None, detection="d", pennfudan="p") == (
        "resnets report --detection d --pennfudan p --out R.md")


def test_the_report_command_takes_pennfudan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records, out = fabricate(tmp_path / "records"), tmp_path / "R.md"
    assert main(["report", "--pennfudan", str(records), "--out", str(out)]) == 0, capsys.readouterr().err
    assert ROWS["resnet18"] in out.read_text().splitlines()


def test_records_that_are_not_penn_fudan_or_disagree_on_the_split_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match=r"plain18-s0 is not a Penn-Fudan run \(evaluated on 'val'"):
        write_report([], tmp_path / "x.md", pennfudan=fabricate(tmp_path / "val", split="val"))
    other = fabricate(tmp_path / "split")
    config = json.loads((other / "resnet18-s1" / "config.json").read_text())
    config["split"] = {"train": SPLIT["train"][1:] + SPLIT["test"][:1], "test": SPLIT["test"][1:] + SPLIT["train"][:1]}
    (other / "resnet18-s1" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirectoryError, match="resnet18-s1 trained or tested on other photos than plain18-s0"):
        write_report([], tmp_path / "y.md", pennfudan=other)
    assert not (tmp_path / "x.md").exists() and not (tmp_path / "y.md").exists()


def figure_of(runs: dict[str, list[dict[str, Any]]], path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The matplotlib figure `plot_detection_curves` draws (kept open to read its lines)."""
    kept: list[Any] = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    plots.plot_detection_curves(runs, path)
    return kept[0]


def test_the_curves_read_the_test_split_and_draw_mask_ap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = fabricate(tmp_path / "records")
    runs = {p.name: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
            for p in sorted(records.iterdir())}
    fig = figure_of(runs, tmp_path / "c.png", monkeypatch)
    loss, box, mask = fig.axes
    assert (box.get_ylabel(), mask.get_ylabel()) == ("test-photo box mAP (%)", "test-photo mask mAP (%)")
    assert loss.get_ylabel() == "training loss (sum of the five)"
    # per run: AP@.5 then AP@[.5:.95], each at iterations 140 and 420 (half the final value, then the final value)
    assert [list(line.get_ydata()) for line in box.get_lines()][:2] == [[35.0, 70.0], [20.0, 40.0]]
    assert [list(line.get_ydata()) for line in mask.get_lines()][-2:] == [[35.0, 70.0], [20.75, 41.5]]
    assert {line.get_color() for line in box.get_lines()[:4]} == {"C0"}  # both plain18 seeds: one colour
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["plain18 (2 runs)", "resnet18 (2 runs)"]


def test_the_curves_of_synthetic_records_keep_their_two_panels(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path(__file__).resolve().parents[1] / "results" / "detection"
    runs = {p.name: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
            for p in sorted(folder.iterdir())}
    fig = figure_of(runs, tmp_path / "d.png", monkeypatch)
    loss, ap = fig.axes
    assert (loss.get_ylabel(), ap.get_ylabel()) == ("training loss (sum of the four)", "validation mAP (%)")
    assert [t.get_text() for t in ap.get_legend().get_texts()] == [
        "plain18-s0 mAP@.5", "plain18-s0 mAP@[.5:.95]", "resnet18-s0 mAP@.5", "resnet18-s0 mAP@[.5:.95]"]
    final = json.loads((folder / "resnet18-s0" / "summary.json").read_text())["val_map"]
    assert ap.get_lines()[-1].get_ydata()[-1] == final
