"""CIFAR reading on files written here in the official binary format, on the real JPEG copy, and the error paths."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.cifar import CifarDataError, load_cifar, train_val_split
from resnets.data.decoded import per_pixel_mean
from resnets.data.paths import datasets_root

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def pixel_values(first_index: int, count: int) -> np.ndarray:
    """A known value for every (image, channel, row, column), different across all four."""
    i, c, y, x = np.ogrid[first_index:first_index + count, 0:3, 0:32, 0:32]
    return ((i * 31 + c * 101 + y * 7 + x * 3) % 256).astype(np.uint8)


def official_record(label_bytes: list[int], image: np.ndarray) -> bytes:
    """Spelled out as the format's description reads: label byte(s), then the red, green and blue planes, each 32
    rows of 32 bytes in order."""
    planes = b"".join(bytes(int(image[c, y, x]) for y in range(32) for x in range(32)) for c in range(3))
    return bytes(label_bytes) + planes


def write_cifar10(folder: Path, per_file: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-batches-bin with five train files and a test file; returns split -> (images, labels)."""
    folder.mkdir(parents=True)
    expected: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    files = [(f"data_batch_{k}.bin", "train") for k in range(1, 6)] + [("test_batch.bin", "test")]
    index = 0
    for name, split in files:
        images = pixel_values(index, per_file)
        labels = [(index + j) % 10 for j in range(per_file)]
        records = (official_record([label], image) for label, image in zip(labels, images, strict=True))
        (folder / name).write_bytes(b"".join(records))
        expected[split][0].append(images)
        expected[split][1].extend(labels)
        index += per_file
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return {split: (np.concatenate(images), np.array(labels)) for split, (images, labels) in expected.items()}


def make_archive(archive: Path, folder: Path) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def cifar10_binary(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    return tmp_path, write_cifar10(tmp_path / "cifar-10-batches-bin")


def assert_matches(arrays, images: np.ndarray, labels: np.ndarray) -> None:
    assert arrays.images.dtype == torch.uint8 and arrays.images.is_contiguous()
    assert arrays.labels.dtype == torch.int64
    assert torch.equal(arrays.images, torch.from_numpy(images))
    assert arrays.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("split", ["train", "test"])
def test_official_binary_cifar10_exact(cifar10_binary, split: str) -> None:
    root, expected = cifar10_binary
    arrays = load_cifar(root, "cifar10", split, download=False)
    assert_matches(arrays, *expected[split])
    assert arrays.classes == CIFAR10_CLASSES
    assert arrays.source.startswith("official binary") and "cifar-10-batches-bin" in arrays.source
    direct = load_cifar(root / "cifar-10-batches-bin", "cifar10", split, download=False)
    assert torch.equal(direct.images, arrays.images) and torch.equal(direct.labels, arrays.labels)


def test_official_binary_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    images = pixel_values(0, 10)
    coarse, fine = [j % 20 for j in range(10)], [(7 * j + 3) % 100 for j in range(10)]
    (folder / "train.bin").write_bytes(b"".join(official_record([c, f], image)
                                                for c, f, image in zip(coarse, fine, images, strict=True)))
    (folder / "test.bin").write_bytes(official_record([1, 2], images[0]))
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{k}" for k in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{k}" for k in range(20)))
    arrays = load_cifar(tmp_path, "cifar100", "train", download=False)
    assert_matches(arrays, images, np.array(fine))
    assert arrays.classes[:2] == ["fine0", "fine1"] and len(arrays.classes) == 100
    superclasses = load_cifar(tmp_path, "cifar100", "train", download=False, coarse=True)
    assert superclasses.labels.tolist() == coarse and len(superclasses.classes) == 20
    assert load_cifar(tmp_path, "cifar100", "test", download=False).labels.tolist() == [2]


def test_truncated_binary_is_a_clear_error_and_kept(cifar10_binary) -> None:
    root, _ = cifar10_binary
    broken = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    broken.write_bytes(broken.read_bytes()[:-1])
    with pytest.raises(CifarDataError, match=r"data_batch_3\.bin.*not a whole number of 3073-byte") as error:
        load_cifar(root, "cifar10", "train", download=False)
    assert "\n" not in str(error.value) and "cifar-10-binary.tar.gz" in str(error.value)
    assert broken.exists()


