"""Shared by this project's Python-based backends: run a dynamic batch as one call, split it back.

Triton's dynamic batcher hands `execute` every request of a batch at once. They are concatenated,
run through the framework once, and each request gets exactly its own rows back, in order; a
failure answers every request of the batch with the error instead of taking the model down.
The server copies this file beside each backend's model.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils


def execute_batched(requests: list, input_name: str, output_name: str, output_dtype: np.dtype,
                    run: Callable[[np.ndarray], np.ndarray]) -> list:
    arrays = [pb_utils.get_input_tensor_by_name(r, input_name).as_numpy() for r in requests]
    sizes = [a.shape[0] for a in arrays]
    try:
        batch = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
        out = run(batch)
        if out.shape[0] != sum(sizes):
            raise ValueError(f"the model returned {out.shape[0]} rows for {sum(sizes)} inputs")
    except Exception as exc:  # noqa: BLE001 - one bad batch must not take the model down
        err = pb_utils.TritonError(f"inference failed: {exc}")
        return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
    responses = []
    start = 0
    for size in sizes:
        part = out[start:start + size].astype(output_dtype, copy=False)
        start += size
        responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(output_name, part)]))
    return responses
