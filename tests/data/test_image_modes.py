"""`rgb_loader` converts every PIL mode to 8-bit RGB by a fixed rule, or refuses it clearly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import DatasetFormatError, ImageFolderDataset, rgb_loader

WHITE = (255, 255, 255)

# 16-bit values around the rounding boundaries of round(v * 255 / 65535) = round(v / 257).
GREY16 = np.array([[0, 128, 129, 256], [32767, 32768, 65406, 65535]], dtype=np.uint16)  # (2, 4)
GREY16_AS_8BIT = np.array([[0, 0, 1, 1], [127, 128, 254, 255]], dtype=np.uint8)  # (2, 4)


def load(path: Path) -> np.ndarray:
    """`rgb_loader(path)` as an (H, W, 3) uint8 array, checking the mode on the way."""
    image = rgb_loader(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def raw_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)


def on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule: round((value * alpha + 255 * (255 - alpha)) / 255)."""
    value = colour.astype(np.float64) * alpha / 255 + 255.0 * (255 - alpha) / 255
    return np.floor(value + 0.5).astype(np.uint8)


def write_png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG (colour type 2, bit depth 16), which Pillow cannot write itself."""
    height, width, _ = pixels.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def palette_image() -> Image.Image:
    """A 4x2 "P" image using palette entries 0..3 (entry 2 is transparent in some tests)."""
    image = Image.frombytes("P", (4, 2), bytes([0, 1, 2, 3, 3, 2, 1, 0]))
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0, 7, 8, 9])
    return image


PALETTE = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0], [7, 8, 9]], dtype=np.uint8)
PALETTE_INDICES = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])


def serve_in_memory(monkeypatch: pytest.MonkeyPatch, image: Image.Image) -> None:
    """Makes `Image.open` return `image`, for modes that Pillow cannot write to a file."""
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: image)


# --------------------------------------------------------------------------- 16 bit


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(GREY16).save(path)
    assert raw_mode(path) == "I;16"  # What Pillow returns for a 16-bit greyscale PNG.
    np.testing.assert_array_equal(load(path), grey_to_rgb(GREY16_AS_8BIT))


def test_big_endian_sixteen_bit_tiff_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "grey16be.tif"
    Image.frombytes("I;16B", (4, 2), GREY16.astype(">u2").tobytes()).save(path)
    assert raw_mode(path) == "I;16B"
    np.testing.assert_array_equal(load(path), grey_to_rgb(GREY16_AS_8BIT))


def test_sixteen_bit_grey_png_colour_key_becomes_white(tmp_path: Path) -> None:
    path = tmp_path / "grey16_key.png"
    Image.fromarray(GREY16).save(path, transparency=32768)
    expected = grey_to_rgb(GREY16_AS_8BIT)
    expected[1, 1] = WHITE
    np.testing.assert_array_equal(load(path), expected)


def test_int32_tiff_within_sixteen_bit_range_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "int32.tif"
    Image.fromarray(GREY16.astype(np.int32)).save(path)
    assert raw_mode(path) == "I"
    np.testing.assert_array_equal(load(path), grey_to_rgb(GREY16_AS_8BIT))


@pytest.mark.parametrize("bad_value", [65536, -1])
def test_int32_tiff_outside_sixteen_bit_range_is_refused(tmp_path: Path, bad_value: int) -> None:
    path = tmp_path / "int32.tif"
    values = GREY16.astype(np.int32)
    values[0, 3] = bad_value
    Image.fromarray(values).save(path)
    with pytest.raises(DatasetFormatError) as info:
        rgb_loader(path)
    message = str(info.value)
    assert f"Image '{path}' has PIL mode 'I'" in message
    assert f"values {min(bad_value, 0)}..{max(bad_value, 65535)}" in message
    assert (
        "outside the 16-bit range 0..65535" in message and "Re-save it as an 8-bit RGB" in message
    )


def test_sixteen_bit_rgb_png_keeps_the_high_byte(tmp_path: Path) -> None:
    path = tmp_path / "rgb48.png"
    pixels = np.array(
        [[[0, 255, 256], [0x80FF, 0x8000, 0xFFFF]], [[0x1234, 0xABCD, 0x00FF], [1, 2, 3]]],
        dtype=np.uint16,
    )  # (2, 2, 3)
    write_png_rgb16(path, pixels)
    assert raw_mode(path) == "RGB"  # Pillow reads 48-bit PNGs as 8-bit RGB ...
    image = load(path)
    np.testing.assert_array_equal(image, (pixels >> 8).astype(np.uint8))  # ... the high byte,
    rounded = np.floor(pixels / 257 + 0.5)  # which is the exact 8-bit value up to rounding.
    assert np.abs(image - rounded).max() <= 1


# --------------------------------------------------------------------------- 8 bit, opaque


def test_rgb_jpeg_is_returned_as_decoded(tmp_path: Path) -> None:
    path = tmp_path / "rgb.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as raw:
        expected = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(load(path), expected)


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    palette_image().save(path)
    assert raw_mode(path) == "P"
    np.testing.assert_array_equal(load(path), PALETTE[PALETTE_INDICES])


def test_greyscale_png(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    grey = np.array([[0, 1, 127, 128], [200, 254, 255, 3]], dtype=np.uint8)
    Image.fromarray(grey).save(path)
    assert raw_mode(path) == "L"
    np.testing.assert_array_equal(load(path), grey_to_rgb(grey))


def test_bilevel_png(tmp_path: Path) -> None:
    path = tmp_path / "bilevel.png"
    bits = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.uint8)
    Image.fromarray(bits * 255).convert("1").save(path)
    assert raw_mode(path) == "1"
    np.testing.assert_array_equal(load(path), grey_to_rgb(bits * 255))


# Naive CMYK -> RGB: R = round((255 - C) * (255 - K) / 255), likewise G with M and B with Y.
CMYK = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [100, 50, 25, 60]], np.uint8)
CMYK_AS_RGB = np.array([[255, 255, 255], [0, 255, 255], [0, 0, 0], [119, 157, 176]], np.uint8)


def test_cmyk_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.tif"
    Image.frombytes("CMYK", (4, 1), CMYK.tobytes()).save(path)
    assert raw_mode(path) == "CMYK"
    np.testing.assert_array_equal(load(path), CMYK_AS_RGB[None])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    # One uniform 8x8 block per colour, so that JPEG compression barely changes the values.
    blocks = np.repeat(np.repeat(CMYK[None], 8, axis=0), 8, axis=1)  # (8, 32, 4)
    Image.frombytes("CMYK", (32, 8), blocks.tobytes()).save(path, quality=95)
    assert raw_mode(path) == "CMYK"
    image = load(path).astype(np.int16)  # (8, 32, 3)
    expected = np.repeat(np.repeat(CMYK_AS_RGB[None], 8, axis=0), 8, axis=1)
    assert np.abs(image - expected).max() <= 3  # JPEG is lossy.


def test_ycbcr_tiff(tmp_path: Path) -> None:
    path = tmp_path / "ycbcr.tif"
    ycbcr = np.array([[[100, 128, 128], [200, 100, 150], [30, 200, 60]]], dtype=np.uint8)
    Image.frombytes("YCbCr", (3, 1), ycbcr.tobytes()).save(path)
    assert raw_mode(path) == "YCbCr"
    y, cb, cr = (ycbcr[..., i].astype(np.float64) for i in range(3))  # ITU-R BT.601
    bt601 = np.stack(
        [
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        ],
        axis=-1,
    ).clip(0, 255)
    image = load(path)
    np.testing.assert_array_equal(image[0, 0], (100, 100, 100))  # Neutral chroma is exact.
    assert np.abs(image - bt601).max() <= 1  # PIL's fixed-point arithmetic.


# --------------------------------------------------------------------------- transparency


def test_palette_png_with_transparent_index(tmp_path: Path) -> None:
    path = tmp_path / "palette_key.png"
    palette_image().save(path, transparency=2)
    assert raw_mode(path) == "P"
    expected = PALETTE[PALETTE_INDICES]
    expected[PALETTE_INDICES == 2] = WHITE
    np.testing.assert_array_equal(load(path), expected)


def test_palette_png_with_alpha_per_entry(tmp_path: Path) -> None:
    path = tmp_path / "palette_alpha.png"
    alphas = np.array([255, 128, 0, 1])
    palette_image().save(path, transparency=bytes(alphas.tolist()))
    with Image.open(path) as raw:
        assert raw.mode == "P" and isinstance(raw.info["transparency"], bytes)
    expected = on_white(PALETTE[PALETTE_INDICES], alphas[PALETTE_INDICES][..., None])
    np.testing.assert_array_equal(load(path), expected)
    np.testing.assert_array_equal(expected[0, 1], (227, 177, 152))  # alpha 128 over white


def test_rgba_png_is_composited_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    rgba = np.array(
        [[[10, 20, 30, 255], [10, 20, 30, 0], [200, 100, 0, 128], [0, 0, 0, 1]]], dtype=np.uint8
    )  # opaque, transparent, half, almost transparent
    Image.fromarray(rgba).save(path)
    assert raw_mode(path) == "RGBA"
    np.testing.assert_array_equal(
        load(path), [[[10, 20, 30], WHITE, [227, 177, 127], [254, 254, 254]]]
    )


def test_la_png_is_composited_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    la = np.array([[[50, 255], [50, 0], [50, 128], [0, 64]]], dtype=np.uint8)
    Image.frombytes("LA", (4, 1), la.tobytes()).save(path)
    assert raw_mode(path) == "LA"
    grey = on_white(la[..., :1], la[..., 1:])  # (1, 4, 1)
    np.testing.assert_array_equal(load(path), np.repeat(grey, 3, axis=-1))
    np.testing.assert_array_equal(grey.ravel(), [50, 255, 152, 191])


def test_rgb_and_greyscale_colour_keys_become_white(tmp_path: Path) -> None:
    rgb_path, grey_path = tmp_path / "rgb_key.png", tmp_path / "grey_key.png"
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    Image.fromarray(rgb).save(rgb_path, transparency=(4, 5, 6))
    Image.fromarray(np.array([[0, 100, 200]], dtype=np.uint8)).save(grey_path, transparency=100)
    np.testing.assert_array_equal(load(rgb_path), [[[1, 2, 3], WHITE]])
    np.testing.assert_array_equal(load(grey_path), [[[0, 0, 0], WHITE, [200, 200, 200]]])


def test_pa_image_is_composited_onto_white(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow reads "PA" (e.g. from TIFF) but cannot write it, so the loader gets it in memory.
    image = Image.frombytes("PA", (3, 1), bytes([1, 255, 1, 0, 0, 128]))
    image.putpalette([10, 20, 30, 200, 100, 50])
    serve_in_memory(monkeypatch, image)
    np.testing.assert_array_equal(load(Path(__file__)), [[[200, 100, 50], WHITE, [132, 137, 142]]])


# Premultiplied: min(255, value + 255 - alpha); pixels opaque, transparent, half transparent.
PREMULTIPLIED = [
    (
        "RGBa",
        [10, 20, 30, 255, 0, 0, 0, 0, 100, 50, 0, 128],
        [[10, 20, 30], WHITE, [227, 177, 127]],
    ),
    ("La", [50, 255, 0, 0, 25, 128], [[50, 50, 50], WHITE, [152, 152, 152]]),
]


@pytest.mark.parametrize(("mode", "data", "expected"), PREMULTIPLIED)
def test_premultiplied_alpha_is_composited_onto_white(
    monkeypatch: pytest.MonkeyPatch, mode: str, data: list[int], expected: list[list[int]]
) -> None:
    serve_in_memory(monkeypatch, Image.frombytes(mode, (3, 1), bytes(data)))
    np.testing.assert_array_equal(load(Path(__file__)), [expected])


# --------------------------------------------------------------------------- refused


def test_float_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)).save(path)
    assert raw_mode(path) == "F"
    with pytest.raises(DatasetFormatError) as info:
        rgb_loader(path)
    message = str(info.value)
    assert f"Image '{path}' has PIL mode 'F' (32-bit floating-point greyscale)" in message
    assert "Convert the file to an 8- or 16-bit image" in message


def test_lab_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.new("LAB", (4, 2), (50, 128, 128)).save(path)
    assert raw_mode(path) == "LAB"
    with pytest.raises(DatasetFormatError) as info:
        rgb_loader(path)
    message = str(info.value)
    assert f"Image '{path}' has PIL mode 'LAB', which cannot be converted" in message
    assert "Re-save the image as 8-bit RGB" in message and "RGBA" in message


def test_hsv_image_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    serve_in_memory(monkeypatch, Image.new("HSV", (2, 2)))
    with pytest.raises(DatasetFormatError, match="has PIL mode 'HSV'.*Re-save the image as 8-bit"):
        rgb_loader(Path(__file__))


# --------------------------------------------------------------------------- dataset


def test_image_folder_dataset_scales_sixteen_bit_images(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    Image.fromarray(GREY16).save(tmp_path / "cat" / "grey16.png")
    image, label = ImageFolderDataset(tmp_path)[0]
    assert label == 0 and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), grey_to_rgb(GREY16_AS_8BIT))
