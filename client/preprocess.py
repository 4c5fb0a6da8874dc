"""Turn what applications hold (paths, bytes, files, PIL images, arrays) into model input pixels.

Policy: EXIF orientation is applied first; every mode (palette, alpha, 16-bit, grayscale, CMYK)
becomes 8-bit RGB, alpha composited on white; then the whole image is resized to the model's input
size (aspect ratio not kept, no crop; `center_crop=True` crops the central square first) with the
antialiased pyramid of `client.resize`.

Two paths give the same pixels within `PIXEL_TOLERANCE`:

- the reference path (`fast=False`): full decode, then the resize.
- the fast path (default): a JPEG is decoded already reduced, in the DCT domain, at the smallest of
  libjpeg-turbo's 1/8, 1/4 and 1/2 scales that still covers the target size (through `simplejpeg`;
  without it, Pillow's `draft()`, which has the same scales). Most of a full-HD decode is spent on
  pixels the resize would average away; here they are never made. Only power-of-two scales are
  used: libjpeg-turbo has SIMD inverse DCTs for them, and the 3/8 .. 7/8 scales run scalar code that
  is slower than the next power of two up (measured: 3/8 of a full-HD JPEG 3-30% slower than 1/2,
  5/8 slower than the full decode). Other formats have no reduced decode and take the reference path.

Decompression bombs: the pixel count (width x height) is read from the header and refused above
`max_pixels` (default `MAX_PIXELS`, 67,108,864 = 8192 x 8192; the CLI's `--max-pixels`) before any
pixel is decoded. Pillow has a cap of its own (`PIL.Image.MAX_IMAGE_PIXELS`); a client that accepts
more raises Pillow's to its own, so the limit a caller sets is the one that applies.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from client.errors import InvalidImageError
from client.resize import central_square, resize, upright

try:  # libjpeg-turbo's scaled decode (a small wheel); Pillow's draft() is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    simplejpeg = None

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

#: Largest image accepted, as a pixel count (width x height; 8192 x 8192 = 67,108,864, so 16384 x
#: 4096 passes too). Checked from the header before decoding. It is below Pillow's own warning
#: threshold (89 megapixels), so every image that is accepted decodes silently; raise it per client
#: with `max_pixels=` (CLI: `--max-pixels`).
MAX_PIXELS = 8192 * 8192

#: File name suffixes taken as images when a folder is searched (CLI, load test, calibration).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif",
                            ".tiff"})


@dataclass(frozen=True)
class Tolerance:
    """How far the fast path may be from the reference path, in 8-bit levels (0..255)."""

    mean_abs: float
    p99_abs: float


#: Measured on 1/f-spectrum textures (harder than photos: more detail near the Nyquist limit) from
#: 1280x720 to 4000x3000, whole image or central square: mean |diff| 0.3-0.5 levels, p99 2-3
#: levels; 1.5 / 7 for the central square of a 1/8 decode, whose edges fall between pixels.
PIXEL_TOLERANCE = Tolerance(mean_abs=2.0, p99_abs=8.0)

#: The same comparison on embeddings: |fast - reference| / |reference| (L2) per image. Measured
#: <= 0.0029 on the tiny twin for JPEGs from 640x480 to 4000x3000, whole or central square
#: (tests/test_client_pipeline.py).
EMBEDDING_TOLERANCE = 0.01

_ORIENTATIONS = range(1, 9)
_SWAPS_AXES = {5, 6, 7, 8}


def jpeg_decoder() -> str:
    """Which reduced JPEG decode the fast path uses here."""
    return "simplejpeg (libjpeg-turbo 1/8, 1/4, 1/2 scaled decode)" if simplejpeg else "Pillow draft()"


def describe(item: Any) -> str:
    """A short name of an input for error messages."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"<array {item.shape} {item.dtype}>"
    if isinstance(item, Image.Image):
        return f"<PIL {item.mode} {item.size[0]}x{item.size[1]}>"
    name = getattr(item, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(item).__name__}>"