def test_missing_batch_file_is_named(cifar10_binary) -> None:
    root, _ = cifar10_binary
    (root / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    with pytest.raises(CifarDataError, match=r"data_batch_5\.bin is missing"):
        load_cifar(root, "cifar10", "train", download=False)


def test_archive_is_verified_then_extracted(tmp_path: Path) -> None:
    expected = write_cifar10(tmp_path / "build" / "cifar-10-batches-bin")
    data = tmp_path / "data"
    data.mkdir()
    archive = data / "cifar-10-binary.tar.gz"
    checksum = make_archive(archive, tmp_path / "build" / "cifar-10-batches-bin")
    # The built archive is not the official one: the published MD5 must reject it and leave it in place.
    with pytest.raises(CifarDataError, match=r"cifar-10-binary\.tar\.gz: MD5 .* c32a1d4ab5d03f1284b67883e8d87530"):
        load_cifar(data, "cifar10", "train", download=False)
    assert archive.exists() and not (data / "cifar-10-batches-bin").exists()
    arrays = load_cifar(data, "cifar10", "train", download=False, md5=checksum)
    assert_matches(arrays, *expected["train"])
    assert (data / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


def test_archive_members_escaping_the_folder_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    archive = data / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"not cifar"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    checksum = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(CifarDataError, match=r"cifar-10-binary\.tar\.gz: cannot extract"):
        load_cifar(data, "cifar10", "train", download=False, md5=checksum)
    assert not (tmp_path / "escaped.txt").exists() and archive.exists()
    assert [p.name for p in data.iterdir()] == ["cifar-10-binary.tar.gz"]  # no staging folder left behind


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(CifarDataError, match="cannot extract"):
        load_cifar(tmp_path, "cifar10", "test", download=False, md5=hashlib.md5(archive.read_bytes()).hexdigest())


def test_download_verifies_and_extracts(tmp_path: Path) -> None:
    """The download path end to end, offline: a file:// URL stands in for the official server."""
    expected = write_cifar10(tmp_path / "server" / "cifar-10-batches-bin")
    served = tmp_path / "server" / "cifar-10-binary.tar.gz"
    checksum = make_archive(served, tmp_path / "server" / "cifar-10-batches-bin")
    data = tmp_path / "data"
    arrays = load_cifar(data, "cifar10", "test", url=served.as_uri(), md5=checksum)
    assert_matches(arrays, *expected["test"])
    assert (data / "cifar-10-binary.tar.gz").read_bytes() == served.read_bytes()


@pytest.mark.parametrize("download", [True, False])
def test_missing_data_names_every_place_it_looked(tmp_path: Path, download: bool) -> None:
    absent_server = (tmp_path / "nowhere" / "cifar-10-binary.tar.gz").as_uri()
    with pytest.raises(FileNotFoundError) as error:
        load_cifar(tmp_path, "cifar10", "train", download=download, url=absent_server)
    message = str(error.value)
    for place in (str(tmp_path), str(tmp_path / "cifar-10-batches-bin"), str(tmp_path / "cifar-10-binary.tar.gz"),
                  str(tmp_path / "cifar10-jpeg" / "train")):
        assert place in message
    assert "--data" in message and "RESNETS_DATASETS" in message and "\n" not in message
    assert ("downloading" in message and "failed" in message) if download else "download disabled" in message
    assert not (tmp_path / "cifar-10-binary.tar.gz").exists()


def write_image_folder(root: Path) -> dict[str, np.ndarray]:
    """Lossless files (PNG, BMP, a greyscale PNG) so that decoded pixels can be compared exactly."""
    images = {}
    for split, count in (("train", 2), ("test", 1)):
        for offset, name in enumerate(["zebra", "ant", "moose"]):  # not sorted: class index must follow sorted names
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                array = pixel_values(10 * offset + k, 1)[0].transpose(1, 2, 0)
                suffix = ".bmp" if name == "moose" else ".png"
                Image.fromarray(np.ascontiguousarray(array)).save(folder / f"{k}{suffix}")
                images[f"{split}/{name}/{k}"] = array
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(root / "train" / "ant" / "grey.png")
    return images


def test_image_folder_classes_pixels_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    images = write_image_folder(tmp_path / "folder")
    arrays = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert arrays.classes == ["ant", "moose", "zebra"]
    assert arrays.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]  # ant/0, ant/1, ant/grey, moose/0, ...
    assert torch.equal(arrays.images[0], torch.from_numpy(images["train/ant/0"]).permute(2, 0, 1))
    assert torch.equal(arrays.images[4], torch.from_numpy(images["train/moose/1"]).permute(2, 0, 1))
    assert torch.equal(arrays.images[2], torch.full((3, 32, 32), 77, dtype=torch.uint8))
    (cache_file,) = (tmp_path / "cache").iterdir()
    again = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert "cached" in again.source and torch.equal(again.images, arrays.images)
    data = bytearray(cache_file.read_bytes())
    pixels = data.index(bytes(arrays.images[0].flatten()[:64].tolist()))  # flip bits inside the cached pixels
    data[pixels:pixels + 64] = bytes(b ^ 0xFF for b in data[pixels:pixels + 64])
    cache_file.write_bytes(bytes(data))
    repaired = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert "cached" not in repaired.source and torch.equal(repaired.images, arrays.images)  # checksum: rebuilt
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # a corrupt cache is rebuilt, not an error
    rebuilt = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert "cached" not in rebuilt.source and torch.equal(rebuilt.images, arrays.images)
    # A rewritten file or an added one is a new cache key.
    Image.fromarray(np.full((32, 32, 3), 5, np.uint8)).save(tmp_path / "folder" / "train" / "zebra" / "1.png")
    rewritten = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert "cached" not in rewritten.source and (rewritten.images[-1] == 5).all()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "folder" / "train" / "zebra" / "2.png")
    grown = load_cifar(tmp_path / "folder", "cifar10", "train", download=False)
    assert "cached" not in grown.source and len(grown) == 8


