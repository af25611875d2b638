"""`resnets report` reads real run directories (made here by a tiny degradation experiment), puts their measured
numbers in its tables, and refuses missing or inconsistent ones; `ship_weights` round-trips a run's weights."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from resnets import complexity, create_model, load_model, model_spec
from resnets.analysis.describe import data_copy, jpeg_quality, training_command
from resnets.analysis.experiments import run_degradation
from resnets.analysis.report import paper_error, write_report
from resnets.analysis.responses import analyze_responses, read_responses_csv
from resnets.analysis.ship import ship_weights, subset_error
from resnets.cli import build_parser, main
from resnets.cli.train import resolve
from resnets.data.preprocess import Preprocessing
from resnets.models.weights import extract_state_dict, read_weight_file
from resnets.runs import RunDirectoryError, RunRecord, load_run
from resnets.runtime import usable_cores

from .test_experiments import write_tiny_cifar


@pytest.fixture(scope="module")
def made(cifar10_jpeg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two complete tiny runs (also a degradation folder) and their Fig. 7 responses."""
    root = tmp_path_factory.mktemp("report")
    data = write_tiny_cifar(cifar10_jpeg_dir, root / "data")
    degradation = root / "degradation"
    run_degradation(degradation, ["plain8", "resnet8"], budget=1, data=data, device="cpu", progress=False,
                    log=lambda _line: None)
    responses = root / "responses"
    analyze_responses([degradation / "plain8", degradation / "resnet8"], responses, data, device="cpu",
                      command="resnets analyze responses (test)")
    return {"root": root, "data": data, "degradation": degradation, "responses": responses}


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


