"""Each test protocol's reduction and scales against probabilities worked out here by hand (plain torch ops on a
tiny network whose outputs the test fixes), not by the package's code: the order of averaging (score maps
averaged over positions, then softmax, then the mean over views: VGG's dense evaluation, as in the paper), the
views each protocol feeds, and the multi-scale shorter sides {224, 256, 384, 480, 640} x crop / 224."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from resnets.data.transforms import Normalize
from resnets.evaluate import protocols
from resnets.evaluate.protocols import evaluate, multiscale_sides

PLAIN = Normalize(mean=(0.0, 0.0, 0.0), std=None)  # inputs are just pixels / 255: the hand side needs no constants
CLASSES = 4


class HalvesNet(nn.Module):
    """Logits from the channel means of a view's left and right halves (a flip swaps them): W @ 6 features."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[3.0, -1, 0, 2, 0, -2], [0, 2, -3, 1, 1, 0],
                                                 [-2, 0, 2, 0, -1, 3], [1, 1, 1, -1, -1, -1]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        features = torch.cat([x[..., :half].mean(dim=(2, 3)), x[..., half:].mean(dim=(2, 3))], dim=1)
        return features @ self.weight.T


def halves_logits(view: torch.Tensor) -> torch.Tensor:
    """The same function written out for one uint8 view (3, h, w), for the expected values."""
    pixels = view.double() / 255
    half = pixels.shape[-1] // 2
    left, right = pixels[:, :, :half].mean(dim=(1, 2)), pixels[:, :, half:].mean(dim=(1, 2))
    return HalvesNet().weight.detach().double() @ torch.cat([left, right])