# -- reading --------------------------------------------------------------------------------------

def read_bytes(item: Any) -> bytes:
    """The encoded bytes of a path, bytes-like or binary file input."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise InvalidImageError("file not found") from exc
        except IsADirectoryError as exc:
            raise InvalidImageError("is a directory, not an image file") from exc
        except OSError as exc:
            raise InvalidImageError(f"cannot read file ({exc.strerror or exc})") from exc
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif hasattr(item, "read"):
        try:
            data = item.read()
        except OSError as exc:
            raise InvalidImageError(f"cannot read file object ({exc})") from exc
        if isinstance(data, str):
            raise InvalidImageError("file object is in text mode; open it with 'rb'")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidImageError(f"file object's read() returned {type(data).__name__}, not bytes")
        data = bytes(data)
    else:
        raise InvalidImageError(
            f"unsupported input type {type(item).__name__}; give a path, bytes, a binary file, "
            f"a PIL image or an HxWx3 array")
    if len(data) == 0:
        raise InvalidImageError("empty input (0 bytes)")
    return data


def too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    """The decompression bomb message: the size, the limit, and both ways to raise it."""
    return (f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (decompression bomb guard; to accept it, raise max_pixels= "
            f"or the CLI's --max-pixels)")


def _pillow_limit(max_pixels: int) -> None:
    """Let Pillow open what this client accepts: its own cap errors at 2x MAX_IMAGE_PIXELS."""
    cap = Image.MAX_IMAGE_PIXELS
    if cap is not None and max_pixels >= cap:
        Image.MAX_IMAGE_PIXELS = max_pixels + 1  # only ever raised; our own check stays in force


def _bomb(exc: Exception, max_pixels: int) -> InvalidImageError:
    """Pillow's own decompression bomb error, in this client's words.

    Pillow's cap is at least this client's limit (see `_pillow_limit`), so an image Pillow refuses
    is over ours too.
    """
    return InvalidImageError(
        f"image is over the limit of {max_pixels:,} pixels (decompression bomb guard; to accept "
        f"it, raise max_pixels= or the CLI's --max-pixels; Pillow: {exc})")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only (lazy), and refuse oversized images before decoding anything."""
    _pillow_limit(max_pixels)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image in a format Pillow reads") from exc
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from exc
    except Exception as exc:  # noqa: BLE001 - any parser error is a bad input, never a crash
        raise InvalidImageError(f"cannot read image header ({type(exc).__name__}: {exc})") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImageError(too_many_pixels(width, height, max_pixels))
    return img


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block means "no orientation", as in viewers
        return 1
    return value if isinstance(value, int) and value in _ORIENTATIONS else 1


def _needed_decode_size(stored: tuple[int, int], orientation: int, size: tuple[int, int],
                        center_crop: bool) -> tuple[int, int]:
    """The smallest stored-orientation size that still covers `size` after rotation and crop."""
    width, height = stored
    if orientation in _SWAPS_AXES:
        width, height = height, width
    if center_crop:
        scale = max(size) / min(width, height)
        need = (width * scale, height * scale)
    else:
        need = (size[0], size[1])
    need_w, need_h = math.ceil(need[0]), math.ceil(need[1])
    return (need_h, need_w) if orientation in _SWAPS_AXES else (need_w, need_h)


