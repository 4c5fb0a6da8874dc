"""A small network with the hub model's interface: [N,331,331,3] in [0,1] -> [N,4320] after ReLU+GAP.

It is for fast tests of everything around the model; it is not PNASNet.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _var(rng: np.random.RandomState, shape: tuple[int, ...], name: str, fan_in: int) -> tf.Variable:
    value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
    return tf.Variable(value, name=name)


class TinyFeatureNet(tf.Module):
    """Stem conv -> separable conv -> pool -> 1x1 conv to 4320 -> ReLU -> global average pool."""

    feature_dim = 4320

    def __init__(self, seed: int = 0) -> None:
        super().__init__(name="tiny_twin")
        rng = np.random.RandomState(seed)
        self.stem = _var(rng, (3, 3, 3, 32), "stem/weights", 27)
        self.gamma = tf.Variable(np.ones(32, np.float32), name="stem/bn/gamma")
        self.beta = tf.Variable(np.zeros(32, np.float32), name="stem/bn/beta")
        self.moving_mean = tf.Variable(np.zeros(32, np.float32), name="stem/bn/moving_mean",
                                       trainable=False)
        self.moving_var = tf.Variable(np.ones(32, np.float32), name="stem/bn/moving_variance",
                                      trainable=False)
        self.depthwise = _var(rng, (3, 3, 32, 1), "sep/depthwise_weights", 9)
        self.pointwise = _var(rng, (1, 1, 32, 64), "sep/pointwise_weights", 32)
        self.head = _var(rng, (1, 1, 64, self.feature_dim), "head/weights", 64)
        self.head_bias = tf.Variable(
            rng.normal(0.0, 0.1, size=self.feature_dim).astype(np.float32), name="head/biases")

    def __call__(self, images: tf.Tensor, training: bool = False,
                 batch_norm_momentum: float = 0.997) -> tf.Tensor:
        x = images * 2.0 - 1.0  # hub modules take [0,1]; the network works in [-1,1]
        x = tf.nn.conv2d(x, self.stem, strides=2, padding="SAME")
        if training:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            self.moving_mean.assign(batch_norm_momentum * self.moving_mean
                                    + (1 - batch_norm_momentum) * mean)
            self.moving_var.assign(batch_norm_momentum * self.moving_var
                                   + (1 - batch_norm_momentum) * var)
        else:
            mean, var = self.moving_mean, self.moving_var
        x = tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, 1e-3)
        x = tf.nn.relu(x)
        x = tf.nn.separable_conv2d(x, self.depthwise, self.pointwise, strides=[1, 2, 2, 1],
                                   padding="SAME")
        x = tf.nn.avg_pool2d(x, ksize=4, strides=4, padding="SAME")
        x = tf.nn.conv2d(x, self.head, strides=1, padding="SAME") + self.head_bias
        x = tf.nn.relu(x)
        return tf.reduce_mean(x, axis=[1, 2])
