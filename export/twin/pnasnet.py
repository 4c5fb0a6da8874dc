"""PNASNet-5 in TF2: the architecture of TF-Slim's `pnasnet_large`, with seeded random weights.

The real checkpoint cannot be fetched on offline machines, yet export time, memory, latency and
conversion results are only meaningful if they come from the real network's graph. This module
rebuilds that graph op for op (Liu et al., "Progressive Neural Architecture Search",
arXiv:1712.00559; TF-Slim `nets/nasnet/pnasnet.py` and `nasnet_utils.py`):

- ImageNet stem: 3x3 stride-2 VALID conv (32 * stem_multiplier filters) + BN, then two PNASNet
  cells with stride 2 at 1/4 and 1/2 of the base filter count.
- `num_cells` PNASNet cells; reductions (stride 2, filters x filter_scaling_rate) at the indices
  TF-Slim's `calc_reduction_layers` gives (4 and 8 for 12 cells); each cell's second input is the
  output of the cell before the previous one (`skip_reduction_layer_input=1`).
- A cell: ReLU+1x1 conv+BN on its input; its other input brought to the same size by factorized
  reduction (spatial mismatch) or ReLU+1x1 conv+BN (channel mismatch); five blocks that each add
  two transformed hidden states; output = concat of the five block outputs (5 x filters).
- Separable ops are two stacked ReLU -> separable conv -> BN; max pools get a 1x1 conv+BN only
  when channels differ; SAME padding everywhere but the stem conv; BN epsilon 1e-3.
- Final ReLU + global average pool -> 5 * final filters (4320 for the large config); an optional
  dense head gives logits like the hub's classification variant (1001 classes).

Variables carry TF-Slim's scope names (e.g. `cell_0/comb_iter_0/left/separable_5x5_1/
depthwise_weights`), so a real checkpoint can be mapped onto the twin name for name.

Not reproduced, because serving and feature extraction never use them: drop-path and dropout
(TF-Slim disables both outside training) and the auxiliary head (training only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from export.twin.pnasnet_config import (
    DEFAULT_BATCH_NORM_MOMENTUM,
    LARGE,
    PNASNET5_HIDDENSTATE_INDICES,
    PNASNET5_OPERATIONS,
    PNASNET5_USED_HIDDENSTATES,
    REDUCED,
    PNASNetConfig,
)

BATCH_NORM_EPSILON = 1e-3


@dataclass(frozen=True)
class Shape:
    """Static [size, size, channels] of a feature map (all maps here are square)."""

    size: int
    channels: int


def _same(size: int, stride: int) -> int:
    return math.ceil(size / stride)


class WeightFactory:
    """Draws every variable from its own stream, keyed by the seed and the variable's full name.

    Keying by name (not by creation order) keeps weights identical for the same seed whatever
    order layers are built in, and makes every variable reproducible on its own. The streams are
    numpy's PCG64, whose output numpy keeps stable for a given version (pinned in pyproject.toml).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.names: set[str] = set()

    def _rng(self, name: str) -> np.random.Generator:
        if name in self.names:
            raise ValueError(f"duplicate variable name {name!r}")
        self.names.add(name)
        # The name's bytes themselves (not a hash of them) enter the seed: no two names collide.
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *name.encode()])))

    def normal(self, name: str, shape: Sequence[int], std: float) -> tf.Variable:
        value = self._rng(name).standard_normal(tuple(shape), dtype=np.float32)
        value *= np.float32(std)
        return tf.Variable(value, name=name)

    def constant(self, name: str, value: np.ndarray, trainable: bool = True) -> tf.Variable:
        self._rng(name)  # registers the name, so duplicates are caught here too
        return tf.Variable(value.astype(np.float32), name=name, trainable=trainable)

    def batch_norm_values(self, name: str, channels: int, gain: float) -> dict[str, np.ndarray]:
        """Near-identity BN statistics with some spread, like a trained network's.

        Random (not 0/1) statistics make every BN parameter matter to the output, so a graph that
        dropped or misapplied one would change the embeddings. `gain` scales gamma: branches that
        are summed use 1/sqrt(2), so activations keep unit scale through the cells.
        """
        rng = self._rng(name)
        return {
            "gamma": gain * rng.uniform(0.8, 1.2, channels).astype(np.float32),
            "beta": rng.normal(0.0, 0.05, channels).astype(np.float32),
            "moving_mean": rng.normal(0.0, 0.05, channels).astype(np.float32),
            "moving_variance": rng.uniform(0.8, 1.2, channels).astype(np.float32),
        }


