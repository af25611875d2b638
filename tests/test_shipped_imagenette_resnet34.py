"""test_shipped_imagenette.py's check for the shipped ResNet-34 Imagenette weights, in a file of their own so that
pytest-xdist (`--dist loadfile`) can run it beside the 18-layer nets' (each file decodes the photos once)."""

from __future__ import annotations

import pytest

from .test_shipped_imagenette import Photos, check_every_photo, shipped_imagenette


@pytest.mark.parametrize("name", shipped_imagenette(lambda name: name.startswith("resnet34.")))
def test_shipped_resnet34_imagenette_weights_give_their_error_on_every_validation_photo(
        name: str, imagenette_validation: Photos) -> None:
    check_every_photo(name, imagenette_validation)
