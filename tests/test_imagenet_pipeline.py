"""ImageNet input pipeline (Sec. 3.4) on real photos and on files written here: decoding, folder layouts,
bad files, scale augmentation, PCA lighting, mean image."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from resnets.data.folder import (
    BadImageError,
    ImageFolderDataset,
    open_image_folder,
    read_image,
    wnid_of,
    wnid_prefixed_dataset,
)
from resnets.data.transforms import (
    IMAGENET_LIGHTING_EIGVAL,
    IMAGENET_LIGHTING_EIGVEC,
    Normalize,
    PaperTrainTransform,
    PCALighting,
    TrainViewParams,
    compute_mean_image,
    compute_pca_lighting,
    resize_shorter_side,
    to_float,
)


@pytest.fixture(scope="module")
def sample_photos(imagenet_sample_dir: Path) -> list[Path]:
    return sorted(imagenet_sample_dir.glob("*.JPEG"))


def random_rgb(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


# --- decoding -------------------------------------------------------------------------------------------------

def test_grayscale_cmyk_rgba_palette_bmp_decode_to_rgb(tmp_path: Path) -> None:
    rgb = random_rgb()
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    rgba = np.concatenate([rgb, np.full((40, 60, 1), 77, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).save(tmp_path / "plain.bmp")  # torchvision cannot read BMP: the Pillow fallback does

    for name in ("gray.jpg", "cmyk.jpg", "rgba.png", "palette.png", "plain.bmp"):
        image = read_image(tmp_path / name)
        assert image.dtype == torch.uint8 and image.shape == (3, 40, 60), name
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=np.int16)
        assert np.abs(as_hwc(image).astype(np.int16) - expected).max() <= 1, name  # Pillow is the reference
    gray = read_image(tmp_path / "gray.jpg")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert np.array_equal(as_hwc(read_image(tmp_path / "rgba.png")), rgb)  # alpha dropped, colours exact
    assert np.array_equal(as_hwc(read_image(tmp_path / "plain.bmp")), rgb)
    # CMYK really went through a colour conversion back to (roughly) the original colours
    assert np.abs(as_hwc(read_image(tmp_path / "cmyk.jpg")).astype(int) - rgb).mean() < 20


def test_real_photos_decode_like_pillow(sample_photos: list[Path]) -> None:
    grayscale = [p for p in sample_photos if Image.open(p).mode == "L"]
    assert grayscale, "imagenet-sample should hold some grayscale photos"
    for path in [sample_photos[0], grayscale[0]]:
        image = read_image(path)
        reference = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        assert image.shape == (3, *reference.shape[:2])
        # libjpeg-turbo in torchvision and in Pillow may differ by an IDCT rounding step
        assert np.abs(as_hwc(image).astype(np.int16) - reference).mean() < 0.5


# --- folder layouts ---------------------------------------------------------------------------------------------

def write_class_folders(root: Path, counts: dict[str, int]) -> None:
    for class_index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(random_rgb(30, 36, seed=10 * class_index + i)).save(root / name / f"img{i}.JPEG")


def test_class_folder_layout_sorted_classes_json_mapping(tmp_path: Path) -> None:
    write_class_folders(tmp_path, {"n02000000": 2, "n01000000": 1, "n03000000": 1})
    (tmp_path / "n01000000" / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes == ["n01000000", "n02000000", "n03000000"]
    assert json.loads(json.dumps(dataset.class_to_idx)) == {"n01000000": 0, "n02000000": 1, "n03000000": 2}
    assert [label for _, label in dataset.samples] == [0, 1, 1, 2]
    image, label = dataset[1]
    assert image.shape == (3, 30, 36) and label == 1
    # a run's stored mapping decides the labels, also for a subset of the folders
    mapping = {"n03000000": 0, "n02000000": 1, "n01000000": 2, "n09999999": 3}
    assert ImageFolderDataset(tmp_path, class_to_idx=mapping).targets == [2, 1, 1, 0]
    with pytest.raises(ValueError, match="not in the given class_to_idx"):
        ImageFolderDataset(tmp_path, class_to_idx={"n01000000": 0})


def test_flat_folder_with_labels_file(tmp_path: Path) -> None:
    for i in range(4):
        Image.fromarray(random_rgb(20, 20, seed=i)).save(tmp_path / f"val {i}.JPEG")  # a space in the name
    (tmp_path / "by_name.txt").write_text("# comment\nval 0.JPEG n02\nval 1.JPEG\tn01\nval 2.JPEG, n02\n\n")
    by_name = ImageFolderDataset(tmp_path, labels_file=tmp_path / "by_name.txt")
    assert by_name.classes == ["n01", "n02"] and by_name.targets == [1, 0, 1]
    assert by_name.samples[0][0] == str(tmp_path / "val 0.JPEG")
    (tmp_path / "by_index.txt").write_text("val 3.JPEG 4\nval 0.JPEG,0\n")
    assert ImageFolderDataset(tmp_path, labels_file=tmp_path / "by_index.txt").targets == [4, 0]
    (tmp_path / "missing.txt").write_text("val 9.JPEG 1\n")
    with pytest.raises(FileNotFoundError, match=r"val 9\.JPEG"):
        ImageFolderDataset(tmp_path, labels_file=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="does not start with a WordNet id"):
        open_image_folder(tmp_path)  # flat, no labels file, names without wnids
    assert open_image_folder(tmp_path, labels_file=tmp_path / "by_name.txt").targets == [1, 0, 1]
    (tmp_path / "unknown.txt").write_text("val 0.JPEG n07\n")
    with pytest.raises(ValueError, match="'n07'"):
        ImageFolderDataset(tmp_path, labels_file=tmp_path / "unknown.txt", class_to_idx={"n01": 0, "n02": 1})


def test_imagenet_sample_labels_are_wnid_positions(imagenet_sample_dir: Path) -> None:
    dataset = wnid_prefixed_dataset(imagenet_sample_dir)
    assert len(dataset) == 200 and len(dataset.classes) == 200 and dataset.classes == sorted(dataset.classes)
    wnids = ["n99999999", *reversed(dataset.classes)]  # e.g. a model's class list, in its own order
    reordered = wnid_prefixed_dataset(imagenet_sample_dir, wnids)
    for path, label in reordered.samples[:5]:
        assert wnids[label] == wnid_of(path) == Path(path).name[:9]
    assert open_image_folder(imagenet_sample_dir).samples == dataset.samples
    with pytest.raises(ValueError, match="not in the given class list"):
        wnid_prefixed_dataset(imagenet_sample_dir, dataset.classes[:10])


# --- bad files ----------------------------------------------------------------------------------------------------

@pytest.fixture()
def folder_with_bad_files(tmp_path: Path, sample_photos: list[Path]) -> tuple[Path, list[str]]:
    write_class_folders(tmp_path, {"a": 2, "b": 2})
    data = sample_photos[0].read_bytes()
    corrupt = tmp_path / "a" / "img1_corrupt.JPEG"  # random bytes; not the last file of its class
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "b" / "img0_truncated.JPEG"
    truncated.write_bytes(data[: len(data) // 2])  # a real photo cut in half
    return tmp_path, [str(corrupt), str(truncated)]


def test_bad_image_fail_names_the_file_and_the_fix(folder_with_bad_files: tuple[Path, list[str]]) -> None:
    root, bad = folder_with_bad_files
    dataset = ImageFolderDataset(root)
    paths = [path for path, _ in dataset.samples]
    for bad_path in bad:
        with pytest.raises(BadImageError) as caught:
            dataset[paths.index(bad_path)]
        message = str(caught.value)
        assert bad_path in message and "--on-bad-image skip" in message and "\n" not in message
    with pytest.raises(BadImageError, match="truncated"):
        read_image(bad[1])
    with pytest.raises(BadImageError, match="not an image in a format"):
        read_image(bad[0])
    (root / "empty.JPEG").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        read_image(root / "empty.JPEG")


def test_bad_image_skip_counts_across_workers(folder_with_bad_files: tuple[Path, list[str]],
                                              caplog: pytest.LogCaptureFixture) -> None:
    root, bad = folder_with_bad_files
    dataset = ImageFolderDataset(root, on_bad_image="skip")
    paths = [path for path, _ in dataset.samples]
    with caplog.at_level(logging.WARNING, logger="resnets.data.folder"):
        image, label = dataset[paths.index(bad[0])]  # returns the next readable sample instead
    next_path, next_label = dataset.samples[paths.index(bad[0]) + 1]
    assert torch.equal(image, read_image(next_path)) and label == next_label
    assert bad[0] in caplog.text and dataset.bad_images == [bad[0]]

    fresh = ImageFolderDataset(root, on_bad_image="skip", transform=lambda x: TF.resize(x, [16, 16]))
    loader = DataLoader(fresh, batch_size=2, num_workers=1)  # the worker process marks, this process reads
    images = sum(len(labels) for _, labels in loader)
    assert images == len(fresh) == 6  # each bad sample is replaced by the next good one
    assert sorted(fresh.bad_images) == sorted(bad)


# --- training augmentation ------------------------------------------------------------------------------------------

def test_scale_augmentation_crop_and_flip(sample_photos: list[Path]) -> None:
    image = read_image(sample_photos[0])
    height, width = image.shape[-2:]
    transform = PaperTrainTransform(lighting_std=0.0, normalize=Normalize((0, 0, 0), None),
                                    generator=torch.Generator().manual_seed(0))
    draws = [transform.sample_params(height, width) for _ in range(3000)]
    shorter = [p.shorter_side for p in draws]
    assert min(shorter) == 256 and max(shorter) == 480 and len(set(shorter)) == 225  # every integer, inclusive
    assert 0.46 < np.mean([p.flip for p in draws]) < 0.54
    for params in draws[:4]:
        resized = resize_shorter_side(image, params.shorter_side)
        assert min(resized.shape[-2:]) == params.shorter_side
        assert 0 <= params.top <= resized.shape[-2] - 224 and 0 <= params.left <= resized.shape[-1] - 224
        expected = resized[:, params.top:params.top + 224, params.left:params.left + 224]
        expected = expected.flip(-1) if params.flip else expected
        out = transform.apply(image, params)
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32
        assert torch.allclose(out, expected.float() / 255)
    assert transform(image).shape == (3, 224, 224)


def test_pca_lighting_moves_colour_along_the_eigenvectors_only() -> None:
    image = torch.rand(3, 16, 20)
    lighting = PCALighting(0.1)
    eigvec = torch.tensor(IMAGENET_LIGHTING_EIGVEC)
    eigval = torch.tensor(IMAGENET_LIGHTING_EIGVAL)
    generator = torch.Generator().manual_seed(1)
    replay = torch.Generator().manual_seed(1)
    recovered = []
    for _ in range(4000):
        delta = lighting(image, generator=generator) - image
        shift = delta[:, :1, :1]
        assert torch.allclose(delta, shift.expand_as(delta), atol=1e-6)  # one RGB vector for every pixel
        alpha = torch.linalg.solve(eigvec, shift.flatten()) / eigval
        assert torch.allclose(alpha, torch.randn(3, generator=replay) * 0.1, atol=2e-4)  # the sampled alphas
        recovered.append(alpha)
    std = torch.stack(recovered).std(dim=0)
    assert torch.all((std > 0.093) & (std < 0.107)), std


def test_full_train_transform_adds_lighting_then_subtracts_mean_image(sample_photos: list[Path]) -> None:
    image = read_image(sample_photos[3])
    mean_image = torch.rand(3, 224, 224)
    transform = PaperTrainTransform(normalize=Normalize(mean_image, std=None),
                                    generator=torch.Generator().manual_seed(5))
    params = transform.sample_params(*image.shape[-2:])
    assert isinstance(params, TrainViewParams) and any(a != 0 for a in params.alpha)
    shift = PCALighting(0.1).rgb_shift(torch.tensor(params.alpha))
    expected = to_float(transform.geometry(image, params)) + shift[:, None, None] - mean_image
    assert torch.allclose(transform.apply(image, params), expected, atol=1e-6)
    with pytest.raises(ValueError, match="crop_size"):
        PaperTrainTransform(scale=(200, 480))


def test_uint8_output_then_finish_batch_equals_the_per_image_pipeline(sample_photos: list[Path]) -> None:
    images = [read_image(p) for p in sample_photos[:3]]
    normalize = Normalize(torch.rand(3, 224, 224), std=None)
    split = PaperTrainTransform(normalize=normalize, uint8_output=True, generator=torch.Generator().manual_seed(3))
    whole = PaperTrainTransform(normalize=normalize, generator=torch.Generator().manual_seed(3))
    crops = torch.stack([split(image) for image in images])
    assert crops.dtype == torch.uint8 and crops.shape == (3, 3, 224, 224)
    finished = split.finish_batch(crops, generator=torch.Generator().manual_seed(4))
    alphas = torch.randn(3, 3, generator=torch.Generator().manual_seed(4)) * 0.1  # one alpha per image
    for index, image in enumerate(images):
        params = whole.sample_params(*image.shape[-2:])  # same geometry draws as `split` made
        expected = whole.apply(image, dataclasses.replace(params, alpha=tuple(alphas[index].tolist())))
        assert torch.allclose(finished[index], expected, atol=1e-5), index


def test_mean_image_and_pca_statistics_from_real_photos(sample_photos: list[Path], imagenet_sample_dir: Path) -> None:
    two = sample_photos[:2]
    views = [TF.center_crop(resize_shorter_side(read_image(p), 256), [224]).float() / 255 for p in two]
    mean_image = compute_mean_image(two)
    assert mean_image.shape == (3, 224, 224) and torch.allclose(mean_image, (views[0] + views[1]) / 2, atol=1e-6)

    eigval, eigvec = compute_pca_lighting(wnid_prefixed_dataset(imagenet_sample_dir), max_images=60)
    assert torch.all(eigval[:-1] >= eigval[1:]) and torch.all(eigval > 0)
    assert torch.allclose(eigvec.T @ eigvec, torch.eye(3), atol=1e-5)
    # ImageNet photos: the same principal axes as AlexNet's constants (luminance first), similar variances
    cosines = (eigvec * torch.tensor(IMAGENET_LIGHTING_EIGVEC)).sum(dim=0)
    assert torch.all(cosines > 0.95), cosines
    assert 0.1 < float(eigval[0]) < 0.3


def test_train_transform_in_dataloader_workers(imagenet_sample_dir: Path) -> None:
    dataset = wnid_prefixed_dataset(imagenet_sample_dir, transform=PaperTrainTransform())
    subset = torch.utils.data.Subset(dataset, range(0, 200, 50))
    loader = DataLoader(subset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [tuple(images.shape) for images, _ in batches] == [(2, 3, 224, 224)] * 2
    assert all(torch.isfinite(images).all() for images, _ in batches)
    # One photo four times, one per batch: workers 0 and 1 take turns, and each draws its own augmentations.
    same = DataLoader(torch.utils.data.Subset(dataset, [0, 0, 0, 0]), batch_size=1, num_workers=2)
    first, second, third, _ = (images for images, _ in same)
    assert not torch.equal(first, second) and not torch.equal(first, third)
