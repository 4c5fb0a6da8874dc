"""What the client learns from the server: tensor names, input size and type, batch limit.

Nothing here is a constant of the client: it reads the model's metadata and config, as Triton's
own image_client does, so a model with other names or sizes works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client.errors import ModelContractError

#: Input types the client can produce: the model's float input, or 8-bit pixels (the uint8 payload).
SUPPORTED_INPUT_TYPES = ("FP32", "UINT8")
# Images per request for a model that takes a dynamic batch without a batcher (max_batch_size 0).
UNBATCHED_REQUEST_IMAGES = 8


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    input_name: str
    input_datatype: str
    height: int
    width: int
    channels: int
    output_name: str
    output_dim: int
    max_batch_size: int
    platform: str = ""
    #: For an ensemble: its steps as (model name, version) in order; "-1" means "latest ready".
    steps: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order Pillow uses."""
        return (self.width, self.height)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def bytes_per_image(self) -> int:
        """Input tensor bytes of one image (the payload a request carries per image)."""
        itemsize = {"FP32": 4, "UINT8": 1}.get(self.input_datatype, 4)
        return self.height * self.width * self.channels * itemsize

    def embedding_step(self, model: str) -> tuple[str, str] | None:
        """For an ensemble, the step that runs `model` (else the last step); None for a model."""
        if not self.steps:
            return None
        return next((step for step in self.steps if step[0] == model), self.steps[-1])

    @classmethod
    def from_server(cls, metadata: dict[str, Any], config: dict[str, Any]) -> ModelInfo:
        """Build from model metadata and config JSON (gRPC `as_json=True` or HTTP)."""
        cfg = config.get("config", config)
        inputs, outputs = metadata.get("inputs", []), metadata.get("outputs", [])
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelContractError(
                f"model {metadata.get('name')!r} has {len(inputs)} inputs and {len(outputs)} outputs;"
                " an image embedding model has one of each; check the model name")
        inp, out = inputs[0], outputs[0]
        max_batch = int(cfg.get("max_batch_size", 0))
        in_shape = [int(d) for d in inp["shape"]]
        out_shape = [int(d) for d in out["shape"]]
        if max_batch > 0:  # metadata shapes include the batch dimension as -1
            in_shape, out_shape = in_shape[1:], out_shape[1:]
        elif len(in_shape) == 4 and in_shape[0] == -1 and out_shape[:1] == [-1]:
            # No batcher but a dynamic first dim (Triton's OpenVINO backend): any batch per request.
            in_shape, out_shape = in_shape[1:], out_shape[1:]
            max_batch = UNBATCHED_REQUEST_IMAGES
        if len(in_shape) != 3 or in_shape[2] != 3 or len(out_shape) != 1:
            raise ModelContractError(
                f"model {metadata.get('name')!r} takes {in_shape} -> {out_shape}; expected "
                f"[H, W, 3] -> [D] (an image embedding model); check the model name")
        if inp["datatype"] not in SUPPORTED_INPUT_TYPES:
            raise ModelContractError(
                f"model {metadata.get('name')!r} takes {inp['datatype']}; the client sends "
                f"{' or '.join(SUPPORTED_INPUT_TYPES)}")
        steps = tuple((str(step.get("model_name", "")), str(int(step.get("model_version", -1))))
                      for step in cfg.get("ensemble_scheduling", {}).get("step", []))
        return cls(name=metadata["name"], version=latest_version(metadata), input_name=inp["name"],
                   input_datatype=inp["datatype"], height=in_shape[0], width=in_shape[1],
                   channels=in_shape[2], output_name=out["name"], output_dim=out_shape[0],
                   max_batch_size=max(max_batch, 1), platform=str(metadata.get("platform", "")),
                   steps=steps)


def latest_version(metadata: dict[str, Any]) -> str:
    """The highest version the metadata lists as available ("" when it lists none)."""
    versions = [str(v) for v in metadata.get("versions") or []]
    if not versions:
        return ""
    return max(versions, key=lambda v: (int(v) if v.isdigit() else -1, v))