class BatchNorm(tf.Module):
    """Fused batch norm with scale, like `slim.batch_norm(scale=True, fused=True)`."""

    def __init__(self, factory: WeightFactory, scope: str, channels: int, gain: float = 1.0) -> None:
        super().__init__(name="batch_norm")
        values = factory.batch_norm_values(scope, channels, gain)
        self.gamma = factory.constant(f"{scope}/gamma", values["gamma"])
        self.beta = factory.constant(f"{scope}/beta", values["beta"])
        self.moving_mean = factory.constant(f"{scope}/moving_mean", values["moving_mean"],
                                            trainable=False)
        self.moving_variance = factory.constant(f"{scope}/moving_variance",
                                                values["moving_variance"], trainable=False)

    def __call__(self, x: tf.Tensor, training: bool, momentum: tf.Tensor | float) -> tf.Tensor:
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=BATCH_NORM_EPSILON, is_training=False)
            return y
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, self.gamma, self.beta, epsilon=BATCH_NORM_EPSILON, is_training=True)
        momentum = tf.cast(momentum, tf.float32)
        self.moving_mean.assign(momentum * self.moving_mean + (1.0 - momentum) * mean)
        self.moving_variance.assign(momentum * self.moving_variance + (1.0 - momentum) * variance)
        return y


class Conv(tf.Module):
    """Bias-free KxK convolution (TF-Slim's conv2d under the NASNet arg scope).

    Weights are N(0, gain / fan_in). Gain 1 (not He's 2) for the 1x1 convs after each cell's ReLUs
    offsets the growth from summed branches and max pools, so activations stay near unit scale
    through all cells (std 0.4-0.7 measured) instead of growing ~25% per cell, as a trained
    network's would; that keeps float16 conversions and absolute-tolerance checks meaningful.
    """

    def __init__(self, factory: WeightFactory, scope: str, kernel: int, in_channels: int,
                 out_channels: int, stride: int = 1, padding: str = "SAME",
                 gain: float = 1.0) -> None:
        super().__init__(name="conv")
        std = math.sqrt(gain / (kernel * kernel * in_channels))
        self.weights = factory.normal(f"{scope}/weights", (kernel, kernel, in_channels, out_channels),
                                      std)
        self.stride = stride
        self.padding = padding

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv2d(x, self.weights, strides=self.stride, padding=self.padding)


class SeparableConv(tf.Module):
    """Depthwise KxK (multiplier 1, strided) then pointwise 1x1, bias-free: slim.separable_conv2d."""

    def __init__(self, factory: WeightFactory, scope: str, kernel: int, in_channels: int,
                 out_channels: int, stride: int) -> None:
        super().__init__(name="separable_conv")
        self.depthwise = factory.normal(f"{scope}/depthwise_weights", (kernel, kernel, in_channels, 1),
                                        math.sqrt(2.0 / (kernel * kernel)))
        self.pointwise = factory.normal(f"{scope}/pointwise_weights",
                                        (1, 1, in_channels, out_channels), math.sqrt(1.0 / in_channels))
        self.stride = stride

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.separable_conv2d(x, self.depthwise, self.pointwise,
                                      strides=[1, self.stride, self.stride, 1], padding="SAME")


class FactorizedReduction(tf.Module):
    """Halve the resolution without dropping pixels: two offset 1x1 paths, concatenated, then BN."""

    def __init__(self, factory: WeightFactory, scope: str, in_channels: int, out_channels: int,
                 gain: float = 1.0) -> None:
        super().__init__(name="factorized_reduction")
        if out_channels % 2:
            raise ValueError(f"{scope}: factorized reduction needs an even filter count, "
                             f"got {out_channels}")
        half = out_channels // 2
        self.path1_conv = Conv(factory, f"{scope}/path1_conv", 1, in_channels, half)
        self.path2_conv = Conv(factory, f"{scope}/path2_conv", 1, in_channels, half)
        self.final_path_bn = BatchNorm(factory, f"{scope}/final_path_bn", out_channels, gain)

    def __call__(self, x: tf.Tensor, training: bool, momentum: tf.Tensor | float) -> tf.Tensor:
        path1 = tf.nn.avg_pool2d(x, ksize=1, strides=2, padding="VALID")
        path1 = self.path1_conv(path1)
        # Shift by one pixel (pad right/bottom, drop the first row/column) to sample the other grid.
        path2 = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
        path2 = tf.nn.avg_pool2d(path2, ksize=1, strides=2, padding="VALID")
        path2 = self.path2_conv(path2)
        return self.final_path_bn(tf.concat([path1, path2], axis=3), training, momentum)

    @staticmethod
    def out_size(size: int) -> int:
        return (size - 1) // 2 + 1


