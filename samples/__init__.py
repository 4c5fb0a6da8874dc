"""Sample images the project ships, for the demo, the load tests and the tests.

They are drawn by `samples.generate` (no downloads), so they can be rebuilt byte for byte.
"""

from pathlib import Path

IMAGES_DIR = Path(__file__).parent / "images"


def sample_paths() -> list[Path]:
    """The shipped sample images, sorted by name."""
    return sorted(p for p in IMAGES_DIR.iterdir() if p.suffix.lower() in {".jpg", ".png"})
