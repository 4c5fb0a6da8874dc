"""Prove that the written SavedModel computes what the source model computes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.errors import FidelityError

if TYPE_CHECKING:  # export.signature imports TensorFlow: the CLI imports this before it is quiet
    from export.signature import Interface, ServingModule

TOLERANCE = 1e-5


def probe_batch(iface: Interface, batch: int = 2, seed: int = 1234) -> np.ndarray:
    """A fixed input batch in the model's [0,1] range."""
    return np.random.RandomState(seed).rand(batch, *iface.input_dims).astype(np.float32)


def max_abs_difference(module: ServingModule, saved: Path, iface: Interface,
                       batch: np.ndarray | None = None) -> float:
    """Run the source (through the wrapper) and the reloaded SavedModel on the same batch."""
    import tensorflow as tf

    batch = probe_batch(iface) if batch is None else batch
    expected = module.serve(tf.constant(batch))[iface.output_name].numpy()
    reloaded = tf.saved_model.load(str(saved))
    got = reloaded.signatures["serving_default"](**{iface.input_name: tf.constant(batch)})
    got = got[iface.output_name].numpy()
    if got.shape != expected.shape:
        raise FidelityError(f"reloaded model returns shape {got.shape}, source {expected.shape}")
    return float(np.max(np.abs(got - expected)))


def check(diff: float, tolerance: float = TOLERANCE) -> None:
    if not np.isfinite(diff) or diff > tolerance:
        raise FidelityError(f"reloaded model differs from the source by {diff:.3g} (> {tolerance:g})")


@dataclass(frozen=True)
class Parity:
    """How closely a converted model (ONNX, OpenVINO at one precision, TF-TRT) reproduces the
    SavedModel on the same images: one record, so every provenance file and check reads alike."""

    images: int
    max_abs_diff: float
    max_abs_reference: float
    min_cosine: float
    precision: str = "f32"

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.max_abs_reference, 1e-30)

    def within(self, rtol: float, atol: float = 0.0) -> bool:
        """max |got - reference| <= rtol x max |reference| + atol (NaN never is)."""
        return bool(np.isfinite(self.max_abs_diff)
                    and self.max_abs_diff <= rtol * self.max_abs_reference + atol)


def compare(reference: np.ndarray, got: np.ndarray, engine: str, precision: str = "f32") -> Parity:
    """Parity of `got` against `reference` ([images, features] each), image by image.

    An all-zero embedding agrees (cosine 1) only with an identical one: a model that outputs
    zeros must not pass as a perfect match.
    """
    if got.shape != reference.shape:
        raise FidelityError(f"{engine} ({precision}) returns shape {got.shape}, the SavedModel "
                            f"{reference.shape}")
    ref, out = reference.astype(np.float64), got.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(norms > 0, np.sum(ref * out, axis=1) / np.maximum(norms, 1e-300),
                   np.where(np.linalg.norm(ref - out, axis=1) == 0, 1.0, 0.0))
    return Parity(int(ref.shape[0]), float(np.max(np.abs(out - ref))), float(np.max(np.abs(ref))),
                  float(np.min(cos)), precision)