class Operation(tf.Module):
    """One of the cell's ops applied to one hidden state (TF-Slim `_apply_conv_operation`)."""

    def __init__(self, factory: WeightFactory, scope: str, operation: str, in_shape: Shape,
                 filters: int, stride: int) -> None:
        super().__init__(name="operation")
        self.operation = operation
        self.stride = stride
        steps: list[tuple[str, tf.Module | None]] = []
        self.out_shape = Shape(_same(in_shape.size, stride), filters)
        # Every op output is summed with another, so its last BN halves the variance (see gain).
        gain = math.sqrt(0.5)
        if operation.startswith("separable"):
            kernel = int(operation.split("_")[1].split("x")[0])
            num_layers = int(operation.split("_")[2])
            channels, layer_stride = in_shape.channels, stride
            for layer in range(1, num_layers + 1):
                last = layer == num_layers
                sep = SeparableConv(factory, f"{scope}/separable_{kernel}x{kernel}_{layer}", kernel,
                                    channels, filters, layer_stride)
                bn = BatchNorm(factory, f"{scope}/bn_sep_{kernel}x{kernel}_{layer}", filters,
                               gain if last else 1.0)
                steps += [("relu", None), ("sep", sep), ("bn", bn)]
                channels, layer_stride = filters, 1
        elif operation.startswith("max_pool"):
            self.pool = int(operation.split("_")[-1].split("x")[0])
            steps.append(("max_pool", None))
            if in_shape.channels != filters:
                steps += [("conv", Conv(factory, f"{scope}/1x1", 1, in_shape.channels, filters)),
                                ("bn", BatchNorm(factory, f"{scope}/bn_1", filters, gain))]
        elif operation == "none":
            if stride > 1 or in_shape.channels != filters:
                steps += [("relu", None),
                                ("conv", Conv(factory, f"{scope}/1x1", 1, in_shape.channels, filters,
                                              stride=stride, gain=2.0)),
                                ("bn", BatchNorm(factory, f"{scope}/bn_1", filters, gain))]
        else:
            raise ValueError(f"unknown operation {operation!r}")
        # Kinds as a plain string (not a tracked container), modules in a tracked list.
        self.plan = ",".join(kind for kind, _ in steps)
        self.steps = [m for _, m in steps if m is not None]

    def __call__(self, x: tf.Tensor, training: bool, momentum: tf.Tensor | float) -> tf.Tensor:
        modules = iter(self.steps)
        for kind in filter(None, self.plan.split(",")):
            if kind == "relu":
                x = tf.nn.relu(x)
            elif kind == "max_pool":
                x = tf.nn.max_pool2d(x, ksize=self.pool, strides=self.stride, padding="SAME")
            elif kind == "bn":
                x = next(modules)(x, training, momentum)
            else:
                x = next(modules)(x)
        return x


