"""The paper's test protocols (Sec. 3.4): 10-crop geometry, multi-scale fully-convolutional views, the FCN
identity, and evaluate() on real photos with exactly known error rates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import resnets
from resnets.data.folder import ImageFolderDataset, read_image
from resnets.data.transforms import Normalize, resize_shorter_side
from resnets.evaluate.protocols import (
    MULTISCALE_SHORTER_SIDES,
    average_view_probabilities,
    crop_box,
    evaluate,
    multiscale_views,
    ten_crop_boxes,
    ten_crop_views,
)


@pytest.fixture(scope="module")
def landscape_photo(imagenet_sample_dir: Path) -> torch.Tensor:
    """A 500x375 photo: resized to shorter side 256 it is 256x341."""
    image = read_image(imagenet_sample_dir / "n01440764_tench.JPEG")
    assert image.shape == (3, 375, 500)
    return image


@pytest.fixture(scope="module")
def six_photos(imagenet_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 6 real photos (one grayscale), linked from imagenet-sample."""
    photos = sorted(imagenet_sample_dir.glob("*.JPEG"))
    grayscale = next(p for p in photos if Image.open(p).mode == "L")
    chosen = [*photos[:5], grayscale]
    folder = tmp_path_factory.mktemp("six")
    for photo in chosen:
        (folder / photo.name).symlink_to(photo.resolve())
    return folder


@pytest.fixture(scope="module")
def resnet18() -> resnets.ResNet:
    torch.manual_seed(0)
    return resnets.create_model("resnet18").eval()


def map_size(n: int) -> int:
    """Spatial size after the ResNet stem (7x7/2 conv pad 3, 3x3/2 max pool pad 1) and three stride-2 stages."""
    n = (n + 2 * 3 - 7) // 2 + 1
    for _ in range(4):
        n = (n + 2 * 1 - 3) // 2 + 1
    return n


# --- 10-crop ------------------------------------------------------------------------------------------------------

def test_ten_crop_boxes_hand_computed() -> None:
    # 256x341: corners at rows 0 and 256-224=32, columns 0 and 341-224=117; centre (32/2, 117/2=58.5 -> 58).
    five = [(0, 0, 224, 224), (0, 117, 224, 224), (32, 0, 224, 224), (32, 117, 224, 224), (16, 58, 224, 224)]
    assert ten_crop_boxes(256, 341) == five + five
    # portrait 300x257: margins 76 and 33 -> centre (38, 16.5 -> 16); a square 256x256 -> centre (16, 16)
    assert ten_crop_boxes(300, 257)[4] == (38, 16, 224, 224) and ten_crop_boxes(300, 257)[3] == (76, 33, 224, 224)
    assert ten_crop_boxes(256, 256)[4] == (16, 16, 224, 224)
    assert ten_crop_boxes(224, 224) == [(0, 0, 224, 224)] * 10
    with pytest.raises(ValueError, match="smaller than"):
        ten_crop_boxes(223, 400)


@pytest.mark.parametrize("size", [(256, 341), (300, 257), (256, 256)])
def test_ten_crop_matches_torchvision_rounding(size: tuple[int, int]) -> None:
    image = torch.arange(3 * size[0] * size[1], dtype=torch.int32).reshape(3, *size)
    ours = [crop_box(image, box) for box in ten_crop_boxes(*size)]
    theirs = TF.ten_crop(image, [224])
    assert all(torch.equal(a, b) for a, b in zip(ours[:5], theirs[:5], strict=True))
    # torchvision's flipped views are crops of the flipped image: its top-left is our flipped top-right, etc.
    for ours_index, theirs_index in [(0, 6), (1, 5), (2, 8), (3, 7)]:
        assert torch.equal(TF.horizontal_flip(ours[ours_index]), theirs[theirs_index])
    # ... and its flipped centre sits one column off ours when the horizontal margin is odd (half-even rounding)
    margin_is_odd = (size[1] - 224) % 2 == 1
    assert torch.equal(TF.horizontal_flip(ours[4]), theirs[9]) != margin_is_odd


