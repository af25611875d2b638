"""Every yes/no line of the report, on hand-made records, for both outcomes: each test asserts the whole list of
lines, written out by hand here, so a comparison that is flipped, made non-strict, or reads the wrong key changes
a line that the test spells out. Cases pair a claim that holds with one that does not in the same call where the
function makes several claims (train vs test, 10-crop vs multi-scale), so that swapping two keys shows too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from resnets.analysis.depth import series_verdict
from resnets.analysis.detection import detection_verdict
from resnets.analysis.experiments import budget_statement, verdict
from resnets.analysis.imagenette import curve_comparisons, protocol_verdicts, same_depth_verdicts
from resnets.analysis.preact import preact_verdict
from resnets.analysis.responses import response_verdicts

LABELS = {"plain20": "plain-20", "plain32": "plain-32", "plain56": "plain-56", "resnet20": "ResNet-20",
          "resnet32": "ResNet-32", "resnet56": "ResNet-56", "plain18": "plain-18", "plain34": "plain-34",
          "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet164": "ResNet-164",
          "preact_resnet164": "pre-act ResNet-164"}
DEPTHS = {"plain20": 20, "plain32": 32, "plain56": 56, "resnet20": 20, "resnet32": 32, "resnet56": 56,
          "plain18": 18, "plain34": 34, "resnet18": 18, "resnet34": 34, "resnet164": 164, "preact_resnet164": 164}


def row(model: str, train: float, test: float = 0.0, **more: Any) -> dict[str, Any]:
    """A network's record as `series_rows` / `degradation_results` make it; labels and depths typed by hand."""
    return {"model": model, "label": LABELS[model], "depth": DEPTHS[model], "residual": "resnet" in model,
            "final_train_error": train, "final_test_error": test, **more}


def fig6(*rows: dict[str, Any]) -> list[str]:
    return verdict({r["model"]: r for r in rows})["lines"]


# experiments.verdict: Fig. 6, deepest against shallowest of each family

def test_fig6_verdict_when_the_paper_holds() -> None:
    result = verdict({r["model"]: r for r in (row("resnet56", 5.0, 7.5), row("plain56", 14.0, 16.0),
                                              row("resnet20", 8.0, 9.0), row("plain20", 10.0, 12.0))})
    assert result["lines"] == [
        "deeper plain net has higher training error than the shallower one: yes (plain-56 14.00% vs plain-20 10.00%)",
        "deeper ResNet has lower training error: yes (ResNet-56 5.00% vs ResNet-20 8.00%)",
        "deeper ResNet has lower test error: yes (ResNet-56 7.50% vs ResNet-20 9.00%)"]
    assert result["plain"]["deeper_has_higher_train_error"] is True
    assert (result["resnet"]["deeper_has_lower_train_error"], result["resnet"]["deeper_has_lower_test_error"]) == (
        True, True)


def test_fig6_verdict_when_the_paper_fails() -> None:
    result = verdict({r["model"]: r for r in (row("plain20", 10.0), row("plain56", 9.0),
                                              row("resnet20", 8.0, 9.0), row("resnet56", 8.5, 9.5))})
    assert result["lines"] == [
        "deeper plain net has higher training error than the shallower one: no (plain-56 9.00% vs plain-20 10.00%)",
        "deeper ResNet has lower training error: no (ResNet-56 8.50% vs ResNet-20 8.00%)",
        "deeper ResNet has lower test error: no (ResNet-56 9.50% vs ResNet-20 9.00%)"]
    assert result["plain"]["deeper_has_higher_train_error"] is False
    assert (result["resnet"]["deeper_has_lower_train_error"], result["resnet"]["deeper_has_lower_test_error"]) == (
        False, False)


