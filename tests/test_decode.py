"""The one image decoder (`resnets.data.folder.decode_image_bytes`, Pillow): every kind of file comes out as upright
8-bit RGB. Each file is written here, and each expected pixel is worked out here with numpy, not by a decoder."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.folder import decode_image_bytes, read_image

ORIENTATION = 0x0112  # the EXIF tag


def hwc(image: torch.Tensor) -> np.ndarray:
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


def decode(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the decoder must not warn (Pillow does for palettes with transparency)
        return hwc(decode_image_bytes(data, "test"))


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_16bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): signature, IHDR, one IDAT, IEND."""
    height, width, _ = pixels.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # depth 16, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_grayscale_png_and_jpeg_become_three_equal_channels() -> None:
    grey = np.zeros((16, 24), np.uint8)
    grey[:, 8:16], grey[:, 16:] = 100, 230  # 8-pixel blocks: JPEG keeps flat blocks flat
    png = decode(encoded(Image.fromarray(grey, "L"), "PNG"))
    assert np.array_equal(png, np.repeat(grey[:, :, None], 3, axis=2))
    jpeg = decode(encoded(Image.fromarray(grey, "L"), "JPEG", quality=95)).astype(int)
    assert jpeg.shape == (16, 24, 3) and (jpeg[..., 0] == jpeg[..., 1]).all() and (jpeg[..., 1] == jpeg[..., 2]).all()
    assert np.abs(jpeg[:, :, 0] - grey).max() <= 3


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    # Four flat 8x8 blocks of known inks; RGB = 255 * (1 - ink) * (1 - black) for each channel.
    inks = {(0, 0, 0, 0): (255, 255, 255), (255, 0, 0, 0): (0, 255, 255), (0, 255, 255, 0): (255, 0, 0),
            (0, 0, 0, 255): (0, 0, 0)}
    cmyk = np.zeros((8, 32, 4), np.uint8)
    for index, ink in enumerate(inks):
        cmyk[:, 8 * index:8 * index + 8] = ink
    pixels = decode(encoded(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95)).astype(int)
    assert pixels.shape == (8, 32, 3)
    for index, rgb in enumerate(inks.values()):
        assert np.abs(pixels[2:6, 8 * index + 2:8 * index + 6] - np.array(rgb)).max() <= 4, rgb


def test_16bit_png_keeps_the_high_byte() -> None:
    # Grey: 256 and 4660 must become 1 and 18 (the high byte), not 255 as Pillow's convert("RGB") clips them.
    grey = np.array([[0, 255, 256, 4660, 32768, 65535]], np.uint16)
    pixels = decode(encoded(Image.fromarray(grey), "PNG"))
    expected = np.array([[0, 0, 1, 18, 128, 255]], np.uint8)
    assert np.array_equal(pixels, np.repeat(expected[:, :, None], 3, axis=2))
    rgb = np.array([[[0, 256, 65535], [4660, 32768, 511]]], np.uint16)
    assert np.array_equal(decode(png_16bit_rgb(rgb)), np.array([[[0, 1, 255], [18, 128, 1]]], np.uint8))


def test_palette_png_looks_up_its_colours_also_with_transparency() -> None:
    palette = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0]], np.uint8)
    indices = np.random.default_rng(1).integers(0, 3, (12, 10), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.flatten().tolist())
    assert np.array_equal(decode(encoded(image, "PNG")), palette[indices])
    # per-entry transparency (a tRNS chunk): colours unchanged, alpha dropped, no warning
    assert np.array_equal(decode(encoded(image, "PNG", transparency=bytes([0, 128, 255]))), palette[indices])


def test_rgba_and_grey_alpha_png_drop_alpha_and_keep_colours() -> None:
    rgb = random_rgb(10, 14)
    alpha = np.random.default_rng(2).integers(0, 256, (10, 14, 1), dtype=np.uint8)
    assert np.array_equal(decode(encoded(Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), "PNG")), rgb)
    grey = rgb[:, :, 0]
    la = Image.fromarray(np.stack([grey, alpha[:, :, 0]], 2), "LA")
    assert np.array_equal(decode(encoded(la, "PNG")), np.repeat(grey[:, :, None], 3, axis=2))


# How a camera stores an upright picture under each EXIF orientation (the picture is shown after undoing it):
STORED = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
          5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
          8: lambda a: np.rot90(a, -1)}


def with_orientation(stored: np.ndarray, orientation: int, fmt: str, **options: object) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encoded(Image.fromarray(np.ascontiguousarray(stored)), fmt, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    upright = random_rgb(6, 10, seed=orientation)  # non-square, so a missed rotation changes the shape
    stored = STORED[orientation](upright)
    assert np.array_equal(decode(with_orientation(stored, orientation, "PNG")), upright)


def test_sideways_phone_photo_jpeg_comes_out_upright(tmp_path: Path) -> None:
    # Upright: 24 rows x 40 columns of blue with a red 8x8 top-left corner. A phone held upright stores it
    # rotated a quarter turn counter-clockwise (40 x 24) and tags orientation 6.
    upright = np.zeros((24, 40, 3), np.uint8)
    upright[:] = (0, 0, 255)
    upright[:8, :8] = (255, 0, 0)
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(with_orientation(np.rot90(upright, 1), 6, "JPEG", quality=95))
    assert Image.open(photo).size == (24, 40)  # stored sideways: 24 wide, 40 tall
    pixels = hwc(read_image(photo)).astype(int)
    assert pixels.shape == (24, 40, 3)
    assert np.abs(pixels[2:6, 2:6] - (255, 0, 0)).max() <= 8  # the red corner is top-left again
    for corner in (pixels[2:6, -6:-2], pixels[-6:-2, 2:6], pixels[-6:-2, -6:-2]):
        assert np.abs(corner - (0, 0, 255)).max() <= 8
