"""Count a twin's parameters (from its variables) and multiply-adds (from its traced graph).

A twin is only a stand-in for the real network if it costs what the real network costs; these
counts, set beside the published figures for PNASNet-5 Large, are the evidence. Nothing here is
typed in except the published figures themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Liu et al., "Progressive Neural Architecture Search" (arXiv:1712.00559), ImageNet results in the
# large (331x331) setting: PNASNet-5, 86.1M parameters, 25.0B multiply-adds; timm's
# pnasnet5large (a port of the TF-Slim checkpoint) lists the same 86.1M / 25.0 GMACs. Both count
# the network with its classification layer and without the training-only auxiliary head.
PUBLISHED_PARAMETERS = 86.1e6
PUBLISHED_MULTIPLY_ADDS = 25.0e9
PUBLISHED_SOURCE = ("PNASNet-5 Large, 331x331: 86.1M parameters, 25.0B multiply-adds "
                    "(Liu et al. 2018, arXiv:1712.00559)")
# Tolerances. Parameters: 86.1M is rounded to 0.1M (at most 0.06% off), so a faithful count is
# within 0.1%. Multiply-adds: 25.0B is rounded to 0.1B (0.2%), and conventions differ on what counts
# (here convolutions and the dense layer; batch norm adds one per output element, 0.2% more, and
# lands on 25.0B); 1% covers both while a wrong filter count, cell count or op is off by more.
PARAMETER_TOLERANCE = 0.001
MULTIPLY_ADD_TOLERANCE = 0.01
CLASSIFIER_CLASSES = 1001

_COUNTED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")


@dataclass
class TwinStats:
    """Counts for one twin; `parameters` and `multiply_adds` include the head when there is one."""

    name: str
    description: str
    parameters: int
    head_parameters: int
    non_trainable: int
    multiply_adds: int
    head_multiply_adds: int
    multiply_adds_by_op: dict[str, int] = field(default_factory=dict)
    batch_norm_elements: int = 0
    with_head: bool = False
    faithful: bool = False

    @property
    def parameter_difference(self) -> float:
        return self.parameters / PUBLISHED_PARAMETERS - 1.0

    @property
    def multiply_add_difference(self) -> float:
        return self.multiply_adds / PUBLISHED_MULTIPLY_ADDS - 1.0

    @property
    def matches_published(self) -> bool:
        return (abs(self.parameter_difference) <= PARAMETER_TOLERANCE
                and abs(self.multiply_add_difference) <= MULTIPLY_ADD_TOLERANCE)


def count_parameters(net: Any) -> tuple[int, int]:
    """(trainable, non-trainable) element counts of the network's variables.

    Trainable = weights, BN gamma/beta and the head: what papers call parameters. The BN moving
    statistics are state, not parameters, and are reported separately.
    """
    trainable = sum(int(v.shape.num_elements()) for v in net.trainable_variables)
    total = sum(int(v.shape.num_elements()) for v in net.variables)
    return trainable, total - trainable


def _op_multiply_adds(op: Any) -> int:
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):
        n, h, w, _ = op.outputs[0].shape.as_list()
        # Conv2D filter [kh,kw,in,out]; depthwise [kh,kw,in,multiplier]: the same product.
        kh, kw, cin, cout = op.inputs[1].shape.as_list()
        return n * h * w * kh * kw * cin * cout
    if op.type == "MatMul":
        a, b = (t.shape.as_list() for t in op.inputs[:2])
        rows = a[1] if op.get_attr("transpose_a") else a[0]
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        cols = b[0] if op.get_attr("transpose_b") else b[1]
        return rows * inner * cols
    return 0


def graph_multiply_adds(graph: Any) -> dict[str, int]:
    """Multiply-adds per op type in a traced graph with static shapes (batch 1 gives per image).

    Also returns, under "FusedBatchNormV3", the number of batch-norm output elements: not counted
    as multiply-adds here, but some counters do (one each), which explains small differences.
    """
    counts = dict.fromkeys((*_COUNTED_OPS, "FusedBatchNormV3"), 0)
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            raise ValueError(f"{op.name}: nested function calls are not counted; trace the network "
                             f"as plain Python inside one tf.function")
        if op.type == "FusedBatchNormV3":
            counts[op.type] += int(op.outputs[0].shape.num_elements())
        elif op.type in counts:
            counts[op.type] += _op_multiply_adds(op)
    return counts


def count_multiply_adds(net: Any, image_size: int) -> dict[str, int]:
    """Trace `net` at batch 1 and count multiply-adds per op type (0 for unknown shapes fails)."""
    import tensorflow as tf

    fn = tf.function(lambda images: net(images, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32))
    return graph_multiply_adds(concrete.graph)


def build_for_stats(name: str, seed: int = 0) -> tuple[Any, bool]:
    """The network to count, and whether it carries the 1001-way head.

    PNASNet twins are counted with the head, as the published figures are; the head is then
    reported separately so the feature-vector twin's own size is visible too.
    """
    from export.twin.registry import get_twin

    spec = get_twin(name)
    if spec.config is not None:
        from export.twin.pnasnet import PNASNet

        return PNASNet(spec.config, seed=seed, num_classes=CLASSIFIER_CLASSES), True
    return spec.build(seed), False


def _is_faithful(config: Any) -> bool:
    from export.twin.pnasnet_config import LARGE

    return config == LARGE


def twin_stats(name: str) -> TwinStats:
    """Build twin `name` (seed 0), count its variables and its graph's multiply-adds."""
    from export.twin.registry import get_twin

    spec = get_twin(name)
    net, with_head = build_for_stats(name)
    trainable, non_trainable = count_parameters(net)
    head = sum(int(v.shape.num_elements()) for v in getattr(net, "head_variables", []))
    by_op = count_multiply_adds(net, spec.image_size)
    batch_norm = by_op.pop("FusedBatchNormV3")
    return TwinStats(name=name, description=spec.description, parameters=trainable,
                     head_parameters=head, non_trainable=non_trainable,
                     multiply_adds=sum(by_op.values()), head_multiply_adds=by_op["MatMul"],
                     multiply_adds_by_op=by_op, batch_norm_elements=batch_norm, with_head=with_head,
                     faithful=_is_faithful(spec.config))