def test_fig6_verdict_reads_training_and_test_error_separately() -> None:
    """Training error says yes where test error says no, and the other way round: a swapped key flips both."""
    assert fig6(row("resnet20", 8.0, 9.0), row("resnet56", 5.0, 9.5)) == [
        "plain: not measured (needs two depths)",
        "deeper ResNet has lower training error: yes (ResNet-56 5.00% vs ResNet-20 8.00%)",
        "deeper ResNet has lower test error: no (ResNet-56 9.50% vs ResNet-20 9.00%)"]
    assert fig6(row("resnet20", 8.0, 9.0), row("resnet56", 8.5, 7.5), row("plain20", 10.0)) == [
        "plain: not measured (needs two depths)",
        "deeper ResNet has lower training error: no (ResNet-56 8.50% vs ResNet-20 8.00%)",
        "deeper ResNet has lower test error: yes (ResNet-56 7.50% vs ResNet-20 9.00%)"]


def test_fig6_verdict_is_strict_and_compares_the_extreme_depths() -> None:
    """A tie is no; the middle depth (ResNet-32, lowest of all) does not enter the deepest-vs-shallowest claim."""
    assert fig6(row("plain56", 10.0), row("plain20", 10.0), row("resnet32", 1.0, 1.0), row("resnet56", 8.0, 9.0),
                row("resnet20", 8.0, 9.0)) == [
        "deeper plain net has higher training error than the shallower one: no (plain-56 10.00% vs plain-20 10.00%)",
        "deeper ResNet has lower training error: no (ResNet-56 8.00% vs ResNet-20 8.00%)",
        "deeper ResNet has lower test error: no (ResNet-56 9.00% vs ResNet-20 9.00%)"]
    assert fig6(row("plain20", 10.0), row("resnet56", 6.0, 7.0)) == [
        "plain: not measured (needs two depths)", "resnet: not measured (needs two depths)"]


# depth.series_verdict: Fig. 6 / Table 6, plus the order at every depth

def test_depth_series_verdict_when_every_order_holds() -> None:
    rows = [row("plain20", 5.0, 9.0), row("plain32", 6.0, 9.5), row("plain56", 8.0, 11.0),
            row("resnet20", 4.0, 8.0), row("resnet32", 3.0, 7.5), row("resnet56", 2.0, 7.0)]
    assert series_verdict(rows) == [
        "deeper plain net has higher training error than the shallower one: yes (plain-56 8.00% vs plain-20 5.00%)",
        "deeper ResNet has lower training error: yes (ResNet-56 2.00% vs ResNet-20 4.00%)",
        "deeper ResNet has lower test error: yes (ResNet-56 7.00% vs ResNet-20 8.00%)",
        "plain training error rises with every added depth: yes (plain-20 5.00 -> plain-32 6.00 -> plain-56 8.00)",
        "ResNet training error falls with every added depth: yes (ResNet-20 4.00 -> ResNet-32 3.00 -> ResNet-56 2.00)",
        "ResNet test error falls with every added depth: yes (ResNet-20 8.00 -> ResNet-32 7.50 -> ResNet-56 7.00)"]


def test_depth_series_verdict_when_a_middle_depth_breaks_the_order() -> None:
    """The extremes keep the paper's order; each chain breaks at the middle depth (a tie counts as broken)."""
    rows = [row("plain56", 8.0, 11.0), row("plain32", 4.0, 9.5), row("plain20", 5.0, 9.0),
            row("resnet56", 2.0, 7.0), row("resnet32", 4.5, 7.0), row("resnet20", 4.0, 8.0)]
    assert series_verdict(rows) == [
        "deeper plain net has higher training error than the shallower one: yes (plain-56 8.00% vs plain-20 5.00%)",
        "deeper ResNet has lower training error: yes (ResNet-56 2.00% vs ResNet-20 4.00%)",
        "deeper ResNet has lower test error: yes (ResNet-56 7.00% vs ResNet-20 8.00%)",
        "plain training error rises with every added depth: no (plain-20 5.00 -> plain-32 4.00 -> plain-56 8.00)",
        "ResNet training error falls with every added depth: no (ResNet-20 4.00 -> ResNet-32 4.50 -> ResNet-56 2.00)",
        "ResNet test error falls with every added depth: no (ResNet-20 8.00 -> ResNet-32 7.00 -> ResNet-56 7.00)"]


