"""Shared fixtures. Real data is found only through resnets.data.paths.datasets_root(), the project's one setting;
when it is unset, the tests point it at ../shared/datasets beside the repository, whatever the current directory."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from resnets.data.cifar import FORMATS
from resnets.data.paths import DATASETS_ENV, datasets_root

REPOSITORY = Path(__file__).resolve().parents[1]
if not os.environ.get(DATASETS_ENV, "").strip():
    os.environ[DATASETS_ENV] = str(REPOSITORY.parent / "shared" / "datasets")


# README runs the tests in one pytest-xdist worker per core (`-n auto --dist loadfile`: a file's tests, and so its
# module fixtures, stay in one worker). Each worker, and every command it starts, gets its share of the cores: two
# OpenMP teams on the same cores stall at every barrier that waits on a descheduled thread (up to 8x slower).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, len(os.sched_getaffinity(0)) // WORKERS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # inherited by the `resnets` subprocesses of the CLI tests
torch.set_num_threads(THREADS)

REQUIRE_DATA_ENV = "RESNETS_REQUIRE_DATA"
BENCHMARKS = REPOSITORY / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module. Its folder goes last on sys.path, for the siblings a benchmark imports
    (`from whole_photo_sizes import ...`), so that its generic file names never shadow an installed module."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skip_without_data(reason: str) -> None:
    """Skip a test whose real data is absent; with RESNETS_REQUIRE_DATA=1 (CI) fail instead, so that a run can
    never pass by skipping."""
    if os.environ.get(REQUIRE_DATA_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_DATA_ENV}=1 makes missing data an error)")
    pytest.skip(reason=reason)


@pytest.fixture(scope="session")
def cifar10_jpeg_dir() -> Path:
    """The JPEG copy of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg); skips when it is not on this machine."""
    folder = datasets_root() / "cifar10-jpeg"
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        skip_without_data(f"CIFAR-10 JPEG copy not found at {folder.resolve()}; set {DATASETS_ENV} to the folder "
                           "that holds cifar10-jpeg/ to run this test")
    return folder


@pytest.fixture(scope="session")
def imagenet_sample_dir() -> Path:
    """The 200 full-size photos `<wnid>_<name>.JPEG`; skips when they are not on this machine."""
    folder = datasets_root() / "imagenet-sample"
    if not folder.is_dir() or not any(folder.glob("*.JPEG")):
        skip_without_data(f"imagenet-sample not found at {folder.resolve()}; set {DATASETS_ENV} to the folder "
                           "that holds imagenet-sample/ to run this test")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Small batches gain nothing from intra-op threads, and on shared cores OpenMP barriers stall (up to 8x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_synthetic_cifar(folder: Path, train: int = 2048, test: int = 512, seed: int = 0) -> Path:
    """A learnable CIFAR-10 stand-in in the official binary layout, for tests that must run without ../shared:
    each class is a colour and a stripe pattern of its own, under per-image noise, shifts and brightness changes."""
    fmt = FORMATS["cifar10"]
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(10, 3, 1, 1, generator=generator) * 0.6 + 0.2
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    patterns = torch.stack([torch.sin((rows * (k % 5 + 1) + cols * (k // 5)) * 0.4) for k in range(10)])[:, None]

    def images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % 10
        shifts = torch.randint(0, 32, (count,), generator=generator)
        pattern = torch.stack([patterns[k].roll(int(s), dims=-1) for k, s in zip(labels, shifts, strict=True)])
        brightness = 0.8 + 0.4 * torch.rand(count, 1, 1, 1, generator=generator)
        pixels = (colours[labels] + 0.15 * pattern) * brightness + 0.12 * torch.randn(count, 3, 32, 32,
                                                                                       generator=generator)
        return (pixels.clamp(0, 1) * 255).round().to(torch.uint8), labels

    for split, count in (("train", train), ("test", test)):
        pixels, labels = images(count)
        records = torch.cat([labels[:, None].to(torch.uint8), pixels.flatten(1)], 1).numpy()
        for part, file in zip(np.array_split(records, len(fmt.files[split])), fmt.files[split], strict=True):
            part.tofile(folder / file)
    (folder / fmt.names_file).write_text("\n".join(f"class{k}" for k in range(10)) + "\n")
    return folder


@pytest.fixture(scope="session")
def synthetic_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cifar(tmp_path_factory.mktemp("synthetic-cifar"))


@pytest.fixture(params=["synthetic", "jpeg"])
def cifar_data(request: pytest.FixtureRequest) -> Path:
    """Each training-loop test runs on data it writes itself (always) and on the real JPEG copy (when present)."""
    if request.param == "synthetic":
        return request.getfixturevalue("synthetic_cifar")
    return request.getfixturevalue("cifar10_jpeg_dir")


def smooth_photos(count: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 3, size, size) images of low-frequency colour waves: resampling filters barely differ on them,
    so two resizing paths that read the same region must agree closely, and a misplaced region cannot."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    waves = torch.rand(count, 3, 4, generator=generator)
    pixels = 0.5 + 0.25 * torch.sin(rows / (12 + 20 * waves[..., 0, None, None]) + 6 * waves[..., 1, None, None]) \
        + 0.25 * torch.cos(cols / (10 + 20 * waves[..., 2, None, None]) + rows / (40 + 40 * waves[..., 3, None, None]))
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


def write_synthetic_imagenette(folder: Path, train_per_class: int = 12, val_per_class: int = 4, seed: int = 0) -> Path:
    """An Imagenette-shaped folder (train/ and val/ of two wnid class folders, 224x224 JPEGs) that a network can
    learn: each class its own colour cast over smooth waves, under per-image noise."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(("n01440764", "n02102040")):
            (folder / split / wnid).mkdir(parents=True)
            photos = smooth_photos(per_class, seed=seed + 7 * label + (100 if split == "val" else 0)).float()
            cast = torch.tensor([60.0, -40.0, -20.0] if label == 0 else [-40.0, 10.0, 60.0])[:, None, None]
            photos = (photos + cast + 8 * torch.randn(photos.shape, generator=generator)).clamp(0, 255)
            for index, photo in enumerate(photos.round().to(torch.uint8)):
                Image.fromarray(photo.permute(1, 2, 0).numpy()).save(folder / split / wnid / f"{wnid}_{index}.JPEG",
                                                                     quality=90)
    return folder


def resume_detection_at_iteration_2(options, capsys: pytest.CaptureFixture[str]) -> Path:
    """A 4-iteration detection run (already trained in options.out, checkpointing every 2) restarted as if killed
    after its checkpoint at iteration 2; asserts it resumes (announced at iteration 2, not a restart from zero, which
    would end with the same weights in deterministic mode) and ends bit-identical to the uninterrupted run."""
    import dataclasses
    import shutil

    from resnets.detection import load_detector, train_detector

    whole = Path(options.out)
    resumed = whole.parent / f"{whole.name}-resumed"
    shutil.copytree(whole, resumed)
    shutil.copy(resumed / "checkpoints" / "previous.pt", resumed / "checkpoints" / "last.pt")
    (resumed / "model.pt").unlink()
    assert torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2
    capsys.readouterr()
    train_detector(dataclasses.replace(options, out=str(resumed), resume="auto"))
    announced = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resumed ")]
    assert announced == [f"resumed {resumed / 'checkpoints' / 'last.pt'} at iteration 2 of 4"]
    a, _ = load_detector(whole)
    b, _ = load_detector(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    return resumed
