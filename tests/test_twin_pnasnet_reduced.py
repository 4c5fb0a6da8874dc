"""The PNASNet-5 twin's graph, checked on the reduced configuration (same code path, fast).

Shapes are compared with values worked out by hand from TF-Slim's rules (VALID stem conv, SAME
elsewhere, stride 2 at reductions, five concatenated blocks per cell), not recomputed by the code
under test.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from export.twin.pnasnet import LARGE, REDUCED, PNASNet, PNASNetConfig  # noqa: E402

# (size, channels) per stage of the reduced twin: 32 stem filters; stem cells at 108/4 -> 27 and
# 108/2 -> 54 filters; cells at 108, then reductions to 216, 432, 864; each cell emits 5 x filters.
REDUCED_STAGES = {
    "conv0": (165, 32),
    "cell_stem_0": (83, 5 * 27),
    "cell_stem_1": (42, 5 * 54),
    "cell_0": (42, 5 * 108),
    "cell_1": (21, 5 * 216),
    "cell_2": (11, 5 * 432),
    "cell_3": (6, 5 * 864),
}


@pytest.fixture(scope="module")
def net() -> PNASNet:
    return PNASNet(REDUCED, seed=0)


@pytest.fixture(scope="module")
def endpoints_fn(net: PNASNet):
    return tf.function(lambda x: net.endpoints(x), autograph=False)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.RandomState(7).rand(2, 331, 331, 3).astype(np.float32)


@pytest.fixture(scope="module")
def ends(endpoints_fn, images) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in endpoints_fn(tf.constant(images)).items()}


def test_reduction_cells_follow_tf_slim_rule() -> None:
    assert LARGE.reduction_indices == [4, 8]
    assert REDUCED.reduction_indices == [1, 2, 3]
    assert LARGE.feature_dim == REDUCED.feature_dim == 4320


def test_every_stage_has_the_expected_shape(net: PNASNet, ends: dict[str, np.ndarray]) -> None:
    assert net.stage_names() == [*REDUCED_STAGES, "global_pool"]
    for stage, (size, channels) in REDUCED_STAGES.items():
        assert ends[stage].shape == (2, size, size, channels), stage
    assert ends["global_pool"].shape == (2, 4320)


def test_reductions_halve_the_resolution_and_double_the_filters(net: PNASNet) -> None:
    for n, cell in enumerate(net.cells):
        if n in REDUCED.reduction_indices:
            assert cell.stride == 2
            assert cell.filters == 2 * (net.cells[n - 1].filters if n else REDUCED.num_conv_filters // 2)
        else:
            assert cell.stride == 1


def test_second_input_wiring(net: PNASNet) -> None:
    """Each cell takes the output before the previous one, size-matched as TF-Slim does."""
    modes = [c.prev_mode for c in (*net.stem_cells, *net.cells)]
    # stem_0: no earlier output, reuses its input; stem_1 (165 beside 83) and cell_0 (83 beside
    # 42): factorized reduction; cell_1 (a reduction) sees stem_1's 42 beside its 42 input: only
    # channels differ, ReLU + 1x1 conv + BN; cell_2 and cell_3 follow reductions (42 beside 21,
    # 21 beside 11): factorized reduction.
    assert modes == ["input", "factorized", "factorized", "project", "factorized", "factorized"]


def test_cell_ops_match_pnasnet5(net: PNASNet) -> None:
    cell = net.cells[1]  # a reduction cell, 216 filters, input 540 channels
    names = {v.name.split(":")[0]: tuple(v.shape) for v in cell.variables}
    # Two stacked separable convs per op; only the first strides; 5x5 on the second input.
    assert names["cell_1/comb_iter_0/left/separable_5x5_1/depthwise_weights"] == (5, 5, 216, 1)
    assert names["cell_1/comb_iter_0/left/separable_5x5_1/pointwise_weights"] == (1, 1, 216, 216)
    assert names["cell_1/comb_iter_0/left/separable_5x5_2/depthwise_weights"] == (5, 5, 216, 1)
    assert names["cell_1/comb_iter_1/left/separable_7x7_1/depthwise_weights"] == (7, 7, 216, 1)
    assert names["cell_1/comb_iter_3/left/separable_3x3_2/pointwise_weights"] == (1, 1, 216, 216)
    # 'none' on a strided original input becomes ReLU + strided 1x1 conv + BN.
    assert names["cell_1/comb_iter_4/right/1x1/weights"] == (1, 1, 216, 216)
    assert cell.right_ops[4].stride == 2
    # Block 3 reads block 2's output, which is already reduced: no stride there.
    assert cell.left_ops[3].stride == 1 and cell.left_ops[0].stride == 2
    assert names["cell_1/1x1/weights"] == (1, 1, 540, 216)
    assert names["cell_1/prev_1x1/weights"] == (1, 1, 270, 216)
    assert all(k.endswith(("weights", "gamma", "beta", "moving_mean", "moving_variance"))
               for k in names)


def test_first_stem_cell_reads_the_raw_stem_conv(net: PNASNet) -> None:
    """With no earlier output, TF-Slim feeds the stem conv's 32 channels to the 'previous' ops."""
    names = {v.name.split(":")[0]: tuple(v.shape) for v in net.stem_cells[0].variables}
    assert names["cell_stem_0/comb_iter_0/left/separable_5x5_1/depthwise_weights"] == (5, 5, 32, 1)
    assert names["cell_stem_0/comb_iter_0/left/separable_5x5_1/pointwise_weights"] == (1, 1, 32, 27)
    # max pool on 32 channels needs a 1x1 projection to 27 (no ReLU before it)
    assert names["cell_stem_0/comb_iter_0/right/1x1/weights"] == (1, 1, 32, 27)