def test_depth_series_verdict_when_the_extremes_fail_and_a_family_has_two_depths() -> None:
    rows = [row("plain20", 5.0, 9.0), row("plain56", 4.0, 8.0),  # two plain depths: no every-depth line for them
            row("resnet20", 2.0, 7.0), row("resnet32", 3.0, 8.0), row("resnet56", 4.0, 9.0)]
    assert series_verdict(rows) == [
        "deeper plain net has higher training error than the shallower one: no (plain-56 4.00% vs plain-20 5.00%)",
        "deeper ResNet has lower training error: no (ResNet-56 4.00% vs ResNet-20 2.00%)",
        "deeper ResNet has lower test error: no (ResNet-56 9.00% vs ResNet-20 7.00%)",
        "ResNet training error falls with every added depth: no (ResNet-20 2.00 -> ResNet-32 3.00 -> ResNet-56 4.00)",
        "ResNet test error falls with every added depth: no (ResNet-20 7.00 -> ResNet-32 8.00 -> ResNet-56 9.00)"]


# imagenette: Table 3's protocol order, Table 2's equal-depth comparison, Fig. 4's curves

def protocols(center: float, ten_crop: float, multiscale: float) -> dict[str, float]:
    return {"center_top1_error": center, "10crop_top1_error": ten_crop, "multiscale_top1_error": multiscale}


def test_protocol_verdicts_when_each_protocol_beats_the_last() -> None:
    assert protocol_verdicts([protocols(30.0, 28.0, 27.0), protocols(20.0, 19.0, 18.5)]) == [
        "10-crop testing is better than a single centre crop: yes (mean top-1 over the 2 nets 23.50% vs 25.00%; "
        "better for 2 of 2)",
        "multi-scale testing is better than 10-crop: yes (mean top-1 over the 2 nets 22.75% vs 23.50%; "
        "better for 2 of 2)"]


def test_protocol_verdicts_when_neither_does() -> None:
    """The mean decides; the count says how many nets went the other way (one does for 10-crop here)."""
    assert protocol_verdicts([protocols(28.0, 30.0, 31.0), protocols(20.0, 19.0, 19.5)]) == [
        "10-crop testing is better than a single centre crop: no (mean top-1 over the 2 nets 24.50% vs 24.00%; "
        "better for 1 of 2)",
        "multi-scale testing is better than 10-crop: no (mean top-1 over the 2 nets 25.25% vs 24.50%; "
        "better for 0 of 2)"]


def test_protocol_verdicts_read_each_protocol_and_count_ties_as_no() -> None:
    assert protocol_verdicts([protocols(25.0, 24.0, 26.0)]) == [
        "10-crop testing is better than a single centre crop: yes (mean top-1 over the 1 nets 24.00% vs 25.00%; "
        "better for 1 of 1)",
        "multi-scale testing is better than 10-crop: no (mean top-1 over the 1 nets 26.00% vs 24.00%; "
        "better for 0 of 1)"]
    assert protocol_verdicts([protocols(25.0, 25.0, 24.0)]) == [
        "10-crop testing is better than a single centre crop: no (mean top-1 over the 1 nets 25.00% vs 25.00%; "
        "better for 0 of 1)",
        "multi-scale testing is better than 10-crop: yes (mean top-1 over the 1 nets 24.00% vs 25.00%; "
        "better for 1 of 1)"]


def test_same_depth_verdicts_for_both_outcomes() -> None:
    """18 layers: the residual net wins on 10-crop top-1 although its training error is higher (the verdict reads
    10-crop); 34 layers: it loses on 10-crop although it trains lower. Paper numbers are Table 2's."""
    train_rows = [row("plain18", 21.0), row("resnet18", 22.0), row("plain34", 30.0), row("resnet34", 25.0)]
    test_rows = [{"model": "plain18", "10crop_top1_error": 20.0}, {"model": "resnet18", "10crop_top1_error": 19.5},
                 {"model": "plain34", "10crop_top1_error": 24.0}, {"model": "resnet34", "10crop_top1_error": 24.0}]
    assert same_depth_verdicts(train_rows, test_rows) == [
        "at 18 layers the residual net beats the plain one (ImageNet: 27.88% vs 27.94%): yes (ResNet-18 19.50% vs "
        "plain-18 20.00% 10-crop top-1; final training error 22.00% vs 21.00%)",
        "at 34 layers the residual net beats the plain one (ImageNet: 25.03% vs 28.54%): no (ResNet-34 24.00% vs "
        "plain-34 24.00% 10-crop top-1; final training error 25.00% vs 30.00%)"]


