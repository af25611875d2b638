"""Every shipped Imagenette net, through a loop that only uses `create_model` and `preprocess`, gives the error in
its metadata on all 3,925 validation photos (issue #35: the shipped weights are checked on every image).

Its own file, so that pytest-xdist (`--dist loadfile`) runs it beside the CIFAR checks of test_shipped_weights.py;
the photos are decoded once for all the nets."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model, list_pretrained, preprocess
from resnets.data.folder import read_image
from resnets.data.paths import datasets_root

from .conftest import skip_without_data

SHIPPED = list_pretrained()
IMAGENETTE = sorted(n for n in SHIPPED if SHIPPED[n]["dataset"] == "imagenette") or [pytest.param(
    None, marks=pytest.mark.skip(reason="no Imagenette weights shipped yet"))]
BATCH = 250


@pytest.fixture(scope="module")
def validation() -> list[tuple[torch.Tensor, str]]:
    """Every validation photo, decoded, with its class folder's name (the wnid)."""
    folder = datasets_root() / "imagenette" / "val"
    if not folder.is_dir():
        skip_without_data(f"{folder} not found")
    return [(read_image(photo), photo.parent.name) for photo in sorted(folder.rglob("*.JPEG"))]


@pytest.mark.parametrize("name", IMAGENETTE)
def test_shipped_imagenette_weights_give_their_error_on_every_validation_photo(
        name: str, validation: list[tuple[torch.Tensor, str]]) -> None:
    """The error in the metadata (measured on the stored fp16-rounded weights with the center protocol) within
    0.2 points. channels_last only changes the memory layout (1.35x on CPU)."""
    stated = SHIPPED[name]
    model = create_model(name).eval().to(memory_format=torch.channels_last)
    wrong = 0
    with torch.inference_mode():
        for start in range(0, len(validation), BATCH):
            batch = validation[start:start + BATCH]
            inputs = preprocess(model, [image for image, _ in batch]).contiguous(memory_format=torch.channels_last)
            labels = torch.tensor([stated["classes"].index(wnid) for _, wnid in batch])
            wrong += int((model(inputs).argmax(1) != labels).sum())
    error = 100 * wrong / len(validation)
    assert len(validation) == stated["check_subset"]["images"] == 3925
    assert abs(error - stated["check_subset"]["top1_error"]) <= 0.2, (name, error)
    assert abs(error - stated["test_top1_error"]) <= 0.2, (name, error)
