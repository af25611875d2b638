"""The report's Tables 2 and 3 for each Imagenette budget (analysis/imagenette_tables.py), from a copy of the
committed records: a run that keeps no protocols.json is tested through the weights shipped from it, and only
those: the link is the metadata's `shipped_from` and the run's own test error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resnets.analysis.imagenette_tables import budget_section, load_fast_budget
from resnets.runs import RunDirectoryError

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for name in ("imagenette", "imagenette-fast", "imagenette-protocols"):
        shutil.copytree(REPOSITORY / "results" / name, tmp_path / "results" / name)
    return tmp_path / "results"


def recorded(results: Path, weights: str, protocol: str) -> dict:
    return json.loads((results / "imagenette-protocols" / weights / f"{protocol}.json").read_text())


def no_plot(draw, data, name: str, caption: str) -> str:
    return f"![{caption}]({name})"


def test_runs_without_protocols_are_tested_through_their_shipped_weights(results: Path) -> None:
    budget = load_fast_budget(results / "imagenette")
    assert budget is not None
    rows = {row["model"]: row for row in budget.rows}
    for model in ("resnet18", "resnet34"):
        assert not (results / "imagenette-fast" / f"{model}-s0" / "protocols.json").exists()
        for protocol in ("center", "10crop", "multiscale"):
            record = recorded(results, f"{model}.imagenette-fast", protocol)
            assert rows[model][f"{protocol}_top1_error"] == record["top1_error"]
    text = "\n".join(budget_section(no_plot, budget))
    assert "## ImageNet in miniature on our budget" in text
    assert "`resnet34.imagenette-fast` (shipped copy), fp32" in text
    ten_crop = recorded(results, "resnet34.imagenette-fast", "10crop")["top1_error"]
    assert f"| ResNet-34 | 21,115,978 | 1 | {ten_crop:.2f} |" in text


def test_weights_shipped_from_another_state_of_the_run_are_not_used(results: Path) -> None:
    """ResNet-34's summary says another test error than its shipped weights' metadata: not the same weights."""
    path = results / "imagenette-fast" / "resnet34-s0" / "summary.json"
    summary = json.loads(path.read_text())
    summary["test_top1_error"] += 1.0
    path.write_text(json.dumps(summary))
    with pytest.raises(RunDirectoryError, match=r"resnet34-s0 has no protocols\.json"):
        load_fast_budget(results / "imagenette")


def test_a_runs_own_protocols_come_first(results: Path) -> None:
    run = results / "imagenette-fast" / "resnet18-s0"
    own = {protocol: recorded(results, "resnet18.imagenette-fast", protocol) | {"top1_error": 50.0 + i}
           for i, protocol in enumerate(("center", "10crop", "multiscale"))}
    (run / "protocols.json").write_text(json.dumps({"precision": "bf16", "protocols": own}))
    budget = load_fast_budget(results / "imagenette")
    row = next(row for row in budget.rows if row["model"] == "resnet18")
    assert (row["center_top1_error"], row["10crop_top1_error"], row["multiscale_top1_error"]) == (50.0, 51.0, 52.0)
    assert "| ResNet-18 | 11,007,818 | 1 | 51.00 | 50.00 |" in "\n".join(budget_section(no_plot, budget))


def test_no_fast_folder_no_section(results: Path) -> None:
    shutil.rmtree(results / "imagenette-fast")
    assert load_fast_budget(results / "imagenette") is None


def option_b_run(results: Path, ten_crop: float) -> Path:
    """A copy of the ResNet-34 run's records, said to be trained with option B shortcuts, with protocol results of
    its own (10-crop top-1 `ten_crop`)."""
    run = results / "imagenette-fast" / "option-B" / "resnet34-s0"
    shutil.rmtree(run, ignore_errors=True)  # the measured option B run, replaced by this made-up one
    shutil.copytree(results / "imagenette-fast" / "resnet34-s0", run)
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["shortcut"] = config["options"]["shortcut"] = "B"
    (run / "config.json").write_text(json.dumps(config))
    own = {protocol: recorded(results, "resnet34.imagenette-fast", protocol) for protocol in ("center", "multiscale")}
    ten = recorded(results, "resnet34.imagenette-fast", "10crop")
    own["10crop"] = ten | {"top1_error": ten_crop, "top5_error": 1.5}
    (run / "protocols.json").write_text(json.dumps({"precision": "bf16", "protocols": own}))
    return run


@pytest.mark.parametrize(("ten_crop", "verdict"), [(10.0, "yes"), (30.0, "no")])
def test_option_b_runs_join_table_3_beside_option_a(results: Path, ten_crop: float, verdict: str) -> None:
    option_a = recorded(results, "resnet34.imagenette-fast", "10crop")["top1_error"]
    option_b_run(results, ten_crop)
    text = "\n".join(budget_section(no_plot, load_fast_budget(results / "imagenette")))
    table3 = text[text.index("Table 3 in miniature"):text.index("Multi-scale testing, each scale alone")]
    assert f"| ResNet-34 A | {recorded(results, 'resnet34.imagenette-fast', 'center')['top1_error']:.2f} /" in table3
    assert f"| ResNet-34 B | {recorded(results, 'resnet34.imagenette-fast', 'center')['top1_error']:.2f} /" in table3
    assert f"| {ten_crop:.2f} / 1.50 |" in table3
    assert (f"- option B shortcuts beat option A for ResNet-34 (ImageNet: 24.52% vs 25.03%): {verdict} "
            f"({ten_crop:.2f}% vs {option_a:.2f}% 10-crop top-1, 1 vs 1 runs)") in text
    assert "not measured on this budget" not in text


def test_shortcuts_are_kept_apart(results: Path) -> None:
    shutil.rmtree(results / "imagenette-fast" / "option-B")  # without the measured option B run
    text = "\n".join(budget_section(no_plot, load_fast_budget(results / "imagenette")))
    assert "- option B/C shortcuts against option A (Table 3): not measured on this budget" in text
    path = results / "imagenette-fast" / "resnet34-s0" / "config.json"
    config = json.loads(path.read_text())
    config["model_config"]["shortcut"] = "B"
    path.write_text(json.dumps(config))
    with pytest.raises(RunDirectoryError, match=r"resnet34-s0: trained with shortcut B, but .*imagenette-fast holds "
                                                r"option A runs; move it to .*imagenette-fast/option-B$"):
        load_fast_budget(results / "imagenette")