def jpeg_scale(stored: tuple[int, int], need: tuple[int, int]) -> tuple[int, int]:
    """The decoded size at the smallest power-of-two scale (1/8, 1/4, 1/2, 1) that covers `need`.

    libjpeg-turbo rounds scaled sizes up, and so does this.
    """
    width, height = stored
    for denominator in (8, 4, 2):
        scaled = (-(-width // denominator), -(-height // denominator))
        if scaled[0] >= need[0] and scaled[1] >= need[1]:
            return scaled
    return width, height


def _decode(data: bytes, size: tuple[int, int], center_crop: bool, max_pixels: int,
            fast: bool) -> tuple[np.ndarray, int, tuple[int, int]]:
    """RGB pixels in stored orientation (maybe already reduced), the EXIF orientation to apply,
    and the upright full-resolution size."""
    img = _open(data, max_pixels)
    orientation = _orientation(img)
    full = img.size[::-1] if orientation in _SWAPS_AXES else img.size
    try:
        if fast and img.format in ("JPEG", "MPO"):
            need = _needed_decode_size(img.size, orientation, size, center_crop)
            if simplejpeg is not None and img.mode in ("RGB", "L"):
                scaled_w, scaled_h = jpeg_scale(img.size, need)
                try:
                    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=scaled_w,
                                                    min_height=scaled_h)
                except ValueError as exc:
                    raise InvalidImageError(f"cannot decode JPEG ({exc})") from exc
                return pixels, orientation, full
            img.draft(img.mode, need)
        img.seek(0)  # first frame of animations and multi-page files
        img.load()
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from exc
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data in any format
        raise InvalidImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    return np.asarray(to_rgb(img)), orientation, full


# -- pixels ---------------------------------------------------------------------------------------

def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: 16-bit scaled down, transparency composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    try:
        if mode.startswith("I;16") or mode == "I":
            arr = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
            img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        elif mode == "F":
            arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
            hi = 1.0 if arr.max() <= 1.0 else 255.0
            img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img.convert("RGBA"))
        return img.convert("RGB") if img.mode != "RGB" else img
    except (ValueError, OSError) as exc:
        raise InvalidImageError(f"cannot convert color mode {mode} to RGB ({exc})") from exc


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidImageError(f"array must be HxWx3 (RGB), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"array has an empty dimension: {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise InvalidImageError("float array values must be finite and within [0, 1]")
        return np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise InvalidImageError(f"array dtype must be uint8, or float in [0, 1], got {arr.dtype}")


def _from_pil(img: Image.Image) -> np.ndarray:
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - a lazily opened, corrupt file
        raise InvalidImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    return np.asarray(to_rgb(img))


def to_pixels(item: ImageInput, size: tuple[int, int], center_crop: bool = False,
              max_pixels: int = MAX_PIXELS, fast: bool = True) -> np.ndarray:
    """HxWx3 uint8 pixels at the model's input size (`size` is (width, height))."""
    orientation, full = 1, None
    if isinstance(item, np.ndarray):
        pixels = _from_array(item)
    elif isinstance(item, Image.Image):
        pixels, orientation = _from_pil(item), _orientation(item)
    else:
        pixels, orientation, full = _decode(read_bytes(item), size, center_crop, max_pixels, fast)
    pixels = upright(pixels, orientation)
    decoded = (pixels.shape[1], pixels.shape[0])
    box = central_square(full or decoded, decoded) if center_crop else None
    return resize(pixels, size, box)


def reference_pixels(item: ImageInput, size: tuple[int, int], center_crop: bool = False,
                     max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The reference path: full decode and the same resize (what the fast path is checked against)."""
    return to_pixels(item, size, center_crop, max_pixels, fast=False)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], the hub model's input range.

    The server-side step of the uint8 transport computes exactly this expression, so both
    transports give the model bit-identical input.
    """
    return pixels.astype(np.float32) * np.float32(1.0 / 255.0)


def to_datatype(pixels: np.ndarray, datatype: str) -> np.ndarray:
    """uint8 pixels -> what the target model takes: FP32 in [0, 1], or the UINT8 pixels as they are."""
    if datatype == "UINT8":
        return pixels
    if datatype == "FP32":
        return to_model_input(pixels)
    raise InvalidImageError(f"the model's input type {datatype} is not supported (FP32 or UINT8)")


def pixel_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, 99th percentile) of |a - b| in 8-bit levels: the measure `PIXEL_TOLERANCE` bounds."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), float(np.percentile(diff, 99))
