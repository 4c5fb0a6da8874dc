"""A Triton Python-based backend that serves `<version>/model.xml` (OpenVINO IR) on CPU.

The pip-installable tritonserver has no OpenVINO backend; this one runs the very IR that Triton's
OpenVINO backend loads on CPU nodes (`configs/openvino_cpu.pbtxt`), written and parity-checked by
export beside the SavedModel. It is the local default (`configs/cpu.pbtxt`): on CPU it is about
twice as fast as TensorFlow where the CPU has native bf16 (bench/optimize_bench.py).

Parameters (all optional): INFERENCE_PRECISION `auto` (OpenVINO's choice: bf16 where the CPU has
native bf16, else f32), `f32` or `bf16`; PERFORMANCE_HINT (LATENCY, THROUGHPUT); NUM_STREAMS and
INFERENCE_NUM_THREADS as in Triton's OpenVINO backend. Unknown keys are refused at load, so a typo
does not silently change what runs. Whatever Triton hands `execute` (a dynamic batch of requests,
or one request of any batch size when max_batch_size is 0) runs as one OpenVINO call and is split
back in order.
"""

from __future__ import annotations

import json
import os

import numpy as np
import openvino as ov
import triton_python_backend_utils as pb_utils
from batched import execute_batched

PRECISIONS = {"auto": None, "f32": "f32", "bf16": "bf16"}
KNOWN = {"INFERENCE_PRECISION", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"}


def compile_config(params: dict[str, str]) -> dict[str, str]:
    """The OpenVINO CPU config from the model's parameters; a clear error for a bad key or value."""
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; this backend reads {sorted(KNOWN)}")
    precision = params.get("INFERENCE_PRECISION", "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"INFERENCE_PRECISION must be one of {sorted(PRECISIONS)}, got {precision!r}")
    config = {"PERFORMANCE_HINT": params.get("PERFORMANCE_HINT", "LATENCY").upper()}
    if PRECISIONS[precision]:
        config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
    for key in ("NUM_STREAMS", "INFERENCE_NUM_THREADS"):
        if params.get(key):
            config[key] = params[key].upper()
    return config


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        filename = config.get("default_model_filename") or "model.xml"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} is missing: export the version with OpenVINO (python -m export, without "
                "--no-openvino), or serve TensorFlow: python -m serve --config-name local_tf")
        try:
            ov_config = compile_config(params)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"model {config['name']}: {exc}") from exc
        self.compiled = ov.Core().compile_model(path, "CPU", ov_config)
        self.request = self.compiled.create_infer_request()
        (self.input_name,) = [i["name"] for i in config["input"]]
        (self.output_name,) = [o["name"] for o in config["output"]]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        pb_utils.Logger.log_info(
            f"loaded {path} with OpenVINO {ov.__version__} ({self.input_name} -> {self.output_name}); "
            f"inference precision {self.precision}, {ov_config}")

    def execute(self, requests: list) -> list:
        def run(batch: np.ndarray) -> np.ndarray:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            # a copy: the request reuses its output buffer on the next call
            return np.array(self.request.infer({self.input_name: batch})[0], copy=True)

        return execute_batched(requests, self.input_name, self.output_name, self.output_dtype, run)

    def finalize(self) -> None:
        self.request = None
        self.compiled = None
