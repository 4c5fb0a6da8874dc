"""A Triton Python-based backend that serves a TensorFlow SavedModel on CPU.

The pip-installable tritonserver has no TensorFlow backend, so the local server runs the very same
`<version>/model.savedmodel` folder through this backend. Triton's dynamic batcher hands `execute`
every request of a batch at once; they are run as one TensorFlow call and split back in order.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from batched import execute_batched

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        filename = config.get("default_model_filename") or "model.savedmodel"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        threads = int(params.get("TF_INTRA_OP_THREADS", "0"))
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        self.model = tf.saved_model.load(path)
        self.fn = self.model.signatures[params.get("TF_SIGNATURE_DEF", "serving_default")]
        (self.input_name,) = [i["name"] for i in config["input"]]
        (self.output_name,) = [o["name"] for o in config["output"]]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        self.logger = pb_utils.Logger
        self.logger.log_info(f"loaded {path} ({self.input_name} -> {self.output_name})")

    def execute(self, requests: list) -> list:
        def run(batch: np.ndarray) -> np.ndarray:
            return self.fn(**{self.input_name: tf.constant(batch)})[self.output_name].numpy()

        return execute_batched(requests, self.input_name, self.output_name, self.output_dtype, run)

    def finalize(self) -> None:
        self.fn = None
        self.model = None