def test_same_depth_verdicts_without_a_paper_number() -> None:
    """CIFAR depths have no Table 2 entry: the line says nothing about ImageNet."""
    train_rows = [row("plain20", 9.0), row("resnet20", 8.0)]
    test_rows = [{"model": "plain20", "10crop_top1_error": 11.0}, {"model": "resnet20", "10crop_top1_error": 12.0}]
    assert same_depth_verdicts(train_rows, test_rows) == [
        "at 20 layers the residual net beats the plain one: no (ResNet-20 12.00% vs plain-20 11.00% 10-crop top-1; "
        "final training error 8.00% vs 9.00%)"]


def curve_run(*train_errors: float, start: int = 10) -> SimpleNamespace:
    """A run record with only what `mean_curve` reads: training error logged every 10 iterations."""
    return SimpleNamespace(metrics=[{"iteration": start + 10 * i, "train_error": error}
                                    for i, error in enumerate(train_errors)])


def test_curve_comparisons_deeper_above_and_deeper_below() -> None:
    """plain: the deeper net is above at 7 of 8 points, last quarter (2 points) 35.5 vs 25.5; ResNet: below at every
    point, last quarter means of two seeds' means. Only iterations logged by both nets count (the plain-34 run
    logs an extra point at 90)."""
    train_rows = [row("plain18", 0.0), row("plain34", 0.0), row("resnet18", 0.0), row("resnet34", 0.0)]
    series = {"plain18": [curve_run(60, 50, 45, 40, 35, 30, 26, 25)],
              "plain34": [curve_run(55, 60, 50, 45, 40, 38, 36, 35, 34)],
              "resnet18": [curve_run(60, 50, 40, 30), curve_run(62, 52, 42, 34)],
              "resnet34": [curve_run(50, 40, 30, 20), curve_run(52, 42, 32, 24)]}
    assert curve_comparisons(series, train_rows) == [
        "along the run (Fig. 4), plain-34's training error is above plain-18's at 7 of 8 logged points "
        "(last quarter: 35.50% vs 25.50%)",
        "along the run (Fig. 4), ResNet-34's training error is above ResNet-18's at 0 of 4 logged points "
        "(last quarter: 22.00% vs 32.00%)"]


# preact: the follow-up's comparison at equal depth

def preact_row(model: str, train: float, test: float, seeds: int = 1) -> dict[str, Any]:
    return row(model, train, test, preact=model.startswith("preact"), seeds=list(range(seeds)))


def test_preact_verdict_for_both_outcomes_of_each_claim() -> None:
    assert preact_verdict([preact_row("resnet164", 6.0, 7.0, seeds=2), preact_row("preact_resnet164", 5.0, 7.5)]) == [
        "pre-activation trains to lower training error at depth 164: yes (pre-act ResNet-164 5.00 vs ResNet-164 "
        "6.00, 2 and 1 runs)",
        "pre-activation has lower test error at depth 164: no (pre-act ResNet-164 7.50 vs ResNet-164 7.00, 2 and 1 "
        "runs)"]
    assert preact_verdict([preact_row("preact_resnet164", 6.0, 6.5, seeds=3), preact_row("resnet164", 6.0, 7.0)]) == [
        "pre-activation trains to lower training error at depth 164: no (pre-act ResNet-164 6.00 vs ResNet-164 "
        "6.00, 1 and 3 runs)",
        "pre-activation has lower test error at depth 164: yes (pre-act ResNet-164 6.50 vs ResNet-164 7.00, 1 and 3 "
        "runs)"]


def test_preact_verdict_without_a_pair() -> None:
    assert preact_verdict([preact_row("resnet164", 6.0, 7.0), preact_row("plain20", 9.0, 10.0)]) == [
        "no depth has both an original and a pre-activation network: nothing to compare"]