def test_input_is_scaled_from_unit_range_inside(net: PNASNet, images, ends) -> None:
    """conv0 sees 2x-1, like the hub module, then inference-mode BN with epsilon 1e-3."""
    x = tf.nn.conv2d(images * 2.0 - 1.0, net.conv0.weights, strides=2, padding="VALID")
    bn = net.conv0_bn
    expected = (x - bn.moving_mean) / tf.sqrt(bn.moving_variance + 1e-3) * bn.gamma + bn.beta
    np.testing.assert_allclose(ends["conv0"], expected.numpy(), rtol=1e-4, atol=1e-4)


def test_features_are_finite_nonnegative_and_depend_on_the_image(ends) -> None:
    features = ends["global_pool"]
    assert np.all(np.isfinite(features)) and features.min() >= 0.0
    assert 0.01 < features.mean() < 10.0  # activations keep a sane scale through the cells
    assert np.abs(features[0] - features[1]).max() > 1e-3


def test_same_seed_same_weights_and_embeddings(net: PNASNet, images, ends) -> None:
    again = PNASNet(REDUCED, seed=0)
    for a, b in zip(net.variables, again.variables, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    got = tf.function(lambda x: again(x), autograph=False)(tf.constant(images)).numpy()
    np.testing.assert_array_equal(got, ends["global_pool"])


def test_different_seed_different_weights(net: PNASNet) -> None:
    other = PNASNet(REDUCED, seed=1)
    a = net.cells[0].conv_1x1.weights.numpy()
    b = other.cells[0].conv_1x1.weights.numpy()
    assert a.shape == b.shape and not np.allclose(a, b)


def test_training_uses_batch_statistics_and_updates_with_momentum(images) -> None:
    tiny = PNASNetConfig(num_cells=1, num_conv_filters=8, stem_multiplier=0.25,
                         num_reduction_layers=0, image_size=63)
    net = PNASNet(tiny, seed=3)
    x = tf.constant(images[:, :63, :63, :])
    bn = net.conv0_bn
    before = bn.moving_mean.numpy().copy()
    conv = tf.nn.conv2d(x * 2.0 - 1.0, net.conv0.weights, strides=2, padding="VALID")
    batch_mean = tf.reduce_mean(conv, axis=[0, 1, 2]).numpy()
    train = net.endpoints(x, training=True, batch_norm_momentum=0.9)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.9 * before + 0.1 * batch_mean,
                               rtol=1e-4, atol=1e-5)
    # batch statistics, not the moving ones: the output is normalised per channel
    out = train["conv0"].numpy()
    shifted = (out - bn.beta.numpy()) / bn.gamma.numpy()
    np.testing.assert_allclose(shifted.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)


def test_classification_head_gives_1001_logits(images) -> None:
    tiny = PNASNetConfig(num_cells=1, num_conv_filters=8, stem_multiplier=0.25,
                         num_reduction_layers=0, image_size=63)
    net = PNASNet(tiny, seed=0, num_classes=1001)
    logits = net(tf.constant(images[:, :63, :63, :]))
    assert logits.shape == (2, 1001)
    assert net.output_key == "logits"
    assert [v.name.split(":")[0] for v in net.head_variables] == [
        "final_layer/FC/weights", "final_layer/FC/biases"]
