"""Where data and caches live. One setting each, so that code, tests and CI agree on a single place."""

from __future__ import annotations

import os
from pathlib import Path

DATASETS_ENV = "RESNETS_DATASETS"
CACHE_ENV = "RESNETS_CACHE"
# Relative on purpose: CI and pytest run from the repository root, with the shared datasets beside the repository.
DEFAULT_DATASETS = Path("..") / "shared" / "datasets"
DEFAULT_CACHE = Path("~") / ".cache" / "resnets"
# The copies under the datasets root whose test (CIFAR-10) or validation (Imagenette) images the shipped weights'
# metadata was measured on (benchmarks/check_shipped.py checks every image again).
TEST_FOLDERS = {"cifar10": "cifar10-jpeg/test", "imagenette": "imagenette/val"}


def datasets_root() -> Path:
    """Folder holding real datasets: $RESNETS_DATASETS, else ../shared/datasets relative to the current directory."""
    value = os.environ.get(DATASETS_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_DATASETS


def cache_dir() -> Path:
    """Folder for derived files that can always be rebuilt (decoded tensors): $RESNETS_CACHE, else ~/.cache/resnets."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_CACHE.expanduser()
