"""Turn what applications hold (paths, bytes, files, PIL images, arrays) into model input pixels.

Resize policy: the whole image is resized to the model's input size (aspect ratio not kept, no crop;
`center_crop=True` crops the central square first) with Pillow's bilinear filter, which antialiases
when it shrinks. EXIF orientation is applied first and every mode (palette, alpha, 16-bit, grayscale,
CMYK) becomes 8-bit RGB; alpha is composited on white.

Two paths give the same pixels within `PIXEL_TOLERANCE`:

- the reference path (`fast=False`): full decode, then the resize. This is what Triton's
  `image_client.py` and most hand-written glue do.
- the fast path (default): a JPEG is decoded already reduced, in the DCT domain, to the smallest
  scale that is still at least the target size (libjpeg-turbo's M/8 scales through `simplejpeg`;
  without it, Pillow's `draft()` with 1/2, 1/4, 1/8), and only that smaller image is resized. Most
  of a full-HD decode is spent on pixels that the resize would average away; here they are never
  made. Other formats have no reduced decode and take the reference path.

Decompression bombs: the pixel count is read from the header and refused above `max_pixels`
(default `MAX_PIXELS`) before any pixel is decoded.
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

try:  # libjpeg-turbo's scaled decode (a small wheel); Pillow's draft() is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    simplejpeg = None

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

#: Largest image accepted, in pixels (8192 x 8192 = 67 megapixels). Checked from the header before
#: decoding. It is below Pillow's own warning threshold (89 megapixels), so every image that is
#: accepted decodes silently; raise it per client with `max_pixels=`.
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class Tolerance:
    """How far the fast path may be from the reference path, in 8-bit levels (0..255)."""

    mean_abs: float
    p99_abs: float


#: Measured on 1/f-spectrum textures (harder than photos: more detail near the Nyquist limit) from
#: 1280x720 to 4000x3000, whole image or central square: mean |diff| 0.4-1.3 levels, p99 2-6 levels.
PIXEL_TOLERANCE = Tolerance(mean_abs=2.0, p99_abs=8.0)

#: The same comparison on embeddings: |fast - reference| / |reference| (L2) per image. Measured
#: <= 0.0014 on the twin for JPEGs from 640x480 to 4000x3000 (tests/test_client_pipeline.py).
EMBEDDING_TOLERANCE = 0.01

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}


def jpeg_decoder() -> str:
    """Which reduced JPEG decode the fast path uses here."""
    return "simplejpeg (libjpeg-turbo M/8 scaled decode)" if simplejpeg else "Pillow draft()"


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


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only (lazy), and refuse oversized images before decoding anything."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image in a format Pillow reads") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image is over the pixel limit (decompression bomb guard): {exc}") \
            from exc
    except Exception as exc:  # noqa: BLE001 - any parser error is a bad input, never a crash
        raise InvalidImageError(f"cannot read image header ({type(exc).__name__}: {exc})") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            f"(decompression bomb guard; raise max_pixels to accept it)")
    return img


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block means "no orientation", as in viewers
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


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


def _decode(data: bytes, size: tuple[int, int], center_crop: bool, max_pixels: int,
            fast: bool) -> tuple[Image.Image, int, tuple[int, int]]:
    """Decoded image (maybe already reduced), its EXIF orientation (not yet applied) and the
    upright full-resolution size."""
    img = _open(data, max_pixels)
    orientation = _orientation(img)
    full = img.size[::-1] if orientation in _SWAPS_AXES else img.size
    try:
        if fast and img.format in ("JPEG", "MPO"):
            need_w, need_h = _needed_decode_size(img.size, orientation, size, center_crop)
            if simplejpeg is not None and img.mode in ("RGB", "L"):
                try:
                    arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=need_w,
                                                 min_height=need_h)
                except ValueError as exc:
                    raise InvalidImageError(f"cannot decode JPEG ({exc})") from exc
                return Image.fromarray(arr, "RGB"), orientation, full
            img.draft(img.mode, (need_w, need_h))
        img.seek(0)  # first frame of animations and multi-page files
        img.load()
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image is over the pixel limit (decompression bomb guard): {exc}") \
            from exc
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data in any format
        raise InvalidImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    return img, orientation, full


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


def upright(img: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1..8) as viewers do."""
    method = _ORIENTATION.get(orientation)
    return img.transpose(method) if method is not None else img


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidImageError(f"array must be HxWx3 (RGB), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"array has an empty dimension: {arr.shape}")
    if arr.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise InvalidImageError("float array values must be finite and within [0, 1]")
        return Image.fromarray(np.round(arr.astype(np.float64) * 255.0).astype(np.uint8), "RGB")
    raise InvalidImageError(f"array dtype must be uint8, or float in [0, 1], got {arr.dtype}")


def load_rgb(item: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any supported input to an upright 8-bit RGB PIL image at full size."""
    if isinstance(item, np.ndarray):
        return _from_array(item)
    if isinstance(item, Image.Image):
        return to_rgb(upright(_loaded(item), _orientation(item)))
    img, orientation, _ = _decode(read_bytes(item), (1, 1), False, max_pixels, fast=False)
    return to_rgb(upright(img, orientation))


def _loaded(img: Image.Image) -> Image.Image:
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - a lazily opened, corrupt file
        raise InvalidImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    return img


def resize(img: Image.Image, size: tuple[int, int], center_crop: bool = False,
           source_size: tuple[int, int] | None = None) -> Image.Image:
    """Resize to (width, height) per the module's resize policy.

    `source_size` is the full-resolution (upright) size when `img` was decoded reduced: the
    central square is then placed in full-resolution coordinates and mapped onto the reduced
    image with sub-pixel precision (Pillow's `box`), so both paths crop the very same region.
    """
    box = None
    if center_crop:
        width, height = source_size or img.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        sx, sy = img.size[0] / width, img.size[1] / height
        box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
    elif img.size == size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=None)


def to_pixels(item: ImageInput, size: tuple[int, int], center_crop: bool = False,
              max_pixels: int = MAX_PIXELS, fast: bool = True) -> np.ndarray:
    """HxWx3 uint8 pixels at the model's input size (`size` is (width, height))."""
    full = None
    if isinstance(item, np.ndarray):
        img = _from_array(item)
    elif isinstance(item, Image.Image):
        img = to_rgb(upright(_loaded(item), _orientation(item)))
    else:
        decoded, orientation, full = _decode(read_bytes(item), size, center_crop, max_pixels, fast)
        img = to_rgb(upright(decoded, orientation))
    return np.asarray(resize(img, size, center_crop, full), dtype=np.uint8)


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