def test_image_folder_bad_images_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "folder")
    big = tmp_path / "folder" / "train" / "ant" / "big.png"
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(big)
    with pytest.raises(CifarDataError, match=r"big\.png: image is 32x40, CIFAR images are 32x32"):
        load_cifar(tmp_path / "folder", split="train", download=False, cache=False)
    big.unlink()
    broken = tmp_path / "folder" / "train" / "ant" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CifarDataError, match=r"broken\.jpg: cannot decode"):
        load_cifar(tmp_path / "folder", split="train", download=False, cache=False)


@pytest.fixture(scope="module")
def jpeg_copy(cifar10_jpeg_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Each split decoded once into a fresh cache, then read back from it; the timings of both."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("cache")
        patch.setenv("RESNETS_CACHE", str(cache))
        start = time.perf_counter()
        train = load_cifar(cifar10_jpeg_dir, "cifar10", "train", download=False)
        decode_seconds = time.perf_counter() - start
        test = load_cifar(cifar10_jpeg_dir, "cifar10", "test", download=False)
        start = time.perf_counter()
        cached_train = load_cifar(cifar10_jpeg_dir, "cifar10", "train", download=False)
        cached_seconds = time.perf_counter() - start
        via_root = load_cifar(None, "cifar10", "test", download=False)  # datasets_root()/cifar10-jpeg
        cache_files = sorted(p.name for p in cache.iterdir())
    return {"train": train, "test": test, "cached_train": cached_train, "via_root": via_root,
            "decode_seconds": decode_seconds, "cached_seconds": cached_seconds, "cache_files": cache_files}


def test_jpeg_copy_is_all_of_cifar10(jpeg_copy) -> None:
    train, test = jpeg_copy["train"], jpeg_copy["test"]
    assert (len(train), len(test)) == (50_000, 10_000)
    for arrays, per_class in ((train, 5000), (test, 1000)):
        assert arrays.classes == CIFAR10_CLASSES
        assert tuple(arrays.images.shape[1:]) == (3, 32, 32) and arrays.images.dtype == torch.uint8
        assert arrays.images.is_contiguous() and arrays.labels.dtype == torch.int64
        assert torch.bincount(arrays.labels).tolist() == [per_class] * 10
        assert "(JPEG)" in arrays.source
    mean = per_pixel_mean(train.images).mean(dim=(1, 2))
    assert torch.allclose(mean, torch.tensor([0.491, 0.482, 0.447]), atol=0.01)  # the well-known CIFAR-10 means


def test_jpeg_cache_is_faster_and_identical(jpeg_copy) -> None:
    cached = jpeg_copy["cached_train"]
    assert "cached" in cached.source
    assert torch.equal(cached.images, jpeg_copy["train"].images)
    assert torch.equal(cached.labels, jpeg_copy["train"].labels)
    assert jpeg_copy["cached_seconds"] < jpeg_copy["decode_seconds"] / 2, jpeg_copy
    assert len(jpeg_copy["cache_files"]) == 2  # one per split
    assert torch.equal(jpeg_copy["via_root"].images, jpeg_copy["test"].images)
    assert str((datasets_root() / "cifar10-jpeg").resolve()) in jpeg_copy["via_root"].source


def test_train_val_split() -> None:
    train, val = train_val_split(50_000, 5_000, seed=0)
    assert (len(train), len(val)) == (45_000, 5_000)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(50_000))
    again_train, again_val = train_val_split(50_000, 5_000, seed=0)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, train_val_split(50_000, 5_000, seed=1)[1])
    assert val.float().mean().item() == pytest.approx(25_000, rel=0.05)  # spread over the set, not its tail
    with pytest.raises(ValueError, match="validation size"):
        train_val_split(10, 10)


def test_per_pixel_mean() -> None:
    images = torch.randint(0, 256, (50, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = per_pixel_mean(images, chunk=7)
    assert mean.shape == (3, 4, 5) and mean.dtype == torch.float32
    assert torch.allclose(mean, images.double().mean(0).float() / 255, atol=1e-7)
    assert torch.equal(per_pixel_mean(torch.full((3, 3, 2, 2), 255, dtype=torch.uint8)), torch.ones(3, 2, 2))
