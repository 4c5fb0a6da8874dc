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
    """Trace `net(images, training, batch_norm_momentum)` for inference and training; write `path`.

    `batch_norm_momentum` is traced as a scalar tensor, so the restored `__call__` accepts any value
    (a Python float or a tensor), as `hub.KerasLayer(..., arguments=dict(batch_norm_momentum=m))`
    passes it; its default is the network's `batch_norm_momentum` attribute when it has one.
    The serving signature's output key is the network's `output_key` ("feature_vector" by default;
    a classification network uses "logits").
    """
    say = progress or (lambda _msg: None)
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    momentum_spec = tf.TensorSpec([], tf.float32, name="batch_norm_momentum")
    default_momentum = float(getattr(net, "batch_norm_momentum", 0.997))
    output_key = str(getattr(net, "output_key", "feature_vector"))

    # No autograph: networks use Python control flow on Python values only, and converting a large
    # network's code costs seconds per trace.
    @tf.function(autograph=False)
    def call(inputs: tf.Tensor, training: bool = False,
             batch_norm_momentum: float = default_momentum) -> tf.Tensor:
        return net(inputs, training=training, batch_norm_momentum=batch_norm_momentum)

    say("tracing inference graph")
    inference = call.get_concrete_function(spec, training=False, batch_norm_momentum=momentum_spec)
    say("tracing training graph")
    call.get_concrete_function(spec, training=True, batch_norm_momentum=momentum_spec)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name="inputs")], autograph=False)
    def serving(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        # The concrete function, not `call`: inside another graph `call` would trace a third time.
        return {output_key: inference(inputs, batch_norm_momentum=tf.constant(default_momentum))}

    root = tf.train.Checkpoint()
    root.net = net
    root.__call__ = call
    root.variables = list(net.variables)
    root.trainable_variables = list(net.trainable_variables)
    root.regularization_losses = []
    say(f"writing SavedModel to {path}")
    tf.saved_model.save(root, str(path), signatures={"serving_default": serving})
    return path