def _relative(value: float) -> str:
    return f"{value * 100:+.2f}%"


def format_report(stats: TwinStats) -> str:
    """A table of counted vs published figures, with the relative difference and the verdict."""
    head = f" with the {CLASSIFIER_CLASSES}-way head" if stats.with_head else ""
    lines = [
        f"twin {stats.name}: {stats.description}",
        f"counted from the variables and the traced graph at batch 1{head}",
        "",
        f"{'':<16}{'counted':>18}{'published':>14}{'difference':>12}",
        f"{'parameters':<16}{stats.parameters:>18,}{PUBLISHED_PARAMETERS / 1e6:>13.1f}M"
        f"{_relative(stats.parameter_difference):>12}",
        f"{'multiply-adds':<16}{stats.multiply_adds:>18,}{PUBLISHED_MULTIPLY_ADDS / 1e9:>13.1f}B"
        f"{_relative(stats.multiply_add_difference):>12}",
        "",
    ]
    if stats.with_head:
        lines.append(f"feature extractor alone (the feature-vector twin): "
                     f"{stats.parameters - stats.head_parameters:,} parameters, "
                     f"{stats.multiply_adds - stats.head_multiply_adds:,} multiply-adds")
    by_op = ", ".join(f"{op} {count:,}" for op, count in stats.multiply_adds_by_op.items() if count)
    with_bn = stats.multiply_adds + stats.batch_norm_elements
    lines += [
        f"multiply-adds by op: {by_op}",
        f"counting batch norm too (one per output element): {with_bn:,} "
        f"({_relative(with_bn / PUBLISHED_MULTIPLY_ADDS - 1.0)})",
        f"batch-norm moving statistics (state, not parameters): {stats.non_trainable:,}",
        f"published: {PUBLISHED_SOURCE}",
    ]
    lines.append(f"verdict: {'matches' if stats.matches_published else 'differs from'} the published "
                 f"figures (tolerance: parameters {PARAMETER_TOLERANCE:.1%}, "
                 f"multiply-adds {MULTIPLY_ADD_TOLERANCE:.0%})"
                 + ("" if stats.faithful else "; only the faithful twin is meant to match"))
    return "\n".join(lines)
