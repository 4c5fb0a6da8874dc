"""Turn what applications hold (paths, bytes, files, PIL images, arrays) into model input pixels.

Resize policy: the whole image is resized to the model's input size (aspect ratio not kept, no crop;
`center_crop=True` crops the central square first), with Pillow's bilinear filter, which antialiases
when it shrinks. EXIF orientation is applied first and every mode (palette, alpha, 16-bit, grayscale,
CMYK) becomes 8-bit RGB; alpha is composited on white.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from client.errors import InvalidImageError

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

#: Largest image accepted, in pixels (about 16k x 16k). Above it decoding is refused outright,
#: before any pixel is decoded: a guard against decompression bombs.
MAX_PIXELS = 256 * 1024 * 1024


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


def _open(item: Any, max_pixels: int) -> Image.Image:
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InvalidImageError("file not found")
        data: Any = path.open("rb")
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise InvalidImageError("empty input (0 bytes)")
        data = io.BytesIO(bytes(item))
    elif hasattr(item, "read"):
        data = io.BytesIO(item.read())
        if data.getbuffer().nbytes == 0:
            raise InvalidImageError("empty input (0 bytes)")
    else:
        raise InvalidImageError(
            f"unsupported input type {type(item).__name__}; give a path, bytes, a binary file, "
            f"a PIL image or an HxWx3 array")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(data)
            width, height = img.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (decompression bomb guard)")
            img.seek(0)  # first frame of animations
            img.load()
    except InvalidImageError:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image in a format Pillow reads") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        raise InvalidImageError(f"cannot decode image ({exc})") from exc
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; any mode to 8-bit RGB, transparency composited on white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img


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
        return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), "RGB")
    raise InvalidImageError(f"array dtype must be uint8 or float in [0,1], got {arr.dtype}")


def load_rgb(item: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any supported input to an upright 8-bit RGB PIL image."""
    if isinstance(item, np.ndarray):
        return _from_array(item)
    if isinstance(item, Image.Image):
        try:
            item.load()
        except Exception as exc:
            raise InvalidImageError(f"cannot decode image ({exc})") from exc
        return to_rgb(item)
    return to_rgb(_open(item, max_pixels))


def resize(img: Image.Image, size: tuple[int, int], center_crop: bool = False) -> Image.Image:
    """Resize to (width, height) per the module's resize policy."""
    if center_crop:
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)


def to_pixels(item: ImageInput, size: tuple[int, int], center_crop: bool = False,
              max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 pixels at the model's input size."""
    return np.asarray(resize(load_rgb(item, max_pixels), size, center_crop), dtype=np.uint8)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], the hub model's input range."""
    return pixels.astype(np.float32) * np.float32(1.0 / 255.0)
