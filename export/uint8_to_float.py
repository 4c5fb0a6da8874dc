"""Triton Python model: 8-bit RGB pixels -> the embedding model's float32 input in [0, 1].

First step of the `<model>_uint8` ensemble (export/ensemble.py copies this file to
`<model>_uint8_to_float/1/model.py`). Clients send UINT8 [N, H, W, 3], a quarter of the float32
bytes; this step computes `pixels.astype(float32) * float32(1/255)`, the very expression of
`client.preprocess.to_model_input`, so the model sees bit-identical input on either transport.

It needs only numpy, which the Python backend of every Triton image has (the GPU deployment's
nvcr.io/nvidia/tritonserver:25.02-py3 has no Pillow, so decoding stays on the client).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE = np.float32(1.0 / 255.0)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        (self.input_name,) = [i["name"] for i in config["input"]]
        (self.output_name,) = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                pixels = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                images = pixels.astype(np.float32) * SCALE
                tensor = pb_utils.Tensor(self.output_name, images)
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            except Exception as exc:  # one bad request must not fail the others of the batch
                err = pb_utils.TritonError(f"uint8 -> float32 conversion failed: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=err))
        return responses