class PNASNetCell(tf.Module):
    """A PNASNet-5 cell (TF-Slim `NasNetABaseCell.__call__` with the PNASNet-5 genotype)."""

    def __init__(self, factory: WeightFactory, scope: str, in_shape: Shape, prev_shape: Shape | None,
                 filters: int, stride: int) -> None:
        super().__init__(name="pnasnet_cell")
        self.scope = scope
        self.filters = filters
        self.stride = stride
        # Bring the previous-previous output to this cell's input size and filter count.
        self.prev_mode = "input"  # no such output (first stem cell): reuse the raw input
        prev = prev_shape or in_shape
        if prev_shape is not None and prev.size != in_shape.size:
            self.prev_mode = "factorized"
            self.prev_reduction = FactorizedReduction(factory, scope, prev.channels, filters)
            prev = Shape(FactorizedReduction.out_size(prev.size), filters)
            if prev.size != in_shape.size:
                raise ValueError(f"{scope}: previous output {prev_shape} can't be reduced to the input "
                                 f"size {in_shape.size}")
        elif prev_shape is not None and prev.channels != filters:
            self.prev_mode = "project"
            self.prev_1x1 = Conv(factory, f"{scope}/prev_1x1", 1, prev.channels, filters)
            self.prev_bn = BatchNorm(factory, f"{scope}/prev_bn", filters)
            prev = Shape(prev.size, filters)
        elif prev_shape is not None:
            self.prev_mode = "identity"
        self.conv_1x1 = Conv(factory, f"{scope}/1x1", 1, in_shape.channels, filters)
        self.beginning_bn = BatchNorm(factory, f"{scope}/beginning_bn", filters)
        states = [Shape(in_shape.size, filters), prev]
        self.left_ops: list[Operation] = []
        self.right_ops: list[Operation] = []
        ops, idx = PNASNET5_OPERATIONS, PNASNET5_HIDDENSTATE_INDICES
        for block in range(5):
            pair = []
            for side, k in (("left", 2 * block), ("right", 2 * block + 1)):
                # Only the cell's two inputs are strided; block outputs are already reduced.
                op_stride = stride if idx[k] < 2 else 1
                pair.append(Operation(factory, f"{scope}/comb_iter_{block}/{side}", ops[k],
                                      states[idx[k]], filters, op_stride))
            if pair[0].out_shape != pair[1].out_shape:
                raise ValueError(f"{scope}/comb_iter_{block}: branches disagree "
                                 f"({pair[0].out_shape} vs {pair[1].out_shape})")
            self.left_ops.append(pair[0])
            self.right_ops.append(pair[1])
            states.append(pair[0].out_shape)
        unused = [s for s, used in zip(states, PNASNET5_USED_HIDDENSTATES, strict=True) if not used]
        if len(set(unused)) != 1:
            raise ValueError(f"{scope}: unused hidden states differ in shape: {unused}")
        self.out_shape = Shape(unused[0].size, unused[0].channels * len(unused))

    def __call__(self, x: tf.Tensor, prev: tf.Tensor | None, training: bool,
                 momentum: tf.Tensor | float) -> tf.Tensor:
        if self.prev_mode == "input":
            prev = x
        elif self.prev_mode == "factorized":
            prev = self.prev_reduction(tf.nn.relu(prev), training, momentum)
        elif self.prev_mode == "project":
            prev = self.prev_bn(self.prev_1x1(tf.nn.relu(prev)), training, momentum)
        x = self.beginning_bn(self.conv_1x1(tf.nn.relu(x)), training, momentum)
        states = [x, prev]
        idx = PNASNET5_HIDDENSTATE_INDICES
        for block, (left, right) in enumerate(zip(self.left_ops, self.right_ops, strict=True)):
            h1 = left(states[idx[2 * block]], training, momentum)
            h2 = right(states[idx[2 * block + 1]], training, momentum)
            states.append(h1 + h2)
        unused = [s for s, used in zip(states, PNASNET5_USED_HIDDENSTATES, strict=True) if not used]
        return tf.concat(unused, axis=3)


