"""Image embeddings from a Triton server: `client.embed(img)` or `EmbeddingClient(url).embed(img)`.

This package is the thin client: numpy, Pillow and tritonclient's gRPC API, no TensorFlow.
"""

from __future__ import annotations

import threading

import numpy as np

from client.embedding_client import DEFAULT_MODEL, DEFAULT_URL, EmbeddingClient, default_url
from client.errors import (
    EmbeddingError,
    InferenceError,
    InvalidImageError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from client.model_info import ModelInfo
from client.preprocess import ImageInput

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_URL", "EmbeddingClient", "EmbeddingError", "ImageInput",
    "InferenceError", "InvalidImageError", "ModelInfo", "ModelNotReadyError",
    "ServerUnavailableError", "embed", "embed_batch", "get_default_client",
]

_default: EmbeddingClient | None = None
_lock = threading.Lock()


def get_default_client() -> EmbeddingClient:
    """A shared client for `TRITON_GRPC_URL` (default localhost:8001), created on first use."""
    global _default
    with _lock:
        if _default is None or _default.url != default_url():
            _default = EmbeddingClient(default_url())
        return _default


def embed(image: ImageInput) -> np.ndarray:
    return get_default_client().embed(image)


def embed_batch(images: list[ImageInput]) -> np.ndarray:
    return get_default_client().embed_batch(images)
