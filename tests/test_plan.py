"""One resolved run description (`train.plan.resolve_run`): precedence, the dataset's defaults, refusals of what a
run would not read, the recorded recipe, and `runs.decide_resume`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.runs import decide_resume
from resnets.train.plan import RunPlan, resolve_run
from resnets.train.recipes import RunOptions, get_recipe


def test_recipe_then_config_then_set_then_flags() -> None:
    plan = resolve_run("fast", config={"lr": 0.3, "batch_size": 64, "weight_decay": 1e-3, "seed": 5},
                       overrides={"lr": "0.4", "batch_size": "32"}, lr=0.5, seed=7)
    recipe = plan.recipe
    assert (recipe.lr, recipe.batch_size, recipe.weight_decay, recipe.momentum) == (0.5, 32, 1e-3, 0.9)
    assert plan.options.seed == 7
    assert resolve_run("fast", config={"seed": 5}).options.seed == 5
    # an explicit iteration count wins over the recipe's 30 epochs
    assert (resolve_run("fast", iterations=100).recipe.epochs, resolve_run("fast").recipe.epochs) == (None, 30)


def test_the_dataset_chooses_the_default_recipe_and_model() -> None:
    expected = {"cifar10": ("paper", "resnet20"), "imagenet": ("paper-imagenet", "resnet50"),
                "imagenette": ("imagenette", "resnet18")}
    for dataset, (recipe, model) in expected.items():
        plan = resolve_run(dataset=dataset)
        assert (plan.recipe.name, plan.options.model, plan.options.dataset) == (recipe, model, dataset)
        assert plan.options.out == f"runs/{model}-{recipe}"
    assert resolve_run().options.dataset == "cifar10"
    assert resolve_run(model="resnet110").recipe.error_warmup_lr == 0.01  # Sec. 4.2's warm-up follows the model


def test_a_plan_is_frozen() -> None:
    plan = resolve_run("fast", out="runs/x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.options.resume = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.recipe.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "line"), [
    ({"recipe_name": "fast", "overrides": {"crop_size": "224"}},
     "--set crop_size: recipe 'fast' on cifar10 does not use crop_size (an ImageNet-style setting; CIFAR runs do "
     "not read it); leave it out"),
    ({"dataset": "imagenette", "config": {"pad": 2}},
     "config: pad: recipe 'imagenette' on imagenette does not use pad (a CIFAR setting; ImageNet-style runs do not "
     "read it); leave it out"),
    ({"dataset": "imagenet", "val_split": 5000},
     "--val-split: recipe 'paper-imagenet' on imagenet does not use val_split (a CIFAR setting; ImageNet-style runs "
     "do not read it); leave it out"),
    ({"recipe_name": "imagenette-fast", "dataset": "imagenette", "overrides": {"scale_min": "128"}},
     "--set scale_min: recipe 'imagenette-fast' on imagenette does not use scale_min (the random-resized crops "
     "(crop_area) replace the scale augmentation); leave it out"),
    ({"recipe_name": "fast", "overrides": {"milestones": "10,20"}},
     "--set milestones: recipe 'fast' on cifar10 does not use milestones (a setting of the step schedule; this "
     "run's schedule is onecycle); leave it out"),
    ({"recipe_name": "imagenette"},
     "recipe 'imagenette' is written for imagenet or imagenette, not cifar10: give --dataset imagenet or "
     "imagenette, or a recipe for cifar10 (paper, fast, cifar-fast)"),
    ({"recipe_name": "paper", "dataset": "imagenet"},
     "recipe 'paper' is written for cifar10 or cifar100, not imagenet: give --dataset cifar10 or cifar100, or a "
     "recipe for imagenet (paper-imagenet, step-90, imagenette, imagenette-fast)"),
])
def test_what_the_run_would_not_read_is_refused_in_one_line(kwargs: dict, line: str) -> None:
    with pytest.raises(ValueError) as error:
        resolve_run(**kwargs)
    assert str(error.value) == line


def test_a_toml_config_names_itself_in_the_refusal(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('recipe = "fast"\ncrop_size = 64\n')
    with pytest.raises(ValueError, match=rf"^--config {config}: crop_size: recipe 'fast' on cifar10 does not use"):
        resolve_run(config=config)
    config.write_text('recipe = "fast"\nlr = 0.3\ndataset = "cifar100"\n')
    plan = resolve_run(config=config)
    assert (plan.recipe.name, plan.recipe.lr, plan.options.dataset) == ("fast", 0.3, "cifar100")


def test_the_recorded_recipe_holds_only_what_the_run_reads() -> None:
    cifar = resolve_run("fast").recorded_recipe()
    for absent in ("scale_min", "scale_max", "crop_size", "eval_resize", "lighting_std", "lighting_pca", "mean",
                   "mean_images", "milestones", "gamma", "warmup_iterations", "plateau_patience", "family", "dataset"):
        assert absent not in cifar, absent
    assert (cifar["pad"], cifar["peak_fraction"], cifar["lr"], cifar["val_split"]) == (4, 0.15, 0.2, 0)
    imagenette = resolve_run(dataset="imagenette").recorded_recipe()
    for absent in ("pad", "peak_fraction", "plateau_patience", "family"):
        assert absent not in imagenette, absent
    assert (imagenette["val_split"], imagenette["mean"]) == (0, "pixel")  # imagenette reads both (held-out tuning)
    assert (imagenette["crop_size"], imagenette["scale_min"], imagenette["milestones"]) == (112, 128, [0.5, 0.75])
    assert resolve_run(dataset="imagenet").recorded_recipe()["mean"] == "pixel"


def test_a_plan_made_directly_is_checked_too() -> None:
    with pytest.raises(ValueError, match="recipe 'imagenette' is written for imagenet or imagenette, not cifar10"):
        RunPlan(RunOptions(), get_recipe("imagenette"))
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        RunPlan(RunOptions(model="resnet21"), get_recipe("paper"))
    with pytest.raises(ValueError, match="--resume takes no value or 'auto', got 'yes'"):
        RunPlan(RunOptions(resume="yes"), get_recipe("paper"))
    plan = RunPlan(RunOptions(dataset="imagenette"), get_recipe("imagenette"))
    assert (plan.options.model, plan.options.out) == ("resnet18", "runs/resnet18-imagenette")


def test_decide_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert decide_resume("auto", run) is False and decide_resume(False, run) is False
    with pytest.raises(FileNotFoundError, match=r"^--resume: no checkpoint in .*checkpoints; start without --resume"):
        decide_resume(True, run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "previous.pt").write_bytes(b"")  # last.pt lost: previous.pt still resumes
    assert decide_resume("auto", run) is True and decide_resume(True, run) is True
    with pytest.raises(ValueError, match=r"already holds a run; pass --resume \(or --resume auto\)"):
        decide_resume(False, run)
    with pytest.raises(ValueError, match="--resume takes no value or 'auto', got 'always'"):
        decide_resume("always", run)


def test_the_cli_refuses_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--recipe", "fast", "--set", "crop_size=224", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "resnets train: error: --set crop_size: recipe 'fast' on cifar10 does not use crop_size (an ImageNet-style "
        "setting; CIFAR runs do not read it); leave it out"]
    assert main(["train", "--recipe", "imagenette", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "resnets train: error: recipe 'imagenette' is written for imagenet or imagenette, not cifar10: give "
        "--dataset imagenet or imagenette, or a recipe for cifar10 (paper, fast, cifar-fast)"]
    assert not (tmp_path / "x").exists()


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it() -> None:
    """`--precision auto` on the CPU: bf16 with avx512_bf16 or AMX in /proc/cpuinfo (read here, not by the package),
    else fp32, where emulated bf16 is slower; the plan (and so config.json) holds the precision it resolved to."""
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    plan = resolve_run("cifar-fast", precision="auto", device="cpu")
    assert plan.options.precision == ("bf16" if native else "fp32")
    assert resolve_run("cifar-fast", precision="bf16", device="cpu").options.precision == "bf16"  # asked: kept
