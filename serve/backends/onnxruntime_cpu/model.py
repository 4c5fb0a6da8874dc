"""A Triton Python-based backend that serves `<version>/model.onnx` with onnxruntime on CPU.

The pip-installable tritonserver has no onnxruntime backend; this one lets the local server run the
ONNX model of the same repository (`<model>_onnx/configs/local_onnx.pbtxt`, chosen with
`python -m serve --config-name local_onnx`), so the converted model is checked through a real Triton
with the same contract as on GPU. It is not the local default: on CPU, OpenVINO runs PNASNet-5 Large
about twice as fast, and onnxruntime about as fast as TensorFlow (`make bench-cpu`). Triton's
dynamic batcher hands `execute` every request of a batch at once; they run as one onnxruntime call
and are split back in order.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from batched import execute_batched


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = int(params.get("ORT_INTRA_OP_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        (self.input_name,) = [i["name"] for i in config["input"]]
        (self.output_name,) = [o["name"] for o in config["output"]]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        pb_utils.Logger.log_info(f"loaded {path} ({self.input_name} -> {self.output_name})")

    def execute(self, requests: list) -> list:
        def run(batch: np.ndarray) -> np.ndarray:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            return self.session.run([self.output_name], {self.input_name: batch})[0]

        return execute_batched(requests, self.input_name, self.output_name, self.output_dtype, run)

    def finalize(self) -> None:
        self.session = None
