"""The reduced PNASNet twin saved in hub format behaves like the hub module from the user's side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
hub = pytest.importorskip("tensorflow_hub")
tf_keras = pytest.importorskip("tf_keras")

from export.twin import get_twin, save_twin  # noqa: E402
from export.twin.hub_format import save_hub_module  # noqa: E402
from export.twin.pnasnet import PNASNet, PNASNetConfig  # noqa: E402

SEED = 5
# A one-cell PNASNet with the same code path, for checks of the format rather than of the network.
MICRO = PNASNetConfig(num_cells=1, num_conv_filters=8, stem_multiplier=0.25, num_reduction_layers=0,
                      image_size=331)


@pytest.fixture(scope="module")
def module_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_twin("pnasnet_reduced", tmp_path_factory.mktemp("twin") / "module", seed=SEED)


@pytest.fixture(scope="module")
def loaded(module_path: Path):
    return hub.load(str(module_path))


@pytest.fixture(scope="module")
def micro_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hub_module(PNASNet(MICRO, seed=SEED), tmp_path_factory.mktemp("micro") / "m", 331)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.RandomState(11).rand(2, 331, 331, 3).astype(np.float32)


def _variables_by_name(variables) -> dict[str, tf.Variable]:
    return {v.name.split(":")[0]: v for v in variables}


def test_hub_load_gives_the_network_output(loaded, images: np.ndarray) -> None:
    obj = loaded
    features = obj(tf.constant(images), training=False).numpy()
    assert features.shape == (2, get_twin("pnasnet_reduced").feature_dim) == (2, 4320)
    net = PNASNet(get_twin("pnasnet_reduced").config, seed=SEED)
    direct = tf.function(lambda x: net(x), autograph=False)
    np.testing.assert_allclose(features, direct(tf.constant(images)).numpy(), rtol=1e-5, atol=1e-6)
    # the default call is inference
    np.testing.assert_array_equal(obj(tf.constant(images)).numpy(), features)
    assert len(obj.variables) > len(obj.trainable_variables) > 0
    assert list(obj.regularization_losses) == []


def test_serving_signature(loaded, images: np.ndarray) -> None:
    sig = loaded.signatures["serving_default"]
    (name,) = sig.structured_input_signature[1]
    assert sig.structured_input_signature[1][name].shape.as_list() == [None, 331, 331, 3]
    out = sig(**{name: tf.constant(images)})
    assert list(out) == ["feature_vector"] and out["feature_vector"].shape == (2, 4320)


def test_model_card_usage_example(module_path: Path, images: np.ndarray) -> None:
    """tf_keras.Sequential([hub.KerasLayer(handle, trainable=False), Dense(softmax)]).build(...)"""
    num_classes = 5
    model = tf_keras.Sequential([
        hub.KerasLayer(str(module_path), trainable=False),
        tf_keras.layers.Dense(num_classes, activation="softmax"),
    ])
    model.build([None, 331, 331, 3])
    probs = model.predict(images, verbose=0)
    assert probs.shape == (2, num_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.layers[0].trainable_weights == []


def test_fine_tuning_passes_batch_norm_momentum(micro_path: Path, images: np.ndarray) -> None:
    """trainable=True runs the training graph; `arguments` reaches every batch norm's update."""
    layer = hub.KerasLayer(str(micro_path), trainable=True,
                           arguments=dict(batch_norm_momentum=0.997))
    model = tf_keras.Sequential([layer, tf_keras.layers.Dense(3, activation="softmax")])
    model.build([None, 331, 331, 3])
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    variables = _variables_by_name(layer.variables)
    weights = variables["conv0/weights"].numpy()
    before = variables["conv0_bn/moving_mean"].numpy().copy()
    loss = model.train_on_batch(images, np.array([0, 2]))
    assert np.isfinite(loss)
    conv = tf.nn.conv2d(images * 2.0 - 1.0, weights, strides=2, padding="VALID")
    batch_mean = tf.reduce_mean(conv, axis=[0, 1, 2]).numpy()
    np.testing.assert_allclose(variables["conv0_bn/moving_mean"].numpy(),
                               0.997 * before + 0.003 * batch_mean, rtol=1e-4, atol=1e-5)


def test_same_seed_gives_byte_identical_weights(module_path: Path, tmp_path: Path) -> None:
    again = save_twin("pnasnet_reduced", tmp_path / "again", seed=SEED)
    files = sorted(p.relative_to(module_path) for p in (module_path / "variables").iterdir())
    assert files == sorted(p.relative_to(again) for p in (again / "variables").iterdir())
    for rel in files:
        assert (module_path / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_classification_variant_interface(tmp_path: Path) -> None:
    """The 1001-way head gives logits under the key 'logits' (a small config keeps this fast)."""
    path = save_hub_module(PNASNet(MICRO, seed=0, num_classes=1001), tmp_path / "cls", 331)
    obj = hub.load(str(path))
    x = tf.zeros([3, 331, 331, 3])
    assert obj(x).shape == (3, 1001)
    out = obj.signatures["serving_default"](inputs=x)
    assert list(out) == ["logits"] and out["logits"].shape == (3, 1001)


def test_tiny_twin_still_saves(tmp_path: Path) -> None:
    obj = hub.load(str(save_twin("tiny", tmp_path / "tiny", seed=0)))
    assert obj(tf.zeros([1, 331, 331, 3]), training=False).shape == (1, 4320)
    assert obj(tf.zeros([2, 331, 331, 3]), training=True, batch_norm_momentum=0.5).shape == (2, 4320)
