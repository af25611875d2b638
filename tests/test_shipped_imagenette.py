"""Every shipped Imagenette net, through a loop that only uses `create_model` and `preprocess`, gives the error in
its metadata on all 3,925 validation photos (issue #35: the shipped weights are checked on every image).

The 18-layer nets here, the 34-layer ones in test_shipped_imagenette_resnet34.py: pytest-xdist (`--dist loadfile`)
runs the two files (and the CIFAR checks of test_shipped_weights.py) side by side; each file decodes the photos
once for all its nets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from resnets import create_model, list_pretrained, preprocess

SHIPPED = list_pretrained()
BATCH = 250
Photos = list[tuple[torch.Tensor, str]]


def shipped_imagenette(keep: Callable[[str], bool]) -> list:
    """The shipped Imagenette weights whose MODEL.TAG `keep` takes, as pytest parameters."""
    names = sorted(n for n in SHIPPED if SHIPPED[n]["dataset"] == "imagenette" and keep(n))
    return names or [pytest.param(None, marks=pytest.mark.skip(reason="no such Imagenette weights shipped"))]


def check_every_photo(name: str, validation: Photos) -> None:
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


@pytest.mark.parametrize("name", shipped_imagenette(lambda name: not name.startswith("resnet34.")))
def test_shipped_imagenette_weights_give_their_error_on_every_validation_photo(name: str,
                                                                              imagenette_validation: Photos) -> None:
    check_every_photo(name, imagenette_validation)
