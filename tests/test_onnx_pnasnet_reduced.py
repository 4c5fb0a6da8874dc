"""ONNX parity on PNASNet cells: the reduced twin (real PNASNet-5 cells: separable 3x3/5x5/7x7
convolutions, stride-2 reductions with asymmetric padding, factorized reductions, batch norm) converts
with its contract intact and matches TensorFlow in onnxruntime on CPU within the stated tolerance.
The full network is converted in bench/optimize_bench.py, not here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export import onnx as onnx_path
from export.fidelity import probe_batch
from export.signature import Interface

MODEL = "pnasnet_large"
TWIN = "pnasnet_reduced"


def test_reduced_pnasnet_twin_converts_with_parity(tmp_path: Path) -> None:
    import tensorflow as tf

    from export.pipeline import export_model
    from export.twin.registry import TWINS

    if TWIN not in TWINS:  # pragma: no cover - the twin registry always carries it
        pytest.skip(f"twin:{TWIN} is not registered")
    exported = export_model(f"twin:{TWIN}", tmp_path, MODEL)
    result = onnx_path.export_onnx(tmp_path, MODEL)
    assert result.parity.within(onnx_path.RTOL, onnx_path.ATOL), result.parity
    assert result.parity.min_cosine > 0.99999

    # A fresh batch, three images (a batch size the export check did not use).
    iface: Interface = exported.interface
    batch = probe_batch(iface, batch=3, seed=99)
    fn = tf.saved_model.load(str(exported.path / "model.savedmodel")).signatures["serving_default"]
    want = fn(images=tf.constant(batch))["embedding"].numpy()
    (got,) = onnx_path.ort_session(result.path / onnx_path.ONNX_FILENAME).run(
        ["embedding"], {"images": batch})
    parity = onnx_path.compare(want, got)
    assert parity.within(onnx_path.RTOL, onnx_path.ATOL), parity
    assert np.all(np.isfinite(got)) and got.shape == (3, 4320)
