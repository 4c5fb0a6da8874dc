"""Offline twins: networks with the hub model's exact interface, built and saved by this project.

A twin is saved in TF Hub's reusable SavedModel format, so `export` treats it like any local
hub module: the same loading, re-signing and fidelity check run on a twin and on the real model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from export.twin.registry import TWINS, TwinSpec, get_twin

__all__ = ["TWINS", "TwinSpec", "get_twin", "save_twin", "available_twins"]


def available_twins() -> list[str]:
    return sorted(TWINS)


def save_twin(name: str, path: str | Path, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> Path:
    """Build twin `name` with weights drawn from `seed` and save it in hub format at `path`."""
    from export.twin.hub_format import save_hub_module

    spec = get_twin(name)
    net = spec.build(seed)
    return save_hub_module(net, Path(path), image_size=spec.image_size, progress=progress)
