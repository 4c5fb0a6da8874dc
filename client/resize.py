"""The resize policy: whole image to the model's size, antialiased, on OpenCV's SIMD kernels.

The shrink is a pyramid. While an axis is at least twice its target it is halved, and OpenCV's
bilinear filter at exactly 2x is an exact 2-pixel box average, so every source pixel counts. The
last step, a factor below 2, is plain bilinear, which is also what the model's own evaluation
preprocessing does (TF-Slim `inception_preprocessing.preprocess_for_eval`: `resize_bilinear`, no
antialiasing). A pattern of 1-pixel stripes shrunk from 1920 to 331 comes out flat grey, where a
single bilinear step turns it into stripes of full contrast (tests/test_client_preprocess.py).

Why not Pillow's bilinear, which antialiases the last step too, with a kernel as wide as its
factor? It is scalar C: from a 960x540 decode it takes 2.2 ms, against 0.4 ms here, and that was
most of the client's preprocessing time. The two policies differ by under 0.4 levels (of 255) on
average on photo-like pictures, and up to 2.2 on the busiest textures (`PILLOW_DIFFERENCE`). Where
the last factor is between 1.5 and 2, detail right at the source's pixel pitch keeps some contrast
that Pillow would smooth away.

Orientation changes (EXIF) go through OpenCV's exact transposes and flips before the resize, so a
rotated file gives the very pixels of its upright twin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from client.errors import InvalidImageError

#: Largest mean |difference| from Pillow's antialiased bilinear resize of the same pixels (what
#: Triton's image_client.py computes), in 8-bit levels, over 1/f textures from smooth to very busy
#: at 640x480 to 3000x2000 (measured 0.1-2.2; tests/test_client_preprocess.py checks it).
PILLOW_DIFFERENCE = 2.5

# EXIF orientation -> the OpenCV operation that makes the stored pixels upright.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda p: cv2.flip(p, 1),
    3: lambda p: cv2.rotate(p, cv2.ROTATE_180),
    4: lambda p: cv2.flip(p, 0),
    5: cv2.transpose,
    6: lambda p: cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE),
    7: lambda p: cv2.rotate(cv2.transpose(p), cv2.ROTATE_180),
    8: lambda p: cv2.rotate(p, cv2.ROTATE_90_COUNTERCLOCKWISE),
}

#: (left, top, right, bottom) in pixel-edge coordinates; fractions allowed.
Box = tuple[float, float, float, float]


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to HxWx3 pixels, as viewers do."""
    make_upright = _UPRIGHT.get(orientation)
    return make_upright(pixels) if make_upright is not None else pixels


def central_square(full: tuple[int, int], decoded: tuple[int, int]) -> Box:
    """The largest centred square of a `full` (width, height) image, as a box in the coordinates
    of the same image `decoded` at another size (a reduced decode)."""
    width, height = full
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    sx, sy = decoded[0] / width, decoded[1] / height
    return left * sx, top * sy, (left + side) * sx, (top + side) * sy


def resize(pixels: np.ndarray, size: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """HxWx3 uint8 pixels to `size` (width, height), aspect ratio not kept, per the module's policy.

    `box` resizes only that region. Its fractions matter when the pixels were decoded reduced: the
    central square of the full image then starts between pixels, and rounding it would shift the
    picture by up to half a reduced pixel (4 full-resolution pixels at 1/8 scale), enough to fail
    the parity tolerance.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InvalidImageError(f"resize takes HxWx3 uint8 pixels, got {pixels.shape} {pixels.dtype}")
    target_w, target_h = size
    height, width = pixels.shape[:2]
    left, top, right, bottom = box if box is not None else (0.0, 0.0, float(width), float(height))
    while True:
        # keep only the whole pixels the box touches
        x0, y0 = math.floor(left), math.floor(top)
        x1, y1 = min(math.ceil(right), width), min(math.ceil(bottom), height)
        if (x0, y0, x1, y1) != (0, 0, width, height):
            pixels = pixels[y0:y1, x0:x1]
            left, right, top, bottom = left - x0, right - x0, top - y0, bottom - y0
            height, width = pixels.shape[:2]
        whole_x = left == 0 and right == width
        whole_y = top == 0 and bottom == height
        halve_x, halve_y = right - left >= 2 * target_w, bottom - top >= 2 * target_h
        if not (halve_x or halve_y):
            break
        # Halve what is still 2x too big (ceil keeps an odd side's last pixel: a hair under 2x). An
        # axis that is not halved goes to its target in the same pass when the box spans it.
        new_w = (width + 1) // 2 if halve_x else (target_w if whole_x else width)
        new_h = (height + 1) // 2 if halve_y else (target_h if whole_y else height)
        pixels = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = new_w / width, new_h / height
        left, right = (0.0, float(new_w)) if whole_x else (left * sx, right * sx)
        top, bottom = (0.0, float(new_h)) if whole_y else (top * sy, bottom * sy)
        height, width = new_h, new_w
    if whole_x and whole_y:
        if (width, height) != (target_w, target_h):
            pixels = cv2.resize(pixels, (target_w, target_h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(pixels)
    # a fractional box: the same bilinear step, as an affine map from output to source pixels
    sx, sy = (right - left) / target_w, (bottom - top) / target_h
    matrix = np.array([[sx, 0.0, left + 0.5 * sx - 0.5], [0.0, sy, top + 0.5 * sy - 0.5]])
    return cv2.warpAffine(pixels, matrix, (target_w, target_h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
