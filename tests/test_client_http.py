"""The HTTP variant of the client: same API and results as gRPC, typed errors, optional dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import (
    EmbeddingClient,
    InvalidImageError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from client.retry import RetryPolicy
from serve.server import LocalTritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def http_client(server: LocalTritonServer):  # noqa: ANN201
    with EmbeddingClient(server.http_url, protocol="http") as c:
        yield c


def test_http_gives_the_grpc_embeddings(http_client: EmbeddingClient, grpc_url: str,
                                        sample_images: list[Path]) -> None:
    assert http_client.info.max_batch_size == 8 and http_client.info.output_dim == 4320
    with EmbeddingClient(grpc_url) as grpc_client:
        expected = grpc_client.embed_batch(sample_images)
    got = http_client.embed_batch(sample_images)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(http_client.embed(sample_images[1]), expected[1], rtol=1e-4,
                               atol=1e-4)


def test_http_embed_many_and_arrays(http_client: EmbeddingClient, sample_images: list[Path]) -> None:
    items = [*sample_images, b"not an image", *sample_images]
    result = http_client.embed_many(items)
    assert [f.index for f in result.failures] == [len(sample_images)]
    assert isinstance(result.failures[0].error, InvalidImageError)
    n = len(sample_images)
    np.testing.assert_allclose(result.embeddings[:n], result.embeddings[n + 1:], rtol=1e-4,
                               atol=1e-4)
    pixels = np.stack([http_client.preprocess(p) for p in sample_images[:2]])
    np.testing.assert_allclose(http_client.embed_arrays(pixels), result.embeddings[:2], rtol=1e-4,
                               atol=1e-4)


def test_http_errors_are_typed(server: LocalTritonServer, http_client: EmbeddingClient,
                               sample_images: list[Path]) -> None:
    with pytest.raises(InvalidImageError) as err:
        http_client.embed_batch([sample_images[0], b""])
    assert err.value.index == 1
    with EmbeddingClient(server.http_url, "no_such_model", protocol="http") as c:
        with pytest.raises(ModelNotReadyError, match="no_such_model"):
            c.embed(sample_images[0])
    with EmbeddingClient(f"127.0.0.1:{free_port()}", protocol="http", timeout=5,
                         retry=RetryPolicy.none()) as c:
        assert not c.is_ready()
        with pytest.raises(ServerUnavailableError):
            c.embed(sample_images[0])
    assert http_client.is_ready()


def test_http_url_may_carry_a_scheme(server: LocalTritonServer) -> None:
    with EmbeddingClient(f"http://{server.http_url}/", protocol="http") as c:
        assert c.url == server.http_url and c.is_ready()


def test_import_client_works_without_the_http_extra() -> None:
    code = ("import sys\n"
            "sys.modules['tritonclient.http'] = None\n"  # as if tritonclient[http] were absent
            "import client\n"
            "c = client.EmbeddingClient('127.0.0.1:1')\n"
            "try:\n"
            "    client.EmbeddingClient('127.0.0.1:1', protocol='http')\n"
            "except ImportError as exc:\n"
            "    print('ImportError', 'tritonclient[http]' in str(exc))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "ImportError True"
