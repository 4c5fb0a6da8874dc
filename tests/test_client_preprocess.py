"""Preprocessing without a server: every input kind and format, EXIF, the fast path, bad input."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from client import InvalidImageError, preprocess
from client.preprocess import PIXEL_TOLERANCE, pixel_difference, reference_pixels, to_pixels
from client.resize import PILLOW_DIFFERENCE, central_square, resize
from samples.generate import photo_like

SIZE = (331, 331)


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def base() -> Image.Image:
    """An asymmetric RGB picture (so rotations and flips are visible) at 400x300."""
    img = photo_like(400, 300, seed=3)
    arr = np.asarray(img).copy()
    arr[20:80, 30:150] = (250, 20, 20)  # a red block in the top-left
    return Image.fromarray(arr, "RGB")


def close(a: np.ndarray, b: np.ndarray, tolerance: float = PIXEL_TOLERANCE.mean_abs) -> bool:
    mean, _ = pixel_difference(a, b)
    return mean <= tolerance


# -- input kinds ------------------------------------------------------------------------------------

def test_every_input_kind_gives_the_same_pixels(base: Image.Image, tmp_path: Path) -> None:
    data = encode(base, "PNG")
    path = tmp_path / "base.png"
    path.write_bytes(data)
    arr = np.asarray(base)
    expected = to_pixels(path, SIZE)
    kinds: dict[str, Callable[[], object]] = {
        "str": lambda: str(path), "Path": lambda: path, "bytes": lambda: data,
        "bytearray": lambda: bytearray(data), "memoryview": lambda: memoryview(data),
        "BytesIO": lambda: io.BytesIO(data), "open file": lambda: path.open("rb"),
        "PIL opened": lambda: Image.open(path), "PIL in memory": lambda: base.copy(),
        "uint8 array": lambda: arr, "float32 array": lambda: arr.astype(np.float32) / 255,
        "float64 array": lambda: arr / 255.0, "strided array": lambda: arr[:, ::-1][:, ::-1],
    }
    for name, make in kinds.items():
        item = make()
        got = to_pixels(item, SIZE)
        assert got.shape == (331, 331, 3) and got.dtype == np.uint8, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
        if hasattr(item, "close"):
            item.close()


# -- formats ----------------------------------------------------------------------------------------

def _formats(base: Image.Image) -> dict[str, tuple[bytes, Image.Image, bool]]:
    """name -> (encoded, what it should look like, lossless?)."""
    rgba = base.convert("RGBA")
    alpha = np.full(base.size[::-1], 255, np.uint8)
    alpha[:, :100] = 0  # transparent left strip: composited on white
    rgba.putalpha(Image.fromarray(alpha))
    on_white = np.asarray(base).copy()
    on_white[:, :100] = 255
    on_white = Image.fromarray(on_white)
    gray = base.convert("L")
    palette = base.quantize(64)
    gray16 = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    second = Image.new("RGB", base.size, (0, 0, 255))
    gif = io.BytesIO()
    palette.save(gif, "GIF", save_all=True, append_images=[second.quantize(4)], duration=100)
    return {
        "jpeg": (encode(base, "JPEG", quality=95), base, False),
        "jpeg progressive": (encode(base, "JPEG", quality=95, progressive=True), base, False),
        "jpeg grayscale": (encode(gray, "JPEG", quality=95), gray, False),
        "jpeg cmyk": (encode(base.convert("CMYK"), "JPEG", quality=95), base, False),
        "png rgb": (encode(base, "PNG"), base, True),
        "png palette": (encode(palette, "PNG"), palette, True),
        "png rgba": (encode(rgba, "PNG"), on_white, True),
        "png grayscale": (encode(gray, "PNG"), gray, True),
        "png gray+alpha": (encode(rgba.convert("LA"), "PNG"), on_white.convert("L"), True),
        "png 16-bit": (encode(gray16, "PNG"), gray, True),
        "webp lossless": (encode(base, "WEBP", lossless=True), base, True),
        "webp lossy alpha": (encode(rgba, "WEBP", quality=95), on_white, False),
        "gif first frame": (gif.getvalue(), palette, True),
        "bmp": (encode(base, "BMP"), base, True),
        "tiff": (encode(base, "TIFF"), base, True),
        "tiff cmyk": (encode(base.convert("CMYK"), "TIFF"), base.convert("CMYK"), True),
    }


def test_every_format_decodes_to_rgb_at_the_model_size(base: Image.Image) -> None:
    for name, (data, looks_like, lossless) in _formats(base).items():
        got = to_pixels(data, SIZE)
        assert got.shape == (331, 331, 3) and got.dtype == np.uint8, name
        expected = resize(np.asarray(looks_like.convert("RGB")), SIZE)
        mean, _ = pixel_difference(got, expected)
        assert mean <= (0.0 if lossless else 3.0), f"{name}: mean |diff| {mean:.2f}"


def test_grayscale_becomes_three_equal_channels(base: Image.Image) -> None:
    for fmt in ("JPEG", "PNG"):
        got = to_pixels(encode(base.convert("L"), fmt), SIZE)
        assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 1], got[..., 2])


# -- EXIF orientation -------------------------------------------------------------------------------

# Orientation tag -> how the stored pixels relate to the upright picture (the inverse transform).
_STORED = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
}


def _with_orientation(upright: Image.Image, orientation: int, fmt: str) -> bytes:
    method = _STORED[orientation]
    stored = upright.transpose(method) if method is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(base: Image.Image, fmt: str) -> None:
    upright = reference_pixels(encode(base, fmt, **({"quality": 95} if fmt == "JPEG" else {})),
                               SIZE)
    for orientation in _STORED:
        data = _with_orientation(base, orientation, fmt)
        for fast in (True, False):
            got = to_pixels(data, SIZE, fast=fast)
            mean, _ = pixel_difference(got, upright)
            # PNG is lossless: exact. JPEG re-encodes the rotated picture (blocks, chroma siting):
            # close, not equal.
            assert mean <= (0.0 if fmt == "PNG" else PIXEL_TOLERANCE.mean_abs), (orientation, fast,
                                                                                 mean)
            assert got[60:70, 30:60, 0].mean() > 200  # the red block is back in the top-left


def test_exif_orientation_of_a_pil_image_is_applied(base: Image.Image) -> None:
    upright = to_pixels(base, SIZE)
    rotated = Image.open(io.BytesIO(_with_orientation(base, 6, "PNG")))
    np.testing.assert_array_equal(to_pixels(rotated, SIZE), upright)


# -- the fast path against the reference path -----------------------------------------------------

@pytest.fixture(scope="module")
def full_hd_jpeg() -> bytes:
    return encode(photo_like(1920, 1080), "JPEG", quality=90)


def test_fast_jpeg_path_matches_the_reference_within_tolerance(full_hd_jpeg: bytes) -> None:
    big = encode(photo_like(4000, 3000, seed=1), "JPEG", quality=90)  # reduced 1/8 .. 3/8 scales
    for data in (full_hd_jpeg, big):
        for crop in (False, True):
            fast, ref = to_pixels(data, SIZE, crop), reference_pixels(data, SIZE, crop)
            mean, p99 = pixel_difference(fast, ref)
            assert mean <= PIXEL_TOLERANCE.mean_abs and p99 <= PIXEL_TOLERANCE.p99_abs, (mean, p99)
            assert mean > 0.0  # it really took the reduced decode


def test_pillow_draft_fallback_matches_too(full_hd_jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "simplejpeg", None)
    assert "draft" in preprocess.jpeg_decoder()
    mean, p99 = pixel_difference(to_pixels(full_hd_jpeg, SIZE), reference_pixels(full_hd_jpeg, SIZE))
    assert mean <= PIXEL_TOLERANCE.mean_abs and p99 <= PIXEL_TOLERANCE.p99_abs


def test_jpeg_decode_scale_is_the_smallest_covering_power_of_two() -> None:
    # 3/8 .. 7/8 would also cover 331x331 for some of these, but run scalar code: slower than 1/2
    assert preprocess.jpeg_scale((1920, 1080), (331, 331)) == (960, 540)
    assert preprocess.jpeg_scale((4000, 3000), (331, 331)) == (500, 375)
    assert preprocess.jpeg_scale((2649, 1325), (331, 331)) == (663, 332)  # libjpeg rounds up
    assert preprocess.jpeg_scale((600, 600), (331, 331)) == (600, 600)
    assert preprocess.jpeg_scale((1080, 1920), (1080, 1080)) == (1080, 1920)


def test_small_jpeg_is_not_reduced(base: Image.Image) -> None:
    data = encode(base.resize((360, 340)), "JPEG", quality=90)  # a 7/8 scale would be < 331
    np.testing.assert_array_equal(to_pixels(data, SIZE), reference_pixels(data, SIZE))


# -- the resize policy ----------------------------------------------------------------------------

def stripes(width: int, height: int, period: int = 2) -> np.ndarray:
    arr = np.zeros((height, width, 3), np.uint8)
    for offset in range(period // 2):
        arr[:, offset::period] = 255
    return arr


def test_resize_averages_away_detail_finer_than_the_output() -> None:
    for width, height in ((1920, 1080), (4000, 3000), (1000, 700)):
        for pattern in (stripes(width, height), stripes(height, width).transpose(1, 0, 2)):
            out = resize(pattern, SIZE).astype(np.float64)
            assert abs(out.mean() - 127.5) < 1.0 and out.std() < 1.0, (width, height, out.std())
    # the test can fail: one bilinear step (no pyramid) keeps stripes of full contrast
    assert cv2.resize(stripes(1920, 1080), SIZE, interpolation=cv2.INTER_LINEAR).std() > 50


def test_resize_stays_close_to_pillows_antialiased_bilinear() -> None:
    for width, height in ((640, 480), (1920, 1080), (3000, 2000)):
        for falloff in (2.0, 1.1):  # photo-like .. the busiest texture
            arr = np.asarray(photo_like(width, height, seed=5, falloff=falloff))
            pillow = np.asarray(Image.fromarray(arr).resize(SIZE, Image.Resampling.BILINEAR,
                                                            reducing_gap=None))
            mean, _ = pixel_difference(resize(arr, SIZE), pillow)
            assert mean <= PILLOW_DIFFERENCE, (width, height, falloff, mean)
            if falloff == 2.0:
                assert mean <= 0.4, (width, height, mean)


def test_resize_of_a_box_matches_resizing_the_cropped_pixels() -> None:
    arr = np.asarray(photo_like(900, 600, seed=7))
    np.testing.assert_array_equal(resize(arr, SIZE, (150.0, 0.0, 750.0, 600.0)),
                                  resize(np.ascontiguousarray(arr[:, 150:750]), SIZE))
    # a fractional box (a central square mapped onto a reduced decode) lands between pixels
    assert central_square((4000, 3000), (500, 375)) == (62.5, 0.0, 437.5, 375.0)
    # Half a pixel to the right is a whole pixel at twice the resolution: the fractional box lands
    # much closer to that than to the unshifted crop.
    shifted = resize(arr, SIZE, (150.5, 0.0, 750.5, 600.0))
    twice = np.ascontiguousarray(arr.repeat(2, axis=0).repeat(2, axis=1))
    to_truth, _ = pixel_difference(shifted, resize(twice, SIZE, (301.0, 0.0, 1501.0, 1200.0)))
    to_unshifted, _ = pixel_difference(shifted, resize(np.ascontiguousarray(arr[:, 150:750]), SIZE))
    assert to_truth < to_unshifted / 2, (to_truth, to_unshifted)


# -- bad input --------------------------------------------------------------------------------------

BOMB = r"image is over the limit of 67,108,864 pixels .*max_pixels= or the CLI's --max-pixels"


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header that claims a huge size, with almost no data: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim another size."""
    at = data.index(b"\xff\xc0")
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def bad_inputs(tmp_path: Path) -> dict[str, tuple[object, str]]:
    """name -> (input, what the error message says)."""
    jpeg = encode(photo_like(64, 48), "JPEG", quality=90)
    png = encode(photo_like(64, 48), "PNG")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    return {
        "empty bytes": (b"", "empty"),
        "empty file": (io.BytesIO(b""), "empty"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "decode"),
        "truncated png": (png[: len(png) // 2], "decode"),
        "not an image": (b"GIF? no, just text" * 10, "not an image"),
        "text file": (text, "not an image"),
        "missing file": (tmp_path / "nope.jpg", "file not found"),
        "directory": (tmp_path, "directory"),
        "text-mode file": (text.open("r"), "text mode"),
        "bomb png (over our limit)": (png_header_only(9000, 9000), "over the limit"),
        # Above Pillow's own cap, the message is still ours, with both ways to raise the limit.
        "bomb png (over Pillow's limit)": (png_header_only(100_000, 100_000), BOMB),
        "bomb jpeg": (jpeg_claiming(jpeg, 60_000, 60_000), BOMB),
        "2-D array": (np.zeros((8, 8), np.uint8), "HxWx3"),
        "RGBA array": (np.zeros((8, 8, 4), np.uint8), "HxWx3"),
        "empty array": (np.zeros((0, 8, 3), np.uint8), "empty dimension"),
        "int32 array": (np.zeros((8, 8, 3), np.int32), "dtype"),
        "bool array": (np.zeros((8, 8, 3), bool), "dtype"),
        "float above 1": (np.full((8, 8, 3), 1.5, np.float32), r"within \[0, 1\]"),
        "float NaN": (np.full((8, 8, 3), np.nan, np.float32), r"within \[0, 1\]"),
        "negative float": (np.full((8, 8, 3), -0.1), r"within \[0, 1\]"),
        "an int": (42, "unsupported input type"),
        "None": (None, "unsupported input type"),
    }


def test_bad_inputs_raise_invalid_image_error_with_a_reason(tmp_path: Path) -> None:
    for name, (item, reason) in bad_inputs(tmp_path).items():
        with pytest.raises(InvalidImageError, match=reason) as err:
            to_pixels(item, SIZE)
        assert isinstance(err.value, ValueError), name  # also a ValueError for generic handlers
        if hasattr(item, "close"):
            item.close()


def test_the_pixel_limit_is_explicit_and_adjustable(base: Image.Image) -> None:
    data = encode(base, "PNG")  # 400 x 300 = 120,000 pixels
    with pytest.raises(InvalidImageError, match="over the limit of 100,000 pixels"):
        to_pixels(data, SIZE, max_pixels=100_000)
    assert to_pixels(data, SIZE, max_pixels=120_000).shape == (331, 331, 3)
    assert preprocess.MAX_PIXELS == 8192 * 8192
