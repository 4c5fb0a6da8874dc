"""Save a network as a TF2 hub module (TF Hub's "reusable SavedModel" API).

What `hub.load` and `hub.KerasLayer` expect of the restored object: `__call__(inputs, training=...)`
and the lists `variables`, `trainable_variables`, `regularization_losses`. A `serving_default`
signature is added too, like the published feature-vector modules, for signature-based tools.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf


def save_hub_module(net: Any, path: Path, image_size: int = 331,
                    progress: Callable[[str], None] | None = None) -> Path:
    """Trace `net(images, training, batch_norm_momentum)` for inference and training; write `path`."""
    say = progress or (lambda _msg: None)
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)

    @tf.function
    def call(inputs: tf.Tensor, training: bool = False,
             batch_norm_momentum: float = 0.997) -> tf.Tensor:
        return net(inputs, training=training, batch_norm_momentum=batch_norm_momentum)

    say("tracing inference graph")
    inference = call.get_concrete_function(spec, training=False)
    say("tracing training graph")
    call.get_concrete_function(spec, training=True)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name="inputs")])
    def serving(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"feature_vector": inference(inputs)}

    root = tf.train.Checkpoint()
    root.net = net
    root.__call__ = call
    root.variables = list(net.variables)
    root.trainable_variables = list(net.trainable_variables)
    root.regularization_losses = []
    say(f"writing SavedModel to {path}")
    tf.saved_model.save(root, str(path), signatures={"serving_default": serving})
    return path