class PNASNet(tf.Module):
    """PNASNet-5 with the hub module's calling convention.

    `__call__(images, training=False, batch_norm_momentum=0.99)` takes [N,S,S,3] RGB in [0,1]
    (scaled to [-1,1] inside, like the hub module) and returns [N, feature_dim] features after
    ReLU + global average pool, or [N, num_classes] logits when `num_classes` is set.
    """

    batch_norm_momentum = DEFAULT_BATCH_NORM_MOMENTUM

    def __init__(self, config: PNASNetConfig = LARGE, seed: int = 0, num_classes: int = 0) -> None:
        super().__init__(name="pnasnet")
        self.config = config
        self.seed = seed
        self.num_classes = num_classes
        self.image_size = config.image_size
        self.feature_dim = config.feature_dim
        self.output_key = "logits" if num_classes else "feature_vector"
        factory = WeightFactory(seed)
        stem_filters = int(32 * config.stem_multiplier)
        self.conv0 = Conv(factory, "conv0", 3, 3, stem_filters, stride=2, padding="VALID")
        self.conv0_bn = BatchNorm(factory, "conv0_bn", stem_filters)
        shape = Shape((config.image_size - 3) // 2 + 1, stem_filters)
        self.shapes: dict[str, Shape] = {"conv0": shape}
        outputs: list[Shape | None] = [None, shape]
        self.stem_cells: list[PNASNetCell] = []
        scaling = 1.0 / config.filter_scaling_rate ** config.num_stem_cells
        for n in range(config.num_stem_cells):
            cell = PNASNetCell(factory, f"cell_stem_{n}", shape, outputs[-2],
                               int(config.num_conv_filters * scaling), stride=2)
            self.stem_cells.append(cell)
            shape = cell.out_shape
            self.shapes[f"cell_stem_{n}"] = shape
            outputs.append(shape)
            scaling *= config.filter_scaling_rate
        self.cells: list[PNASNetCell] = []
        scaling = 1.0
        for n in range(config.num_cells):
            reduction = n in config.reduction_indices
            if reduction:
                scaling *= config.filter_scaling_rate
            cell = PNASNetCell(factory, f"cell_{n}", shape, outputs[-2],
                               int(config.num_conv_filters * scaling), stride=2 if reduction else 1)
            self.cells.append(cell)
            shape = cell.out_shape
            self.shapes[f"cell_{n}"] = shape
            outputs.append(shape)
        if shape.channels != config.feature_dim:
            raise ValueError(f"final cell has {shape.channels} channels, expected {config.feature_dim}")
        if num_classes:
            self.fc_weights = factory.normal("final_layer/FC/weights", (shape.channels, num_classes),
                                             math.sqrt(1.0 / shape.channels))
            self.fc_biases = factory.constant("final_layer/FC/biases",
                                              np.zeros(num_classes, np.float32))

    @property
    def head_variables(self) -> list[tf.Variable]:
        """The classification head's variables (empty for the feature-vector network)."""
        return [self.fc_weights, self.fc_biases] if self.num_classes else []

    def stage_names(self) -> list[str]:
        """Endpoint names in network order, as `endpoints()` returns them."""
        names = ["conv0", *[f"cell_stem_{n}" for n in range(len(self.stem_cells))],
                 *[f"cell_{n}" for n in range(len(self.cells))], "global_pool"]
        return [*names, "logits"] if self.num_classes else names

    def endpoints(self, images: tf.Tensor, training: bool = False,
                  batch_norm_momentum: tf.Tensor | float = DEFAULT_BATCH_NORM_MOMENTUM
                  ) -> dict[str, tf.Tensor]:
        """Every stage's output (stem conv, each stem cell, each cell, pooled features, logits)."""
        momentum = batch_norm_momentum
        ends: dict[str, tf.Tensor] = {}
        x = tf.convert_to_tensor(images, tf.float32) * 2.0 - 1.0  # [0,1] -> [-1,1] as TF-Slim expects
        x = self.conv0_bn(self.conv0(x), training, momentum)
        ends["conv0"] = x
        outputs: list[tf.Tensor | None] = [None, x]
        for n, cell in enumerate(self.stem_cells):
            x = cell(x, outputs[-2], training, momentum)
            ends[f"cell_stem_{n}"] = x
            outputs.append(x)
        for n, cell in enumerate(self.cells):
            x = cell(x, outputs[-2], training, momentum)
            ends[f"cell_{n}"] = x
            outputs.append(x)
        x = tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])
        ends["global_pool"] = x
        if self.num_classes:
            ends["logits"] = tf.matmul(x, self.fc_weights) + self.fc_biases
        return ends

    def __call__(self, images: tf.Tensor, training: bool = False,
                 batch_norm_momentum: tf.Tensor | float = DEFAULT_BATCH_NORM_MOMENTUM) -> tf.Tensor:
        ends = self.endpoints(images, training=training, batch_norm_momentum=batch_norm_momentum)
        return ends["logits"] if self.num_classes else ends["global_pool"]


def pnasnet_large(seed: int = 0, num_classes: int = 0) -> PNASNet:
    """The faithful twin: TF-Slim `pnasnet_large` (12 cells, 216 filters, 331x331, 4320 features)."""
    return PNASNet(LARGE, seed=seed, num_classes=num_classes)


def pnasnet_reduced(seed: int = 0, num_classes: int = 0) -> PNASNet:
    """The fast twin: the same cell and interface with 4 cells and fewer filters."""
    return PNASNet(REDUCED, seed=seed, num_classes=num_classes)
