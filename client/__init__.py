"""Image embeddings from a Triton server: `client.embed(img)` or `EmbeddingClient(url).embed(img)`.

This package is the thin client: numpy, Pillow, simplejpeg and tritonclient's gRPC API, no
TensorFlow. `protocol="http"` needs tritonclient's HTTP extra, imported only when used;
`AsyncEmbeddingClient` (asyncio, `tritonclient.grpc.aio`) is imported on first access.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from client.embedding_client import (
    COMPACT_SUFFIX,
    DEFAULT_MODEL,
    DEFAULT_URL,
    EmbeddingClient,
    compact_model_name,
    default_url,
)
from client.errors import (
    AuthenticationError,
    EmbeddingError,
    InferenceError,
    InvalidImageError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from client.model_info import ModelInfo
from client.pipeline import Embeddings, EmbedResult, ItemFailure
from client.preprocess import ImageInput
from client.retry import RetryPolicy

__all__ = [
    "COMPACT_SUFFIX", "DEFAULT_MODEL", "DEFAULT_URL", "AsyncEmbeddingClient", "AuthenticationError",
    "EmbedResult", "EmbeddingClient", "Embeddings", "EmbeddingError", "ImageInput", "InferenceError",
    "InvalidImageError", "ItemFailure", "ModelInfo", "ModelNotReadyError", "RequestTimeoutError",
    "RetryPolicy", "ServerUnavailableError", "compact_model_name", "embed", "embed_batch",
    "embed_many", "get_default_client",
]

_default: EmbeddingClient | None = None
_lock = threading.Lock()


def _default_settings() -> tuple[str, str, str]:
    return (default_url(), os.environ.get("TRITON_MODEL", DEFAULT_MODEL),
            os.environ.get("TRITON_TRANSPORT", "auto"))


def get_default_client() -> EmbeddingClient:
    """A shared client for `TRITON_GRPC_URL` (default localhost:8001), created on first use.

    `TRITON_MODEL` picks the model and `TRITON_TRANSPORT` the transport (default "auto": uint8
    pixels when the server has the model's uint8 ensemble, else float32).
    """
    global _default
    with _lock:
        url, model, transport = _default_settings()
        current = _default
        if current is None or (current.url, current.model, current.transport) != \
                (url, model, transport):
            # The previous client is not closed: another thread may still be using it.
            _default = EmbeddingClient(url, model, transport=transport)
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
