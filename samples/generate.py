"""Draw the sample images: `python -m samples.generate` rewrites samples/images/.

Pairs of related scenes (a shifted or recoloured copy) let the demo show that near-duplicates get
closer embeddings than unrelated pictures; one full-HD photo-sized JPEG exercises downscaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from samples import IMAGES_DIR


def _sunset(size: tuple[int, int], sun_x: float) -> Image.Image:
    w, h = size
    y = np.linspace(0.0, 1.0, h)[:, None]
    sky = np.stack([np.full((h, w), 250.0) - 40 * y, 120 + 90 * y + 0 * np.arange(w),
                    60 + 150 * y + 0 * np.arange(w)], axis=-1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    r = h // 6
    cx, cy = int(sun_x * w), int(0.45 * h)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 220, 90))
    draw.rectangle((0, int(0.7 * h), w, h), fill=(30, 40, 70))
    return img.filter(ImageFilter.GaussianBlur(radius=max(1, h // 200)))


def _checker(size: tuple[int, int], cell: int, colors: tuple[tuple[int, int, int], ...]) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy // cell + xx // cell) % 2).astype(bool)
    arr = np.where(mask[..., None], np.array(colors[0]), np.array(colors[1])).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _leaves(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    img = Image.new("RGB", size, (40, 90, 40))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(250):
        x, y = rng.randint(0, w), rng.randint(0, h)
        r = rng.randint(h // 40, h // 10)
        g = rng.randint(100, 220)
        draw.ellipse((x - r, y - r // 2, x + r, y + r // 2), fill=(rng.randint(20, 90), g, 40))
    return img.filter(ImageFilter.GaussianBlur(radius=1))


def photo_like(width: int, height: int, seed: int = 0, falloff: float = 1.1) -> Image.Image:
    """Texture with a natural image's 1/f spectrum under a flat sky band, for tests and benchmarks.

    A steeper `falloff` gives a smoother picture: a smaller JPEG, cheaper to entropy-decode."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** falloff
        x = np.fft.irfft2(spectrum, s=(height, width))
        channels.append((x - x.mean()) / x.std())
    texture = np.stack(channels, -1) @ np.array([[1, .8, .6], [.2, 1, .5], [.1, .3, 1]]).T
    sky = np.linspace(0, 1, height)[:, None, None] * np.array([60, 30, -40])
    arr = 120 + 28 * texture + sky
    arr[: height // 3] = 200 + sky[: height // 3] * 0.2  # a flat band, as skies are
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def draw_all() -> dict[str, Image.Image]:
    return {
        "sunset.jpg": _sunset((480, 360), 0.35),
        "sunset_shifted.jpg": _sunset((480, 360), 0.55),
        "sunset_fullhd.jpg": _sunset((1920, 1080), 0.35),
        "checker.png": _checker((400, 400), 40, ((20, 20, 20), (235, 235, 235))),
        "checker_red.png": _checker((400, 400), 40, ((200, 30, 30), (235, 235, 235))),
        "leaves.jpg": _leaves((500, 375), seed=7),
    }


def main(dest: Path = IMAGES_DIR) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, img in draw_all().items():
        path = dest / name
        if name.endswith(".jpg"):
            img.save(path, quality=90, optimize=True)
        else:
            img.save(path, optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main():
        print(p, p.stat().st_size)