def test_ten_crop_views_of_a_real_photo_are_slices_of_the_resized_image(landscape_photo: torch.Tensor) -> None:
    resized = resize_shorter_side(landscape_photo, 256)
    assert resized.shape == (3, 256, 341)
    views = ten_crop_views(landscape_photo)
    assert views.shape == (10, 3, 224, 224) and views.dtype == torch.uint8
    for index, (top, left, height, width) in enumerate(ten_crop_boxes(256, 341)):
        expected = resized[:, top:top + height, left:left + width]
        assert torch.equal(views[index], expected.flip(-1) if index >= 5 else expected), index
    assert not torch.equal(views[0], views[1])


# --- multi-scale, fully convolutional ------------------------------------------------------------------------------

def test_multiscale_views_and_score_map_shapes(landscape_photo: torch.Tensor, resnet18: resnets.ResNet) -> None:
    views = multiscale_views(landscape_photo)
    assert len(views) == 10 == 2 * len(MULTISCALE_SHORTER_SIDES)
    with torch.inference_mode():
        for index, view in enumerate(views):
            shorter = MULTISCALE_SHORTER_SIDES[index // 2]
            assert view.shape == (3, shorter, int(shorter * 500 / 375))  # whole image, no crop
            if index % 2:  # the flip: same score-map shape, no need to run it
                assert torch.equal(view, views[index - 1].flip(-1))
                continue
            scores = resnet18.forward_fcn(view.unsqueeze(0).float() / 255)
            assert scores.shape == (1, 1000, map_size(view.shape[1]), map_size(view.shape[2]))
        assert resnet18.forward_fcn(torch.rand(1, 3, 224, 224)).shape == (1, 1000, 7, 7)
    assert [map_size(s) for s in (224, 256, 298, 384, 640)] == [7, 8, 10, 12, 20]


def test_fcn_form_equals_pooled_form(resnet18: resnets.ResNet) -> None:
    torch.manual_seed(1)
    with torch.inference_mode():
        for shape in [(2, 3, 224, 224), (1, 3, 256, 341)]:
            x = torch.rand(shape)
            # linear FC after global average pooling: averaging the score map's logits == the pooled forward
            difference = resnet18.forward_fcn(x).mean(dim=(2, 3)) - resnet18(x)
            assert difference.abs().max() < 1e-4, shape

        views = [torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)]
        center = average_view_probabilities(resnet18, views)
        assert torch.allclose(center.sum(dim=1), torch.ones(2))
        logits_first = average_view_probabilities(resnet18, views, fully_convolutional=True)  # the default
        assert (logits_first - center).abs().max() < 1e-5
        softmax_first = average_view_probabilities(resnet18, views, fully_convolutional=True,
                                                   fcn_reduction="softmax_then_mean")
        by_hand = resnet18.forward_fcn(Normalize()(views[0].float() / 255)).softmax(dim=1).mean(dim=(2, 3))
        assert torch.allclose(softmax_first, by_hand, atol=1e-6)
        assert torch.allclose(softmax_first.sum(dim=1), torch.ones(2))
        assert (softmax_first - center).abs().max() > 1e-6  # a 7x7 map: the two averages genuinely differ

        # views of different sizes: each view's probabilities weigh equally
        other = [torch.randint(0, 256, (2, 3, 256, 300), dtype=torch.uint8)]
        mixed = average_view_probabilities(resnet18, views + other + views, fully_convolutional=True,
                                           fcn_reduction="softmax_then_mean")
        alone = average_view_probabilities(resnet18, other, fully_convolutional=True,
                                           fcn_reduction="softmax_then_mean")
        assert torch.allclose(mixed, (2 * softmax_first + alone) / 3, atol=1e-6)