def size_map(height: int, width: int) -> torch.Tensor:
    """The score map `SizeNet` returns for an input of this size: (classes, height//16, width//16),
    values that differ by position and by size (amplitude height / 40), so both reductions and the scales matter."""
    k = torch.arange(CLASSES, dtype=torch.float64)[:, None, None]
    i = torch.arange(height // 16, dtype=torch.float64)[None, :, None]
    j = torch.arange(width // 16, dtype=torch.float64)[None, None, :]
    return torch.sin(1.0 + 0.9 * k + 0.37 * i * (k + 1) + 0.23 * j) * (height / 40)


class SizeNet(nn.Module):
    """A fully convolutional stand-in whose score map depends only on the input's size (`size_map`); it records
    every input size it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # evaluate() reads the device from the parameters
        self.seen: list[tuple[int, int]] = []

    def forward_fcn(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [tuple(x.shape[-2:])] * len(x)
        return size_map(*x.shape[-2:]).float().expand(len(x), -1, -1, -1) + self.anchor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fcn(x).mean(dim=(2, 3))


def scored_probabilities(model: nn.Module, data: list, protocol: str, **options) -> tuple[dict, torch.Tensor]:
    """evaluate() and the final class probabilities it scored (caught at its topk_correct call per batch)."""
    caught = []
    scored = protocols.topk_correct

    def spy(probabilities: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
        if ks == (1, 5):  # multi-scale also scores each scale alone, with ks=(1,)
            caught.append(probabilities.clone())
        return scored(probabilities, labels, ks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocols, "topk_correct", spy)
        result = evaluate(model, data, protocol, progress=False, normalize=PLAIN, **options)
    return result, torch.cat(caught).double()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 128x160 photo (shorter side already 128: resizing it to 128 returns the same pixels), whose
    columns differ so that crops and flips change the logits."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 128, 160), generator=generator, dtype=torch.uint8)
    ramp = torch.linspace(0, 120, 160).to(torch.uint8)
    return (image // 2 + ramp).to(torch.uint8)


def test_the_scales_are_the_papers_times_crop_over_224() -> None:
    assert multiscale_sides(224) == (224, 256, 384, 480, 640)
    assert multiscale_sides(112) == (112, 128, 192, 240, 320)


def test_center_is_the_softmax_of_the_centre_crop(photo: torch.Tensor) -> None:
    result, probabilities = scored_probabilities(HalvesNet(), [(photo, 0)], "center", resize=128, crop_size=112)
    # 128x160 -> the centre 112x112 starts at row (128-112)/2 = 8, column (160-112)/2 = 24
    expected = halves_logits(photo[:, 8:120, 24:136]).softmax(dim=0)
    assert result["views_per_image"] == 1
    assert torch.allclose(probabilities[0], expected, atol=1e-6)


def test_ten_crop_averages_the_softmax_of_the_ten_crops(photo: torch.Tensor) -> None:
    result, probabilities = scored_probabilities(HalvesNet(), [(photo, 0)], "10crop", resize=128, crop_size=112)
    # corners at rows 0 / 16 and columns 0 / 48, centre at (8, 24); each crop and its mirror image
    crops = [photo[:, top:top + 112, left:left + 112] for top, left in [(0, 0), (0, 48), (16, 0), (16, 48), (8, 24)]]
    views = crops + [crop.flip(-1) for crop in crops]
    expected = torch.stack([halves_logits(view).softmax(dim=0) for view in views]).mean(dim=0)
    assert result["views_per_image"] == 10
    assert torch.allclose(probabilities[0], expected, atol=1e-6)
    # what the order and the flips change here, far beyond the tolerance: the test can see both
    logits_first = torch.stack([halves_logits(view) for view in views]).mean(dim=0).softmax(dim=0)
    no_flips = torch.stack([halves_logits(view).softmax(dim=0) for view in crops]).mean(dim=0)
    assert float((logits_first - expected).abs().max()) > 1e-3
    assert float((no_flips - expected).abs().max()) > 1e-3


def test_ten_crop_of_a_record_that_tests_the_whole_photo_cuts_its_crops_at_256_over_224(photo: torch.Tensor) -> None:
    """imagenette-fast tests the whole 128 px photo (resize = crop = 128): ten crops of 128 from the photo at 128
    would be one view and its mirror; they are cut from the photo at shorter side 128 * 256 / 224 = 146 instead."""
    result, probabilities = scored_probabilities(HalvesNet(), [(photo, 0)], "10crop", resize=128, crop_size=128)
    resized = TF.resize(photo, [146], antialias=True)  # 128x160 -> 146x182 (the longer side truncated)
    assert tuple(resized.shape[-2:]) == (146, 182)
    # corners at rows 0 / 18 and columns 0 / 54, centre at (9, 27)
    crops = [resized[:, top:top + 128, left:left + 128] for top, left in [(0, 0), (0, 54), (18, 0), (18, 54), (9, 27)]]
    views = crops + [crop.flip(-1) for crop in crops]
    expected = torch.stack([halves_logits(view).softmax(dim=0) for view in views]).mean(dim=0)
    assert result["views_per_image"] == 10
    assert torch.allclose(probabilities[0], expected, atol=1e-6)
    # the paper's own geometry (256 / 224) and the imagenette records' (128 / 112) are left as they were
    assert protocols.ten_crop_resize(256, 224) == 256 and protocols.ten_crop_resize(128, 112) == 128


def test_the_scales_follow_the_training_crop_of_a_net_tested_at_another_size() -> None:
    """The shipped imagenette-fast weights were trained on 112 px crops and are tested on the whole 128 px photo:
    their record says both, and multi-scale testing uses the 112 px sides, as for the nets tested on 112 crops."""
    from resnets.data.preprocess import Preprocessing, preprocessing_of
    from resnets.models import create_model

    record = preprocessing_of(create_model("resnet18", pretrained="imagenette-fast"))
    assert (record.resize, record.crop, record.train_crop, record.training_crop) == (128, 128, 112, 112)
    assert multiscale_sides(record.training_crop) == (112, 128, 192, 240, 320)
    old = preprocessing_of(create_model("resnet18", pretrained="imagenette"))
    assert (old.crop, old.train_crop, old.training_crop) == (112, None, 112)
    again = Preprocessing.from_meta(record.to_meta(), "imagenet", 10)
    assert again.train_crop == 112 and "train_crop" not in old.to_meta()


def expected_multiscale(sides: tuple[int, ...], reduction: str) -> torch.Tensor:
    """Per side: the score map of the whole (square) photo resized to that side, reduced; each side counts twice
    (the photo and its flip, whose map is the same here), so the mean over the 10 views is the mean over sides."""
    per_side = []
    for side in sides:
        scores = size_map(side, side)
        if reduction == "mean_then_softmax":
            per_side.append(scores.mean(dim=(1, 2)).softmax(dim=0))
        else:
            per_side.append(scores.softmax(dim=0).mean(dim=(1, 2)))
    return torch.stack(per_side).mean(dim=0)


@pytest.fixture(scope="module")
def square_photos() -> list:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (3, 224, 224), generator=generator, dtype=torch.uint8), label) for label in (0, 2)]


def test_multiscale_default_averages_score_maps_before_the_softmax_at_the_five_sides(square_photos: list) -> None:
    model = SizeNet()
    result, probabilities = scored_probabilities(model, square_photos, "multiscale", resize=128, crop_size=112)
    # the sides come from crop_size alone: 112 / 224 of the paper's, each photo and its flip, in this order
    assert model.seen == [(side, side) for side in (112, 128, 192, 240, 320) for _ in range(2 * len(square_photos))]
    expected = expected_multiscale((112, 128, 192, 240, 320), "mean_then_softmax")
    assert result["fcn_reduction"] == "mean_then_softmax" and result["views_per_image"] == 10
    assert list(result["per_scale_top1_error"]) == ["112", "128", "192", "240", "320"]
    assert torch.allclose(probabilities, expected.expand(2, -1), atol=1e-6)
    # the other reduction (measured 0.045 away), and the paper's unscaled sides, are 10^4 x the tolerance away or
    # more: a changed order or scale fails above
    sides = (112, 128, 192, 240, 320)
    assert float((expected_multiscale(sides, "softmax_then_mean") - expected).abs().max()) > 0.01
    assert float((expected_multiscale((224, 256, 384, 480, 640), "mean_then_softmax") - expected).abs().max()) > 0.01


def test_multiscale_softmax_then_mean_stays_an_option(square_photos: list) -> None:
    model = SizeNet()
    result, probabilities = scored_probabilities(model, square_photos, "multiscale", scales=(160, 224),
                                                 fcn_reduction="softmax_then_mean")
    assert sorted(set(model.seen)) == [(160, 160), (224, 224)] and result["fcn_reduction"] == "softmax_then_mean"
    assert torch.allclose(probabilities, expected_multiscale((160, 224), "softmax_then_mean").expand(2, -1),
                          atol=1e-6)
    with pytest.raises(ValueError, match="fcn_reduction must be one of"):
        evaluate(model, square_photos, "multiscale", progress=False, fcn_reduction="max")


def test_size_map_differs_between_reductions_on_one_map() -> None:
    """The hand side itself: on one 20x20 map the two reductions give visibly different probabilities."""
    scores = size_map(320, 320)
    gap = scores.mean(dim=(1, 2)).softmax(dim=0) - scores.softmax(dim=0).mean(dim=(1, 2))
    assert float(gap.abs().max()) > 0.05 and math.isclose(float(scores.softmax(dim=0).sum(dim=0).mean()), 1.0)


def test_protocols_json_names_its_reduction_and_an_old_multiscale_record_is_measured_again(tmp_path: Path) -> None:
    """protocols.json (the Imagenette series' record) keeps each protocol's result; a multi-scale entry written
    before issue 36 (no fcn_reduction: it used softmax_then_mean) is not taken for the current default's."""
    from resnets.analysis import imagenette
    from resnets.runs import RunPaths

    run = tmp_path / "resnet18-s0"
    run.mkdir()
    RunPaths(run).weights.write_bytes(b"weights")
    common = {"top1_error": 20.0, "top5_error": 2.0, "images": 10, "views_per_image": 1, "seconds": 1.0}
    old = {**common, "views_per_image": 10, "per_scale_top1_error": {"112": 21.0}}
    (run / imagenette.PROTOCOLS_FILE).write_text(json.dumps({
        "weights_sha256": imagenette.file_sha256(RunPaths(run).weights), "precision": "fp32", "source": "here",
        "protocols": {"center": common, "10crop": {**common, "views_per_image": 10}, "multiscale": old}}))
    asked = []

    def fake_evaluate_checkpoint(run_dir, protocol: str, **options) -> dict:
        asked.append(protocol)
        return {**old, "top1_error": 15.0, "fcn_reduction": "mean_then_softmax", "source": "here"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imagenette, "evaluate_checkpoint", fake_evaluate_checkpoint)
        record = imagenette.evaluate_protocols(run, precision="fp32", log=lambda line: None)
        assert asked == ["multiscale"]
        assert record["protocols"]["multiscale"]["fcn_reduction"] == "mean_then_softmax"
        assert record["protocols"]["multiscale"]["top1_error"] == 15.0 and record["protocols"]["center"] == common
        imagenette.evaluate_protocols(run, precision="fp32", log=lambda line: None)
        assert asked == ["multiscale"]  # now current: nothing measured again
