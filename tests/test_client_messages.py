"""Errors that say what to do, against the real server; and the asyncio client's full feature set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from client import (
    AsyncEmbeddingClient,
    ClientClosedError,
    EmbeddingClient,
    ModelContractError,
    RetryPolicy,
    ServerUnavailableError,
)

NO_RETRY = RetryPolicy.none()


def test_http_client_at_the_grpc_port_says_to_switch(server) -> None:  # noqa: ANN001
    with EmbeddingClient(server.grpc_url, protocol="http", retry=NO_RETRY, timeout=10) as c:
        with pytest.raises(ServerUnavailableError) as err:
            c.info  # noqa: B018
    assert "does not answer in HTTP/1.1" in str(err.value)
    assert "protocol='grpc'" in str(err.value) and "HTTPParseError" in str(err.value)

    async def go() -> None:
        async with AsyncEmbeddingClient(server.grpc_url, protocol="http", retry=NO_RETRY,
                                        timeout=10) as a:
            with pytest.raises(ServerUnavailableError, match="protocol='grpc'"):
                await a.get_info()

    asyncio.run(go())


def test_grpc_client_at_the_http_port_says_to_switch(server) -> None:  # noqa: ANN001
    with EmbeddingClient(server.http_url, retry=NO_RETRY, timeout=10) as c:
        with pytest.raises(ServerUnavailableError) as err:
            c.info  # noqa: B018
    assert "without speaking gRPC" in str(err.value) and "protocol='http'" in str(err.value)

    async def go() -> None:
        async with AsyncEmbeddingClient(server.http_url, retry=NO_RETRY, timeout=10) as a:
            with pytest.raises(ServerUnavailableError, match="without speaking gRPC"):
                await a.get_info()

    asyncio.run(go())


def test_a_served_model_that_is_no_embedding_model_is_a_contract_error(grpc_url: str) -> None:
    # The uint8 model's first step is loaded too: uint8 pixels in, float images out.
    with EmbeddingClient(grpc_url, model="pnasnet_large_uint8_to_float", payload="float32") as c:
        with pytest.raises(ModelContractError, match="check the model name") as err:
            c.info  # noqa: B018
    assert not err.value.transient


def test_a_closed_client_says_so(grpc_url: str, sample_images: list[Path]) -> None:
    c = EmbeddingClient(grpc_url)
    c.embed(sample_images[0])
    c.close()
    with pytest.raises(ClientClosedError, match="is closed; create a new one"):
        c.embed(sample_images[0])

    async def go() -> None:
        a = AsyncEmbeddingClient(grpc_url)
        await a.embed(sample_images[0])
        await a.close()
        with pytest.raises(ClientClosedError):
            await a.embed(sample_images[0])

    asyncio.run(go())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_asyncio_client_has_the_blocking_clients_features(server, protocol: str,  # noqa: ANN001
                                                              sample_images: list[Path]) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url

    async def go() -> tuple:
        async with AsyncEmbeddingClient(url, protocol=protocol, payload="uint8") as a:
            health = await a.health()
            pixels = np.stack([await a.pixels(p) for p in sample_images[:2]])
            via_uint8 = await a.embed_arrays(pixels)
            via_float = await a.embed_arrays(pixels.astype(np.float32) / np.float32(255))
            stats = await a.statistics("pnasnet_large")
            return health, via_uint8, via_float, stats

    health, via_uint8, via_float, stats = asyncio.run(go())
    assert health["live"] and health["models"]["pnasnet_large_uint8"]
    np.testing.assert_allclose(via_uint8, via_float, rtol=1e-5, atol=1e-5)
    assert stats.inference_count >= 4
    with EmbeddingClient(url, protocol=protocol, payload="uint8") as c:
        np.testing.assert_allclose(c.embed_batch(sample_images[:2]), via_uint8, rtol=1e-5,
                                   atol=1e-5)