def test_report_holds_the_measured_numbers(made: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    runs = [made["degradation"] / "resnet8", made["degradation"] / "plain8"]
    out = made["root"] / "site" / "REPRODUCTION.md"
    args = ["report", *map(str, runs), "--degradation", str(made["degradation"]), "--responses",
            str(made["responses"]), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    text = out.read_text()
    assert f"```\nresnets {shlex.join(args)}\n```" in text  # the exact command at the top
    resnet50 = complexity(create_model("resnet50"))
    assert f"| ResNet-50 | bottleneck | {resnet50.params:,} | {resnet50.gmacs:.2f} | 4.09 | 3.8 |" in text
    for run in runs:
        s = summary(run)
        params = sum(p.numel() for p in create_model(s["model"]).parameters())
        row = next(line for line in text.splitlines() if line.startswith(f"| `{run.name}` {s['model']} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:4] == [f"{params:,}", f"{s['test_top1_error']:.2f}", "-"]  # resnet8/plain8: not in Table 6
        assert cells[5] == f"{s['epochs']:g} ({s['iterations']:,} it.)" and cells[7] == s["precision"]
        assert cells[9:] == ["CIFAR-10 (official binaries)", f"128 / {s['test_images']}"]
        assert cells[4].startswith("paper: lr 0.1 /10 at 0, 1 of 1 it.")  # 50% and 75% of 1 iteration, rounded
        assert f"`{training_command(json.loads((run / 'config.json').read_text()))}`" in text
        assert (out.parent / "figures" / f"{run.name}-curves.png").is_file()
    degradation = json.loads((made["degradation"] / "degradation.json").read_text())
    assert "- plain: not measured (needs two depths)" in text and degradation["budget"]["statement"][1:] in text
    stds = read_responses_csv(made["responses"] / "responses.csv")
    mean = {label: sum(v) / len(v) for label, v in stds.items()}
    assert f"| plain8 | 7 | {mean['plain8']:.3f} | {max(stds['plain8']):.3f} |" in text
    answer = "yes" if mean["resnet8"] < mean["plain8"] else "no"
    assert f"resnet8 responds less than plain8: {answer}" in text
    for figure in ("degradation.png", "responses_by_layer.png", "responses_sorted.png"):
        assert f"](figures/{figure})" in text and (out.parent / "figures" / figure).is_file()


def test_jpeg_copy_is_named_with_its_measured_quality(cifar10_jpeg_dir: Path, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (90, 120, 200)).save(tmp_path / "a.jpg", quality=90)
    assert jpeg_quality(tmp_path) == 90
    source = f"image folder {cifar10_jpeg_dir / 'train'} (JPEG), cached /somewhere.pt"
    assert data_copy({"dataset": "cifar10", "source": source}) == "CIFAR-10 (JPEG q75 copy)"


def test_training_command_reproduces_the_run(made: dict[str, Path]) -> None:
    config = json.loads((made["degradation"] / "plain8" / "config.json").read_text())
    plan = resolve(build_parser().parse_args(shlex.split(training_command(config))[1:]))
    assert plan.recorded_recipe() == config["recipe"]
    for key in ("model", "dataset", "data", "precision", "out", "subset"):
        assert getattr(plan.options, key) == config["options"][key], key
    config["options"].update(compile=True, deterministic=True)
    options = resolve(build_parser().parse_args(shlex.split(training_command(config))[1:])).options
    assert options.compile and options.deterministic
    # a run trained on from other weights (a fine-tune, the multi-size -multisize weights) names them
    config["options"]["pretrained"] = "resnet8-weights.pt"
    assert "--pretrained resnet8-weights.pt" in training_command(config)


def test_runs_from_several_folders_are_named_by_their_paths(made: dict[str, Path]) -> None:
    twin = made["root"] / "twins" / "resnet8"  # the same folder name as degradation/resnet8
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(made["degradation"] / "resnet8", twin)
    out = made["root"] / "twins-site" / "REPRODUCTION.md"
    text = write_report([made["degradation"] / "resnet8", twin], out).read_text()
    for label in ("degradation/resnet8", "twins/resnet8"):
        assert f"| `{label}` resnet8 |" in text
        assert (out.parent / "figures" / f"{label.replace('/', '-')}-curves.png").is_file()


def broken_copy(made: dict[str, Path], name: str) -> Path:
    copy = made["root"] / "broken" / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(made["degradation"] / "resnet8", copy)
    return copy


def refusal(run: Path, capsys: pytest.CaptureFixture, made: dict[str, Path]) -> str:
    out = made["root"] / "refused" / "REPRODUCTION.md"
    assert main(["report", str(made["degradation"] / "plain8"), str(run), "--out", str(out)]) == 2
    assert not out.exists()
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(run) in error
    return error


def test_report_refuses_missing_or_inconsistent_runs(made: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    run = broken_copy(made, "no-metrics")
    (run / "metrics.jsonl").unlink()
    assert "metrics.jsonl missing" in refusal(run, capsys, made)

    run = broken_copy(made, "other-model")
    edited = {**summary(run), "model": "resnet20"}
    (run / "summary.json").write_text(json.dumps(edited))
    assert "summary.json says model 'resnet20', config.json 'resnet8'" in refusal(run, capsys, made)

    run = broken_copy(made, "short-metrics")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" if len(lines) > 1 else "")
    assert "metrics.jsonl ends at" in refusal(run, capsys, made)

    run = broken_copy(made, "other-dataset")
    (run / "summary.json").write_text(json.dumps({**summary(run), "dataset": "cifar100"}))
    assert "dataset 'cifar100'" in refusal(run, capsys, made)

    stale = made["root"] / "stale-degradation"
    shutil.copytree(made["degradation"], stale)
    document = json.loads((stale / "degradation.json").read_text())
    document["verdict"]["lines"] = ["deeper plain net has higher training error than the shallower one: yes"]
    (stale / "degradation.json").write_text(json.dumps(document))
    load_run(stale / "plain8")  # the runs themselves are fine: the JSON is stale
    with pytest.raises(RunDirectoryError, match="disagrees with its run directories"):
        write_report([], made["root"] / "x.md", degradation=stale)


def test_ship_weights_round_trip(made: dict[str, Path]) -> None:
    run = made["degradation"] / "resnet8"
    target = made["root"] / "weights"
    path = ship_weights(run, weights_dir=target, data=made["data"], device="cpu")
    shipped = json.loads((target / "resnet8.json").read_text())
    assert shipped["model"] == "resnet8" and shipped["pretrained"] == "paper"  # a paper-recipe run: resnet8.paper
    s = summary(run)
    assert shipped["test_top1_error"] == s["test_top1_error"] and shipped["epochs"] == s["epochs"]
    assert shipped["recipe"] == json.loads((run / "config.json").read_text())["recipe"]
    assert shipped["command"].startswith("resnets train --model resnet8 --recipe paper")
    assert shipped["check_subset"]["images"] == 100 and shipped["data"] == "CIFAR-10 (official binaries)"
    ours, theirs = extract_state_dict(read_weight_file(path)), extract_state_dict(read_weight_file(run / "model.pt"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k].float()) for k in ours)
    model = load_model(path)
    meta = read_weight_file(path)["meta"]
    assert subset_error(model, made["data"], device="cpu")["top1_error"] == shipped["check_subset"]["top1_error"]
    everything = subset_error(model, made["data"], images=None, device="cpu")
    assert shipped["check_all"] == everything and everything["images"] == s["test_images"]
    # `resnets predict --pretrained resnet8.paper` takes its preprocessing from the JSON.
    from_json = Preprocessing.from_meta(shipped["preprocess"], "cifar", 10).mean_image
    assert torch.allclose(from_json, meta["preprocess"]["mean_image"], atol=1e-6)

    tagged = ship_weights(run, weights_dir=target, data=made["data"], device="cpu", tag="trial")
    assert tagged.name == "resnet8-trial.pt"
    assert json.loads(tagged.with_suffix(".json").read_text())["pretrained"] == "trial"
    with pytest.raises(ValueError, match="names a file"):
        ship_weights(run, weights_dir=target, data=made["data"], device="cpu", tag="../x")
    with pytest.raises(ValueError, match="does not build the architecture"):
        ship_weights(run, name="resnet20", weights_dir=target, data=made["data"], device="cpu")
    incomplete = broken_copy(made, "incomplete")
    (incomplete / "summary.json").write_text(json.dumps({**summary(incomplete), "complete": False}))
    with pytest.raises(ValueError, match="only a complete run is shipped"):
        ship_weights(incomplete, weights_dir=target, data=made["data"], device="cpu")


@pytest.mark.parametrize(("model", "dataset", "published"), [
    ("resnet20", "cifar10", "8.75"), ("resnet110", "cifar10", "6.43"), ("resnet20", "cifar100", "-"),
    ("resnet164", "cifar10", "5.93 (follow-up)"), ("preact_resnet164", "cifar10", "5.46 (follow-up)"),
    ("resnet1001", "cifar10", "7.61 (follow-up)"), ("preact_resnet1001", "cifar10", "4.92 (follow-up)"),
    ("resnet164", "cifar100", "25.16 (follow-up)"), ("preact_resnet164", "cifar100", "24.33 (follow-up)"),
    ("resnet1001", "cifar100", "27.82 (follow-up)"), ("preact_resnet1001", "cifar100", "22.71 (follow-up)"),
    ("resnet50", "imagenet", "-"),
])
def test_reference_column_has_the_published_error(model: str, dataset: str, published: str) -> None:
    """Table 6 of the paper and the follow-up's CIFAR table (He et al., ECCV 2016, Table 2 and 3) as printed there."""
    config = model_spec(model).to_config()
    run = RunRecord(Path(model), {"dataset": dataset}, {"model_config": config}, [])
    assert paper_error(run) == published


@pytest.fixture(scope="module")
def depth_series(made: dict[str, Path]) -> Path:
    """`resnets experiment depth` on tiny data: plain8 and resnet8, seeds 0 and 1, one iteration each; the records
    go to their own folder, as results/depth in the repository."""
    records = made["root"] / "depth"
    args = ["experiment", "depth", "--models", "plain8", "resnet8", "--seeds", "0", "1", "--epochs", "1",
            "--data", str(made["data"]), "--device", "cpu", "--out", str(made["root"] / "depth-runs"),
            "--records", str(records), "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in records.iterdir()) == ["plain8-s0", "plain8-s1", "resnet8-s0", "resnet8-s1"]
    assert sorted(p.name for p in (records / "resnet8-s1").iterdir()) == [
        "config.json", "curves.png", "metrics.jsonl", "summary.json"]  # no weights, no checkpoints
    weights_file = made["root"] / "depth-runs" / "resnet8-s0" / "model.pt"
    stamp = weights_file.stat().st_mtime_ns
    assert main(args) == 0 and weights_file.stat().st_mtime_ns == stamp  # complete runs are not trained again
    return records


@pytest.mark.skipif(len(usable_cores()) < 2, reason="two jobs need two CPU cores to pin")
def test_depth_series_trains_networks_at_once_on_cores_of_their_own(made: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture) -> None:
    """--jobs 2: the same series in two worker processes, each pinned to one core with one torch thread (which the
    runs' configs record); a --jobs the machine cannot give is one clear error."""
    records = made["root"] / "depth-jobs"
    args = ["experiment", "depth", "--models", "plain8", "resnet8", "--seeds", "0", "1", "--epochs", "1",
            "--data", str(made["data"]), "--device", "cpu", "--out", str(made["root"] / "depth-jobs-runs"),
            "--records", str(records), "--no-progress"]
    assert main([*args, "--jobs", "2"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in records.iterdir()) == ["plain8-s0", "plain8-s1", "resnet8-s0", "resnet8-s1"]
    for run in records.iterdir():
        assert summary(run)["complete"]
        hardware = json.loads((run / "config.json").read_text())["hardware"]
        assert hardware["threads"] == 1 and len(hardware["cpu_cores"]) == 1, hardware
    cores = len(usable_cores())
    capsys.readouterr()
    assert main([*args, "--jobs", str(cores + 1)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"--jobs {cores + 1}" in error and f"{cores} CPU cores" in error


def test_depth_series_is_mean_and_std_over_seeds(depth_series: Path, capsys: pytest.CaptureFixture) -> None:
    import statistics

    from resnets.analysis.experiments import final_train_error

    out = depth_series.parent / "depth-site" / "REPRODUCTION.md"
    assert main(["report", "--depth", str(depth_series), "--out", str(out)]) == 0, capsys.readouterr().err
    text = out.read_text()
    for model, label in (("resnet8", "ResNet-8"), ("plain8", "plain-8")):
        runs = [load_run(depth_series / f"{model}-s{seed}") for seed in (0, 1)]
        tests = [run.summary["test_top1_error"] for run in runs]
        trains = [final_train_error(r.metrics, r.config["iterations_per_epoch"]) for r in runs]
        assert runs[0].metrics != runs[1].metrics  # the seed changed the run
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2:5] == ["2 (0, 1)", f"{statistics.mean(tests):.2f} ± {statistics.stdev(tests):.2f}",
                              f"{statistics.mean(trains):.2f} ± {statistics.stdev(trains):.2f}"]
    assert "](figures/depth-series.png)" in text and (out.parent / "figures" / "depth-series.png").is_file()
    assert "- plain: not measured (needs two depths)" in text and "fast recipe, 1 iterations" in text
    assert f"```\nresnets report --depth {depth_series} --out {out}\n```" in text
    assert (f"Not run yet (no complete run under `{depth_series}`): plain-20, plain-32, plain-44, plain-56, ResNet-20, "
            "ResNet-32, ResNet-44, ResNet-56, ResNet-110.") in text  # the paper's nets; 8-layer ones stand in here


def test_depth_series_states_each_runs_threads(depth_series: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs of one series may use different thread counts (--jobs pins 1 thread each): the setting line gives the
    range and each row its own, since wall times depend on it."""
    folder = depth_series.parent / "depth-threads"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(depth_series, folder)
    record = summary(folder / "resnet8-s1")
    recorded = record["hardware"]["threads"]
    (folder / "resnet8-s1" / "summary.json").write_text(
        json.dumps({**record, "hardware": {**record["hardware"], "threads": 9}}))
    out = folder.parent / "depth-threads-site" / "REPRODUCTION.md"
    assert main(["report", "--depth", str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
    text = out.read_text()
    assert f", {recorded}-9 threads, torch" in text
    cells = {line.split("|")[1].strip(): line.split("|")[8].strip() for line in text.splitlines()
             if line.startswith(("| ResNet-8 |", "| plain-8 |"))}
    assert cells == {"ResNet-8": f"{recorded}/9", "plain-8": str(recorded)}


def test_series_ignores_another_series_unfinished_run(made: dict[str, Path], depth_series: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Two series sharing one --out: the one that finishes first loads its own runs and every complete one, and
    leaves out a run the other is still training; the report, which reads everything, still refuses it."""
    out = made["root"] / "depth-shared-runs"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(made["root"] / "depth-runs", out)
    record = summary(out / "resnet8-s1")  # as if the other series were still training it
    (out / "resnet8-s1" / "summary.json").write_text(json.dumps({**record, "complete": False}))
    assert main(["experiment", "depth", "--models", "plain8", "--seeds", "0", "1", "--epochs", "1",
                 "--data", str(made["data"]), "--device", "cpu", "--out", str(out), "--no-progress"]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    assert main(["report", "--depth", str(out), "--out", str(out.parent / "shared-site" / "R.md")]) == 2
    assert "resnet8-s1 stopped at" in capsys.readouterr().err


def test_depth_series_refuses_a_mislabelled_or_unfinished_run(depth_series: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    folder = depth_series.parent / "depth-bad"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(depth_series / "resnet8-s1", folder / "resnet8-s2")  # seed 1's files under seed 2's name
    out = folder.parent / "depth-bad-site" / "REPRODUCTION.md"
    assert main(["report", "--depth", str(folder), "--out", str(out)]) == 2 and not out.exists()
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "seed 2" in error and "seed 1" in error
    (folder / "resnet8-s2").rename(folder / "resnet8-s1")
    summary_path = folder / "resnet8-s1" / "summary.json"
    summary_path.write_text(json.dumps({**summary(folder / "resnet8-s1"), "complete": False}))
    assert main(["report", "--depth", str(folder), "--out", str(out)]) == 2 and not out.exists()
    assert "--resume" in capsys.readouterr().err


def test_depth_verdict_checks_the_order_at_every_depth() -> None:
    from resnets.analysis.depth import series_verdict

    def row(model: str, train: float, test: float) -> dict[str, Any]:
        spec = model_spec(model)
        return {"model": model, "label": f"{'ResNet' if spec.residual else 'plain'}-{spec.depth}",
                "depth": spec.depth, "residual": spec.residual, "final_train_error": train,
                "final_test_error": test}

    lines = series_verdict([row("plain20", 5.0, 9.0), row("plain32", 6.0, 9.5), row("plain56", 8.0, 11.0),
                            row("resnet20", 4.0, 8.0), row("resnet56", 2.0, 7.0), row("resnet110", 2.5, 6.5)])
    assert "plain training error rises with every added depth: yes (plain-20 5.00 -> plain-32 6.00 -> " \
           "plain-56 8.00)" in lines
    assert any(line.startswith("ResNet training error falls with every added depth: no") for line in lines)
    assert any(line.startswith("ResNet test error falls with every added depth: yes") for line in lines)
    assert any(line.startswith("deeper ResNet has lower training error: yes") for line in lines)  # 110 vs 20


def test_the_cpu_is_named_by_its_model_where_the_record_has_it() -> None:
    from resnets.analysis.describe import hardware_brief
    from resnets.runtime import Runtime, hardware_description

    assert hardware_brief({"cpu": "x86_64", "cpu_model": "AMD EPYC", "threads": 2, "torch": "2.x"}) == \
        "CPU AMD EPYC, 2 threads, torch 2.x"
    assert hardware_brief({"cpu": "x86_64", "threads": 2, "torch": "2.x"}) == "CPU x86_64, 2 threads, torch 2.x"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    described = hardware_description(Runtime(torch.device("cpu")))
    assert described["cpu_model"] == (names[0] if names else None)
    first_cpu = cpuinfo.read_text().split("\n\n")[0] if cpuinfo.is_file() else ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_cpu.splitlines())}
    assert described["cpu_generation"] == (f"family {fields['cpu family']} model {fields['model']}"
                                           if "cpu family" in fields else None)
    assert hardware_brief({"cpu_model": "AMD EPYC", "cpu_generation": "family 25 model 17", "threads": 2,
                           "torch": "2.x"}) == "CPU AMD EPYC (family 25 model 17), 2 threads, torch 2.x"
