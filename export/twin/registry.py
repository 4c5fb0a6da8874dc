"""The named twins `--source twin:<name>` can build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TwinSpec:
    """How to build one twin; `build(seed)` returns a network object (see hub_format.HubNetwork)."""

    name: str
    build: Callable[[int], Any]
    description: str
    image_size: int = 331
    feature_dim: int = 4320


def _tiny(seed: int) -> Any:
    from export.twin.tiny import TinyFeatureNet

    return TinyFeatureNet(seed=seed)


TWINS: dict[str, TwinSpec] = {
    "tiny": TwinSpec("tiny", _tiny, "a small conv net with the hub interface, for fast tests"),
}


def register(spec: TwinSpec) -> None:
    TWINS[spec.name] = spec


def get_twin(name: str) -> TwinSpec:
    try:
        return TWINS[name]
    except KeyError:
        raise ValueError(f"unknown twin {name!r}; available: {', '.join(sorted(TWINS))}") from None
