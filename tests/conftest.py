"""Shared fixtures. Real data is found only through resnets.data.paths.datasets_root(), the project's one setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnets.data.paths import DATASETS_ENV, datasets_root


@pytest.fixture(scope="session")
def cifar10_jpeg_dir() -> Path:
    """The JPEG copy of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg); skips when it is not on this machine."""
    folder = datasets_root() / "cifar10-jpeg"
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        pytest.skip(reason=f"CIFAR-10 JPEG copy not found at {folder.resolve()}; set {DATASETS_ENV} to the folder "
                           "that holds cifar10-jpeg/ to run this test")
    return folder


@pytest.fixture(scope="session")
def imagenet_sample_dir() -> Path:
    """The 200 full-size photos `<wnid>_<name>.JPEG`; skips when they are not on this machine."""
    folder = datasets_root() / "imagenet-sample"
    if not folder.is_dir() or not any(folder.glob("*.JPEG")):
        pytest.skip(reason=f"imagenet-sample not found at {folder.resolve()}; set {DATASETS_ENV} to the folder "
                           "that holds imagenet-sample/ to run this test")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Small batches gain nothing from intra-op threads, and on shared cores OpenMP barriers stall (up to 8x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
