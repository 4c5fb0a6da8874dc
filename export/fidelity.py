"""Prove that the written SavedModel computes what the source model computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.errors import FidelityError
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
