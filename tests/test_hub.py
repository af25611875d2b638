"""hubconf.py through torch.hub itself: `load` with source="local"; `list` and `help`, which only take a GitHub repo,
on a hub cache entry that is this repository (so nothing is downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resnets

REPOSITORY = Path(__file__).resolve().parents[1]
WEIGHTS = REPOSITORY / "src" / "resnets" / "assets" / "weights"


@pytest.fixture
def hub_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`local/resnets:main`, cached in a scratch torch hub dir as a link to this repository."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME unless set_dir was called
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "local_resnets_main").symlink_to(REPOSITORY)
    return "local/resnets:main"


def file_tensors(name: str) -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS / name, map_location="cpu", weights_only=True)["model"]


def same_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k].to(state[k].dtype)) for k in state)


def test_hub_list_shows_one_entry_per_model_and_nothing_else(hub_repo: str) -> None:
    entries = torch.hub.list(hub_repo, trust_repo=True, skip_validation=True, verbose=False)
    assert entries == sorted(resnets.list_models())
    assert {"resnet18", "resnet34", "resnet50", "plain18", "resnet20", "resnet1202", "plain110", "resnet164",
            "preact_resnet164", "preact_resnet200"} <= set(entries)
    assert len(entries) == 31 and "dependencies" not in entries and "create_model" not in entries


def test_hub_help_describes_the_architecture_and_the_shipped_weights(hub_repo: str) -> None:
    text = torch.hub.help(hub_repo, "resnet18", trust_repo=True, skip_validation=True)
    assert text.startswith("resnet18: ResNet-18, ImageNet (Table 1, 224x224 inputs); basic blocks [2, 2, 2, 2]")
    # The error of resnet18-imagenette.json (21.0955...), rounded by hand.
    assert "  imagenette: imagenette, 21.10% top-1 error on 3,925 test images, 10 classes" in text
    assert 'torch.hub.load(repo, "resnet18", pretrained="imagenette")' in text
    text = torch.hub.help(hub_repo, "resnet20", trust_repo=True, skip_validation=True)
    assert text.index("  paper: cifar10, 12.28%") < text.index("  fast: cifar10, 12.15%")  # the default first
    assert "No shipped weights" in torch.hub.help(hub_repo, "resnet50", trust_repo=True, skip_validation=True)


def test_hub_load_gives_the_shipped_model() -> None:
    hub = torch.hub.load(str(REPOSITORY), "resnet18", source="local", pretrained="imagenette")
    assert same_weights(hub, file_tensors("resnet18-imagenette.pt"))
    assert same_weights(hub, resnets.create_model("resnet18.imagenette").state_dict())
    assert (hub.spec.num_classes, hub.spec.shortcut) == (10, "A") and hub.meta["pretrained"] == "resnet18.imagenette"
    default = torch.hub.load(str(REPOSITORY), "resnet20", source="local", pretrained=True)
    assert same_weights(default, file_tensors("resnet20.pt"))  # resnet20's default tag: paper


def test_hub_load_without_weights_passes_the_options_on() -> None:
    fresh = torch.hub.load(str(REPOSITORY), "resnet20", source="local", num_classes=100)
    assert fresh.fc.out_features == 100 and fresh.spec.shortcut == "A" and fresh.meta == {}
    assert not same_weights(torch.hub.load(str(REPOSITORY), "resnet20", source="local"), file_tensors("resnet20.pt"))
    wide = torch.hub.load(str(REPOSITORY), "resnet50", source="local")
    assert wide.fc.out_features == 1000 and wide.spec.block == "bottleneck"


def test_hubconf_imports_the_repository_package_when_resnets_is_not_installed() -> None:
    """A fresh interpreter without the editable install's path: hubconf finds src/ itself."""
    script = f"""
import importlib.util, sys
sys.path = [p for p in sys.path if os.path.realpath(p) != {str(REPOSITORY / "src")!r}]
assert importlib.util.find_spec("resnets") is None, "resnets is still importable"
import torch
model = torch.hub.load({str(REPOSITORY)!r}, "resnet20", source="local", pretrained="fast")
print(sys.modules["resnets"].__file__, model.meta["pretrained"])
"""
    done = subprocess.run([sys.executable, "-c", "import os\n" + script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(REPOSITORY / "src" / "resnets" / "__init__.py"), "resnet20.fast"]