# detection: residual vs plain backbone

def backbone(name: str, maps: list[float], maps_50: list[float]) -> dict[str, Any]:
    return {"backbone": name, "map": maps, "map_50": maps_50, "runs": len(maps)}


def test_detection_verdict_for_both_outcomes() -> None:
    """The verdict reads mAP@[.5:.95] (means over runs), not mAP@.5, which goes the other way in both cases."""
    rows = [backbone("plain18", [10.0], [31.0]), backbone("resnet18", [12.0, 13.0], [30.0, 29.0])]
    assert detection_verdict(rows) == [
        "residual backbone transfers better (resnet18 vs plain18): yes (mAP@[.5:.95] 12.50 vs 10.00, mAP@.5 29.50 vs "
        "31.00; 2 and 1 run(s))"]
    assert detection_verdict([backbone("resnet34", [9.0], [33.0]), backbone("plain34", [9.5, 10.5], [30.0, 31.0])]) == [
        "residual backbone transfers better (resnet34 vs plain34): no (mAP@[.5:.95] 9.00 vs 10.00, mAP@.5 33.00 vs "
        "30.50; 1 and 2 run(s))"]


def test_detection_verdict_tie_and_no_pair() -> None:
    assert detection_verdict([backbone("resnet18", [10.0], [20.0]), backbone("plain18", [10.0], [20.0])]) == [
        "residual backbone transfers better (resnet18 vs plain18): no (mAP@[.5:.95] 10.00 vs 10.00, mAP@.5 20.00 vs "
        "20.00; 1 and 1 run(s))"]
    assert detection_verdict([backbone("resnet18", [10.0], [20.0]), backbone("plain34", [5.0], [9.0])]) == [
        "no residual/plain pair of the same depth to compare"]


# responses: Fig. 7

def test_response_verdicts_for_both_outcomes() -> None:
    stds = {"plain20": 1.2, "resnet20": 1.0, "plain56": 0.8, "resnet56": 0.9, "resnet110": 0.85}
    assert response_verdicts(stds) == [
        "resnet20 responds less than plain20: yes (mean std 1.000 vs 1.200)",
        "resnet56 responds less than plain56: no (mean std 0.900 vs 0.800)",
        "deeper ResNet has smaller responses, at every depth: yes (resnet20 1.000 -> resnet56 0.900 -> resnet110 "
        "0.850)"]
    stds = {"resnet110": 0.95, "resnet56": 0.9, "resnet20": 1.0, "plain110": 0.95}
    assert response_verdicts(stds) == [
        "resnet110 responds less than plain110: no (mean std 0.950 vs 0.950)",
        "deeper ResNet has smaller responses, at every depth: no (resnet20 1.000 -> resnet56 0.900 -> resnet110 0.950)"]


# the budget statement of Fig. 6

PAPER = "64,000 iterations, about 164 epochs, lr /10 at 32k and 48k"


@pytest.mark.parametrize(("budget", "iterations", "images", "expected"), [
    (None, None, None, f"budget: the paper's schedule ({PAPER})"),
    (None, None, 1000, f"budget: the paper's schedule ({PAPER}), on a subset of 1,000 training images"),
    (30.0, 11_719, None, "budget: 30 epochs = 11,719 iterations, lr /10 at 50% and 75%; shorter than the paper's 164 "
                         f"epochs ({PAPER})"),
    (163.84, None, 50_000, "budget: 163.84 epochs, lr /10 at 50% and 75%; not shorter than the paper's 164 epochs "
                           f"({PAPER})"),
    (200.0, 78_125, 1000, "budget: 200 epochs = 78,125 iterations, lr /10 at 50% and 75%, on a subset of 1,000 "
                          f"training images; not shorter than the paper's 164 epochs ({PAPER})"),
])
def test_budget_statement_says_whether_the_budget_is_shorter(budget: float | None, iterations: int | None,
                                                              images: int | None, expected: str) -> None:
    assert budget_statement(budget, iterations, images) == expected
