"""The faithful twin (TF-Slim pnasnet_large): stage shapes, counts vs the published figures, export.

These are the only tests that build the full network (about 86M parameters); the module builds it
once for shapes and counts, and once more through `save_twin` for the hub-format round trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from export.twin import save_twin  # noqa: E402
from export.twin.pnasnet import LARGE, PNASNet  # noqa: E402
from export.twin.stats import (  # noqa: E402
    MULTIPLY_ADD_TOLERANCE,
    PARAMETER_TOLERANCE,
    PUBLISHED_MULTIPLY_ADDS,
    PUBLISHED_PARAMETERS,
    count_parameters,
    graph_multiply_adds,
)

# Worked out by hand from TF-Slim: 96 stem filters (32 x 3); stem cells at 216/4 = 54 and
# 216/2 = 108 filters, stride 2 each (165 -> 83 -> 42); cells 0-3 at 216 filters on 42x42,
# cell 4 reduces to 21x21 with 432, cell 8 to 11x11 with 864; each cell concatenates 5 blocks.
LARGE_STAGES = {
    "conv0": (165, 96),
    "cell_stem_0": (83, 270),
    "cell_stem_1": (42, 540),
    **{f"cell_{n}": (42, 1080) for n in range(4)},
    **{f"cell_{n}": (21, 2160) for n in range(4, 8)},
    **{f"cell_{n}": (11, 4320) for n in range(8, 12)},
}


@pytest.fixture(scope="module")
def net() -> PNASNet:
    return PNASNet(LARGE, seed=0, num_classes=1001)


@pytest.fixture(scope="module")
def graph(net: PNASNet):
    """Traced at batch 1 (shapes are static; nothing is computed)."""
    fn = tf.function(lambda x: net.endpoints(x), autograph=False)
    return fn.get_concrete_function(tf.TensorSpec([1, 331, 331, 3], tf.float32))


def test_every_stage_has_the_published_architecture_shape(net: PNASNet, graph) -> None:
    outputs = graph.structured_outputs
    assert net.stage_names() == [*LARGE_STAGES, "global_pool", "logits"]
    for stage, (size, channels) in LARGE_STAGES.items():
        assert outputs[stage].shape.as_list() == [1, size, size, channels], stage
    assert outputs["global_pool"].shape.as_list() == [1, 4320]
    assert outputs["logits"].shape.as_list() == [1, 1001]


def test_reductions_at_cells_4_and_8(net: PNASNet) -> None:
    assert [n for n, c in enumerate(net.cells) if c.stride == 2] == [4, 8]
    assert [c.filters for c in net.cells] == [216] * 4 + [432] * 4 + [864] * 4
    assert [c.filters for c in net.stem_cells] == [54, 108]


def test_second_input_wiring(net: PNASNet) -> None:
    modes = [c.prev_mode for c in (*net.stem_cells, *net.cells)]
    # factorized reduction where the earlier output is larger (after each stride-2 cell), a 1x1
    # projection where only the channels differ (every cell's input has 5 x filters channels).
    assert modes == ["input", "factorized",                        # stem
                     "factorized", "project", "project", "project",   # 42x42
                     "project", "factorized", "project", "project",   # 21x21 (cell 4 reduces)
                     "project", "factorized", "project", "project"]   # 11x11 (cell 8 reduces)


def test_parameters_match_the_published_count(net: PNASNet) -> None:
    """86.1M is rounded to 0.1M, so a faithful count is within 0.06%; the test allows 0.1%."""
    trainable, moving_stats = count_parameters(net)
    assert abs(trainable / PUBLISHED_PARAMETERS - 1) <= PARAMETER_TOLERANCE, trainable
    head = sum(int(v.shape.num_elements()) for v in net.head_variables)
    assert head == 4320 * 1001 + 1001
    # two moving statistics per batch-norm channel, and gamma/beta for the same channels
    assert moving_stats == sum(int(v.shape.num_elements()) for v in net.variables
                               if "moving_" in v.name)


def test_multiply_adds_match_the_published_count(graph) -> None:
    """25.0B is rounded to 0.1B (0.2%) and counters differ on batch norm (another 0.2%): 1%."""
    counts = graph_multiply_adds(graph.graph)
    batch_norm = counts.pop("FusedBatchNormV3")
    total = sum(counts.values())
    assert abs(total / PUBLISHED_MULTIPLY_ADDS - 1) <= MULTIPLY_ADD_TOLERANCE, total
    assert counts["MatMul"] == 4320 * 1001
    assert counts["DepthwiseConv2dNative"] > 0 and batch_norm > 0


def test_faithful_twin_round_trip_through_hub_format(tmp_path: Path) -> None:
    hub = pytest.importorskip("tensorflow_hub")
    obj = hub.load(str(save_twin("pnasnet_large", tmp_path / "module", seed=0)))
    image = np.random.RandomState(3).rand(1, 331, 331, 3).astype(np.float32)
    features = obj(tf.constant(image), training=False).numpy()
    assert features.shape == (1, 4320)
    assert np.all(np.isfinite(features)) and features.min() >= 0.0
    assert 0.01 < features.mean() < 10.0