# --- evaluate() -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("protocol", "views"), [("center", 1), ("10crop", 10), ("multiscale", 2)])
def test_evaluate_real_photos_every_protocol(six_photos: Path, resnet18: resnets.ResNet, protocol: str,
                                             views: int) -> None:
    # one scale (and its flip) instead of five keeps the multi-scale run short on CPU; the five-scale views
    # are tested above
    result = evaluate(resnet18, six_photos, protocol, batch_size=3, progress=False, scales=(224,))
    assert result["protocol"] == protocol and result["images"] == 6 and result["views_per_image"] == views
    assert 0 <= result["top5_error"] <= result["top1_error"] <= 100
    assert result["images_per_s"] > 0 and result["skipped_images"] == 0


def test_evaluate_error_rates_are_exact(six_photos: Path) -> None:
    """A network that ignores its input and ranks the classes 2, 0, 1, 3, 4, 6, 5, ...: photos labelled 2 are
    right at top-1, photos labelled 4 (ranked 5th) only at top-5, photos labelled 5 (ranked 7th) never."""
    model = resnets.create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([9.0, 8, 10, 7, 6, 3, 5, 2, 1, 0]))
    names = sorted(p.name for p in six_photos.iterdir())
    labels_file = six_photos.parent / "labels.txt"
    labels_file.write_text(f"{names[0]} 2\n{names[1]} 5\n{names[2]} 5\n{names[5]} 2\n")  # 4 photos, 1 grayscale
    dataset = ImageFolderDataset(six_photos, labels_file=labels_file)
    assert dataset.classes == [str(i) for i in range(6)] and len(dataset) == 4
    for protocol in ("center", "10crop", "multiscale"):
        result = evaluate(model, dataset, protocol, batch_size=4, progress=False, scales=(224,))
        assert (result["top1_error"], result["top5_error"]) == (50.0, 50.0), protocol

    labels_file.write_text("".join(f"{name} {2 if i < 2 else 4}\n" for i, name in enumerate(names)))
    result = evaluate(model, ImageFolderDataset(six_photos, labels_file=labels_file), "center", progress=False)
    assert result["top1_error"] == pytest.approx(100 * 4 / 6) and result["top5_error"] == 0.0

    labels_file.write_text(f"{names[0]} 12\n")
    with pytest.raises(ValueError, match="beyond the model's 10 classes"):
        evaluate(model, ImageFolderDataset(six_photos, labels_file=labels_file), "center", progress=False)


def test_evaluate_accepts_plain_datasets_of_uint8_images(six_photos: Path, resnet18: resnets.ResNet) -> None:
    images = [read_image(p) for p in sorted(six_photos.iterdir())[:2]]
    plain = [(image, 3) for image in images]
    result = evaluate(resnet18, plain, "center", progress=False)  # type: ignore[arg-type]
    assert result["images"] == 2 and result["skipped_images"] == 0
    with pytest.raises(TypeError, match="uint8"):
        evaluate(resnet18, [(images[0].float(), 3)], "center", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown test protocol"):
        evaluate(resnet18, plain, "12crop", progress=False)  # type: ignore[arg-type]


def test_multiscale_batches_mixed_sizes_like_one_image_at_a_time(six_photos: Path, resnet18: resnets.ResNet) -> None:
    """Batched multi-scale testing (photos of different shapes grouped by view size) gives each photo the same
    prediction as testing it alone, in dataset order; the per-scale errors are those of single-scale runs."""
    shapes = {read_image(p).shape[1:] for p in six_photos.iterdir()}
    assert len(shapes) > 1, "the fixture should mix photo shapes"
    batched = evaluate(resnet18, six_photos, "multiscale", batch_size=6, progress=False, scales=(160, 224),
                       keep_predictions=True)
    alone = evaluate(resnet18, six_photos, "multiscale", batch_size=1, progress=False, scales=(160, 224),
                     keep_predictions=True)
    assert batched["predictions"] == alone["predictions"] and batched["top1_error"] == alone["top1_error"]
    for side in (160, 224):
        single = evaluate(resnet18, six_photos, "multiscale", batch_size=6, progress=False, scales=(side,))
        assert batched["per_scale_top1_error"][str(side)] == single["top1_error"]
