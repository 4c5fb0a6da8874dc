"""The named twins `--source twin:<name>` can build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TwinSpec:
    """How to build one twin; `build(seed)` returns a network (see hub_format.save_hub_module).

    `config` is set for PNASNet twins (a `pnasnet.PNASNetConfig`); `stats` uses it to count the
    same network with the 1001-way head, which is what the published figures describe.
    """

    name: str
    build: Callable[[int], Any]
    description: str
    image_size: int = 331
    feature_dim: int = 4320
    config: Any = None


def _tiny(seed: int) -> Any:
    from export.twin.tiny import TinyFeatureNet

    return TinyFeatureNet(seed=seed)


def _pnasnet(config_name: str, num_classes: int = 0) -> Callable[[int], Any]:
    def build(seed: int) -> Any:
        from export.twin import pnasnet

        return pnasnet.PNASNet(getattr(pnasnet, config_name), seed=seed, num_classes=num_classes)

    return build


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


def _register_pnasnet() -> None:
    """PNASNet twins; their configs are plain dataclasses, so registering imports no TensorFlow."""
    from export.twin.pnasnet_config import LARGE, REDUCED

    register(TwinSpec(
        "pnasnet_large", _pnasnet("LARGE"),
        "PNASNet-5 Large (TF-Slim pnasnet_large) with random weights: the real graph and cost",
        image_size=LARGE.image_size, feature_dim=LARGE.feature_dim, config=LARGE))
    register(TwinSpec(
        "pnasnet_large_classification", _pnasnet("LARGE", num_classes=1001),
        "pnasnet_large plus the 1001-way head: the classification/5 interface (logits)",
        image_size=LARGE.image_size, feature_dim=1001, config=LARGE))
    register(TwinSpec(
        "pnasnet_reduced", _pnasnet("REDUCED"),
        "4 PNASNet-5 cells (3 reductions) from 108 filters: same interface, ~1/10 of the cost",
        image_size=REDUCED.image_size, feature_dim=REDUCED.feature_dim, config=REDUCED))


_register_pnasnet()
