"""`resnets experiment preact` trains the original and the pre-activation net with one recipe; `resnets report
--preact` puts their measured errors, the follow-up's column, both curves and the computed verdicts in
REPRODUCTION.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resnets import model_spec
from resnets.analysis.experiments import final_train_error
from resnets.analysis.preact import preact_verdict
from resnets.cli import main
from resnets.runs import load_run

from .test_experiments import write_tiny_cifar


def row(model: str, train: float, test: float, seeds: int = 1) -> dict[str, Any]:
    spec = model_spec(model)
    return {"model": model, "label": f"{'pre-act ' if spec.preact else ''}ResNet-{spec.depth}", "depth": spec.depth,
            "residual": True, "preact": spec.preact, "seeds": list(range(seeds)), "final_train_error": train,
            "final_test_error": test}


def test_verdict_compares_the_two_kinds_at_each_depth() -> None:
    lines = preact_verdict([row("resnet164", 3.0, 7.0, seeds=2), row("preact_resnet164", 2.5, 7.5),
                            row("resnet20", 9.0, 10.0)])  # 20 has no pre-activation partner: no verdict for it
    assert lines == [
        "pre-activation trains to lower training error at depth 164: yes (pre-act ResNet-164 2.50 vs ResNet-164 "
        "3.00, 2 and 1 runs)",
        "pre-activation has lower test error at depth 164: no (pre-act ResNet-164 7.50 vs ResNet-164 7.00, 2 and "
        "1 runs)"]
    assert preact_verdict([row("resnet20", 9.0, 10.0)]) == [
        "no depth has both an original and a pre-activation network: nothing to compare"]


@pytest.fixture(scope="module")
def comparison(cifar10_jpeg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preact")
    data = write_tiny_cifar(cifar10_jpeg_dir, root / "data")
    records = root / "records"
    assert main(["experiment", "preact", "--models", "resnet8", "preact_resnet8", "--epochs", "1", "--data",
                 str(data), "--device", "cpu", "--out", str(root / "runs"), "--records", str(records),
                 "--no-progress"]) == 0
    return records


def test_report_shows_both_nets_their_curves_and_the_verdicts(comparison: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = comparison.parent / "site" / "REPRODUCTION.md"
    assert main(["report", "--preact", str(comparison), "--out", str(out)]) == 0, capsys.readouterr().err
    text = out.read_text()
    measured = {}
    for model, label in (("resnet8", "ResNet-8"), ("preact_resnet8", "pre-act ResNet-8")):
        run = load_run(comparison / f"{model}-s0")
        assert run.config["model_config"]["preact"] == model.startswith("preact_")
        measured[model] = (final_train_error(run.metrics, run.config["iterations_per_epoch"]),
                           run.summary["test_top1_error"])
        cells = [c.strip() for c in next(line for line in text.splitlines()
                                          if line.startswith(f"| {label} |")).strip("|").split("|")]
        assert cells[2:6] == ["1 (0)", f"{measured[model][1]:.2f}", f"{measured[model][0]:.2f}", "-"]
    (train_o, test_o), (train_p, test_p) = measured["resnet8"], measured["preact_resnet8"]
    assert (f"- pre-activation trains to lower training error at depth 8: {'yes' if train_p < train_o else 'no'} "
            f"(pre-act ResNet-8 {train_p:.2f} vs ResNet-8 {train_o:.2f}, 1 and 1 runs)") in text
    assert f"- pre-activation has lower test error at depth 8: {'yes' if test_p < test_o else 'no'}" in text
    assert "](figures/preact-comparison.png)" in text and (out.parent / "figures" / "preact-comparison.png").is_file()
    assert f"```\nresnets report --preact {comparison} --out {out}\n```" in text
