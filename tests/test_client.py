"""The client against the real server: input kinds, batching, order, typed errors, thinness."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import client
from client import (
    EmbeddingClient,
    InvalidImageError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from serve.server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emb(grpc_url: str):  # noqa: ANN201
    with EmbeddingClient(grpc_url) as c:
        yield c


def test_contract_comes_from_the_server(emb: EmbeddingClient) -> None:
    info = emb.info
    assert (info.input_name, info.output_name) == ("images", "embedding")
    assert (info.height, info.width, info.output_dim) == (331, 331, 4320)
    assert info.max_batch_size == 8  # configs/cpu.pbtxt


def test_every_input_kind_gives_the_same_embedding(emb: EmbeddingClient,
                                                   sample_images: list[Path]) -> None:
    path = sample_images[0]
    data = path.read_bytes()
    pil = Image.open(path)
    pixels = np.asarray(pil.convert("RGB"))
    kinds = {"str": str(path), "Path": path, "bytes": data, "bytearray": bytearray(data),
             "file": io.BytesIO(data), "PIL": pil, "uint8": pixels,
             "float": pixels.astype(np.float32) / 255.0}
    reference = emb.embed(path)
    assert reference.shape == (4320,) and reference.dtype == np.float32
    for name, item in kinds.items():
        np.testing.assert_allclose(emb.embed(item), reference, rtol=1e-4, atol=1e-4, err_msg=name)


def test_batch_is_split_by_max_batch_size_and_kept_in_order(emb: EmbeddingClient,
                                                            sample_images: list[Path]) -> None:
    items = [sample_images[i % len(sample_images)] for i in range(19)]  # 3 requests of <= 8
    batch = emb.embed_batch(items)
    assert batch.shape == (19, 4320)
    singles = {p: emb.embed(p) for p in sample_images}
    for row, path in zip(batch, items, strict=True):
        np.testing.assert_allclose(row, singles[path], rtol=1e-4, atol=1e-4)
    assert emb.embed_batch([]).shape == (0, 4320)


def test_corrupt_item_is_named_and_the_server_stays_ready(emb: EmbeddingClient,
                                                          sample_images: list[Path]) -> None:
    good = sample_images[0].read_bytes()
    with pytest.raises(InvalidImageError) as err:
        emb.embed_batch([good, good[: len(good) // 3], good])
    assert err.value.index == 1 and "item 1" in str(err.value)
    with pytest.raises(InvalidImageError, match="not an image"):
        emb.embed(b"definitely not an image")
    with pytest.raises(InvalidImageError, match="HxWx3"):
        emb.embed(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidImageError, match=r"within \[0, 1\]"):
        emb.embed(np.full((4, 4, 3), 2.0, np.float32))
    with pytest.raises(InvalidImageError, match="empty"):
        emb.embed(b"")
    assert emb.is_ready()
    assert emb.embed(good).shape == (4320,)


def test_normalize_gives_unit_vectors(grpc_url: str, sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, normalize=True) as c:
        norms = np.linalg.norm(c.embed_batch(sample_images[:3]), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_unknown_model_is_a_typed_error(grpc_url: str, sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, model="no_such_model") as c:
        with pytest.raises(ModelNotReadyError, match="no_such_model"):
            c.embed(sample_images[0])
        assert not c.is_ready()


def test_server_down_is_a_typed_error(sample_images: list[Path]) -> None:
    with EmbeddingClient(f"127.0.0.1:{free_port()}", timeout=5) as c:
        assert not c.is_ready()
        with pytest.raises(ServerUnavailableError, match="unavailable"):
            c.embed(sample_images[0])
        with pytest.raises(ServerUnavailableError, match="not ready after"):
            c.wait_until_ready(timeout=0.5)


def test_module_level_embed_uses_the_environment_url(grpc_url: str, sample_images: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_GRPC_URL", grpc_url)
    vec = client.embed(sample_images[0])
    assert vec.shape == (4320,)
    assert client.get_default_client().url == grpc_url


def test_import_client_loads_no_tensorflow() -> None:
    code = "import sys, client; print(sorted(m for m in sys.modules if m.startswith('tensorflow')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_round_robin_channel_over_a_dns_target(grpc_url: str, sample_images: list[Path]) -> None:
    """What a client of the headless Service uses: a dns:/// target and gRPC's round_robin policy."""
    options = [("grpc.lb_policy_name", "round_robin")]
    with EmbeddingClient(f"dns:///{grpc_url}", grpc_options=options) as c:
        assert c.is_ready()
        with EmbeddingClient(grpc_url) as direct:
            np.testing.assert_allclose(c.embed(sample_images[0]), direct.embed(sample_images[0]),
                                       rtol=1e-5, atol=1e-5)
