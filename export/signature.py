"""Re-sign a loaded model into one serving signature with stable tensor names.

Signature names depend on how a model was saved (`inputs`, `keras_tensor`, `output_0`, ...); Triton
uses the signature keys as tensor names, so export always writes `images` -> `embedding`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from export import INPUT_NAME, OUTPUT_NAME
from export.errors import SourceError

DEFAULT_IMAGE_SIZE = 331


@dataclass(frozen=True)
class Interface:
    """The tensor contract of the serving signature (batch dimension excluded from `*_dims`)."""

    input_name: str
    input_dims: tuple[int, ...]
    output_name: str
    output_dims: tuple[int, ...]
    dtype: str = "float32"


def _source_callable(obj: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    """Inference function of the source: hub's `__call__(x, training=False)`, else its one signature."""
    if callable(obj) and getattr(obj, "variables", None) is not None:
        def call(x: tf.Tensor) -> tf.Tensor:
            try:
                return obj(x, training=False)
            except (TypeError, ValueError):
                return obj(x)
        return call
    signatures = getattr(obj, "signatures", {})
    if "serving_default" in signatures:
        fn = signatures["serving_default"]
        outputs = list(fn.structured_outputs)
        if len(outputs) != 1:
            raise SourceError(f"serving_default has {len(outputs)} outputs ({outputs}); expected one")
        args = fn.structured_input_signature[1]
        if len(args) != 1:
            raise SourceError(f"serving_default takes {len(args)} inputs ({list(args)}); expected one")
        (arg_name,) = args
        return lambda x: fn(**{arg_name: x})[outputs[0]]
    raise SourceError("the model has neither a callable __call__ nor a serving_default signature")


def image_size_of(obj: Any) -> int:
    """Input height/width declared by the source, else the hub model's 331."""
    candidates = []
    fn = obj.__call__ if callable(obj) else None
    for concrete in getattr(fn, "concrete_functions", []) or []:
        args = concrete.structured_input_signature[0]
        if args and isinstance(args[0], tf.TensorSpec):
            candidates.append(args[0].shape)
    for sig in getattr(obj, "signatures", {}).values():
        candidates.extend(s.shape for s in sig.structured_input_signature[1].values())
    for shape in candidates:
        if shape.rank == 4 and shape[1] is not None and shape[1] == shape[2]:
            return int(shape[1])
    return DEFAULT_IMAGE_SIZE


class ServingModule(tf.Module):
    """The exported model: the source's variables plus one signature `images` -> `embedding`."""

    def __init__(self, source_obj: Any, image_size: int) -> None:
        super().__init__(name="serving")
        self.source = source_obj  # tracked, so its variables are saved with the module
        self._call = _source_callable(source_obj)
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)

        @tf.function(input_signature=[spec])
        def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_NAME: tf.identity(self._call(images), name=OUTPUT_NAME)}

        self.serve = serve

    def interface(self) -> Interface:
        concrete = self.serve.get_concrete_function()
        (in_spec,) = concrete.structured_input_signature[0]
        out = concrete.structured_outputs[OUTPUT_NAME]
        if out.shape.rank != 2 or out.shape[1] is None:
            raise SourceError(f"model output has shape {out.shape}; expected [batch, features]")
        return Interface(INPUT_NAME, tuple(int(d) for d in in_spec.shape[1:]),
                         OUTPUT_NAME, (int(out.shape[1]),))


def resign(source_obj: Any) -> tuple[ServingModule, Interface]:
    """Wrap the source and trace the serving function once, which validates the interface."""
    module = ServingModule(source_obj, image_size_of(source_obj))
    try:
        interface = module.interface()
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"the model does not take [N,H,W,3] float32 images ({exc})") from exc
    return module, interface
