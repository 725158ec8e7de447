"""Tests for utils image I/O on awkward files: 16-bit, palette+transparency, CMYK JPEG, LA, RGBA."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from utils import ImageReadError, img2tensor, modcrop, read_image, save_image, tensor2img


def _write_png16(path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit colour)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)


def test_png16_gray_is_rounded_to_8bit(tmp_path):
    v = np.random.default_rng(1).integers(0, 65536, (9, 7)).astype(np.uint16)
    v[0, :4] = [0, 128, 129, 65535]  # 128/257 rounds down, 129/257 up
    _write_png16(tmp_path / "g16.png", v)
    gray = read_image(tmp_path / "g16.png", keep_gray=True)
    assert gray.dtype == np.uint8 and gray.shape == (9, 7)
    assert np.array_equal(gray, np.round(v / 257).astype(np.uint8))
    assert gray[0, :4].tolist() == [0, 0, 1, 255]
    assert np.array_equal(read_image(tmp_path / "g16.png"), np.repeat(gray[:, :, None], 3, axis=2))


def test_png16_dark_gray_is_not_mistaken_for_8bit(tmp_path):
    v = np.arange(63, dtype=np.uint16).reshape(7, 9) * 4  # all values <= 255 in a 16-bit file
    _write_png16(tmp_path / "dark.png", v)
    assert read_image(tmp_path / "dark.png", keep_gray=True).max() == 1  # round(248 / 257)


def test_png16_rgb_within_one_level(tmp_path):
    v = np.random.default_rng(2).integers(0, 65536, (8, 6, 3)).astype(np.uint16)
    _write_png16(tmp_path / "c16.png", v)
    img = read_image(tmp_path / "c16.png")
    assert img.dtype == np.uint8 and img.shape == (8, 6, 3)
    assert np.abs(img.astype(int) - np.round(v / 257)).max() <= 1


def test_palette_with_transparency_keeps_colours(tmp_path, rgb):
    pal = Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    img = read_image(tmp_path / "p.png")
    assert img.shape == (16, 12, 3)
    assert np.array_equal(img, np.asarray(pal.convert("RGB")))


def test_cmyk_jpeg_reads_as_rgb(tmp_path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    img = read_image(tmp_path / "c.jpg")
    assert img.shape == (16, 12, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(int) - rgb).mean() < 3  # JPEG loss only, not inverted/garbled


def test_la_and_rgba_drop_alpha(tmp_path, rgb):
    Image.fromarray(rgb[:, :, :2].copy(), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png", keep_gray=True), rgb[:, :, 0])
    assert read_image(tmp_path / "la.png").shape == (16, 12, 3)
    alpha = np.zeros((16, 12, 1), np.uint8)  # fully transparent: colours must survive anyway
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)


def test_bad_files(tmp_path, rgb):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.png"):
        read_image(tmp_path / "text.png")
    save_image(rgb, tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "cut.png")


def test_save_read_tensor_roundtrip(tmp_path, rgb):
    save_image(rgb, tmp_path / "sub" / "x.png")
    back = read_image(tmp_path / "sub" / "x.png")
    assert np.array_equal(back, rgb)
    assert np.array_equal(tensor2img(img2tensor(back)), rgb)
    assert modcrop(back, 5).shape == (15, 10, 3)


def test_atomic_write_normal_permissions_and_no_partial_file(tmp_path):
    import os
    import stat

    from utils import atomic_write, save_image

    target = tmp_path / "sub" / "img.png"
    save_image(np.zeros((4, 5, 3), np.uint8), target)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # mkstemp would give 0o600

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert read_image(target).shape == (4, 5, 3)  # the old file survives intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["img.png"]  # no temp left behind


# ---------------------------------------------------------------------- float and 32-bit TIFF


def _ramp(h: int = 12, w: int = 10) -> np.ndarray:
    return np.linspace(0.0, 1.0, h * w).reshape(h, w)


@pytest.mark.parametrize("peak", [1.0, 255.0], ids=["unit-range", "8-bit-range"])
def test_float_tiff_is_read_by_its_range(tmp_path, peak):
    v = (_ramp() * peak).astype(np.float32)
    Image.fromarray(v, mode="F").save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
    gray = read_image(tmp_path / "f.tif", keep_gray=True)
    expected = np.floor(v.astype(np.float64) * (255.0 / peak) + 0.5).astype(np.uint8)
    assert gray.dtype == np.uint8 and np.array_equal(gray, expected)
    assert gray.min() == 0 and gray.max() == 255
    assert np.array_equal(read_image(tmp_path / "f.tif"), np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize("values, words", [
    (lambda v: v * 1000.0, "[0, 1000]"),
    (lambda v: v - 0.5, "[-0.5, 0.5]"),
    (lambda v: np.where(v > 0.5, np.nan, v), "NaN"),
])
def test_float_tiff_without_a_clear_range_is_refused_in_one_line(tmp_path, values, words):
    Image.fromarray(values(_ramp()).astype(np.float32), mode="F").save(tmp_path / "odd.tif")
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "odd.tif")
    msg = str(err.value)
    assert "odd.tif" in msg and words in msg and "\n" not in msg


def test_16bit_tiff_is_rounded_to_8bit(tmp_path):
    v = (_ramp() * 65535).round().astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.tif")
    with Image.open(tmp_path / "g16.tif") as im:
        assert im.mode == "I;16"
    assert np.array_equal(read_image(tmp_path / "g16.tif", keep_gray=True), np.round(v / 257).astype(np.uint8))


def test_32bit_integer_tiff(tmp_path):
    v16 = (_ramp() * 65535).round().astype(np.int32)
    Image.fromarray(v16, mode="I").save(tmp_path / "i16.tif")
    with Image.open(tmp_path / "i16.tif") as im:
        assert im.mode == "I"
    assert np.array_equal(read_image(tmp_path / "i16.tif", keep_gray=True), np.round(v16 / 257).astype(np.uint8))
    v8 = (_ramp() * 255).round().astype(np.int32)  # 8-bit levels in a 32-bit container
    Image.fromarray(v8, mode="I").save(tmp_path / "i8.tif")
    assert np.array_equal(read_image(tmp_path / "i8.tif", keep_gray=True), v8.astype(np.uint8))
    Image.fromarray(v16 * 4, mode="I").save(tmp_path / "i18.tif")
    with pytest.raises(ImageReadError, match=r"i18\.tif.*8- and 16-bit"):
        read_image(tmp_path / "i18.tif")
