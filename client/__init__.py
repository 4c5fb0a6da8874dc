"""Image embeddings from a Triton server: `client.embed(img)` or `EmbeddingClient(url).embed(img)`.

This package is the thin client: numpy, Pillow, simplejpeg and tritonclient's gRPC API, no
TensorFlow. `protocol="http"` needs tritonclient's HTTP extra, imported only when used;
`AsyncEmbeddingClient` (asyncio, `tritonclient.grpc.aio`) is imported on first access.
Names and defaults shared by the library, the CLI and the environment: `client.settings`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from client.embedding_client import (
    COMPACT_SUFFIX,
    DEFAULT_URL,
    EmbeddingClient,
    compact_model_name,
)
from client.errors import (
    AuthenticationError,
    ClientClosedError,
    EmbeddingError,
    InferenceError,
    InvalidImageError,
    ModelContractError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
    VersionChangedError,
)
from client.model_info import ModelInfo
from client.pipeline import Embeddings, EmbedResult, ItemFailure
from client.preprocess import ImageInput
from client.retry import RetryPolicy
from client.settings import (
    DEFAULT_MODEL,
    UINT8_SUFFIX,
    env_model,
    env_payload,
    env_protocol,
    env_url,
    uint8_model_name,
)

__all__ = [
    "COMPACT_SUFFIX", "DEFAULT_MODEL", "DEFAULT_URL", "UINT8_SUFFIX", "AsyncEmbeddingClient",
    "AuthenticationError", "ClientClosedError", "EmbedResult", "EmbeddingClient", "Embeddings",
    "EmbeddingError", "ImageInput", "InferenceError", "InvalidImageError", "ItemFailure",
    "ModelContractError", "ModelInfo", "ModelNotReadyError", "RequestTimeoutError", "RetryPolicy",
    "ServerUnavailableError", "VersionChangedError", "compact_model_name", "embed", "embed_batch",
    "embed_many", "get_default_client", "uint8_model_name",
]

_default: EmbeddingClient | None = None
_lock = threading.Lock()


def _default_settings() -> tuple[str, str, str, str]:
    protocol = env_protocol()
    return (env_url(protocol), env_model(), protocol, env_payload())


def get_default_client() -> EmbeddingClient:
    """A shared client configured by the environment, created on first use.

    `TRITON_GRPC_URL` (or `TRITON_HTTP_URL` with `TRITON_PROTOCOL=http`), `TRITON_MODEL` and
    `TRITON_PAYLOAD` (default "auto": uint8 pixels when the server has the model's uint8 model,
    else float32); see `client.settings`. A wrong value raises ValueError naming the variable.
    """
    global _default
    with _lock:
        url, model, protocol, payload = _default_settings()
        current = _default
        if current is None or (current.url, current.model, current.protocol, current.payload) \
                != (url, model, protocol, payload):
            # The previous client is not closed: another thread may still be using it.
            _default = EmbeddingClient(url, model, protocol=protocol, payload=payload)
        return _default


def embed(image: ImageInput) -> np.ndarray:
    """One image -> its embedding, from the shared default client."""
    return get_default_client().embed(image)


def embed_batch(images: list[ImageInput]) -> np.ndarray:
    """Images -> [n, D] in order, from the shared default client (raises on a bad item)."""
    return get_default_client().embed_batch(images)


def embed_many(images: list[ImageInput], progress: bool = False) -> EmbedResult:
    """Many images, pipelined, failures reported per item, from the shared default client."""
    return get_default_client().embed_many(images, progress=progress)


def __getattr__(name: str) -> Any:
    if name == "AsyncEmbeddingClient":  # imported lazily: grpc.aio is only needed by asyncio users
        from client.aio import AsyncEmbeddingClient

        return AsyncEmbeddingClient
    raise AttributeError(f"module 'client' has no attribute {name!r}")
