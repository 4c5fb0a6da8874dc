"""The client's exceptions: one base class, and a subclass per thing a caller can act on."""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base class of every error this client raises."""


class InvalidImageError(EmbeddingError, ValueError):
    """An input could not be turned into a model input; `index` says which item of a batch."""

    def __init__(self, message: str, index: int | None = None, item: str | None = None) -> None:
        self.index = index
        self.item = item
        where = []
        if index is not None:
            where.append(f"item {index}")
        if item:
            where.append(item)
        prefix = f"{' '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.reason = message


class ServerUnavailableError(EmbeddingError, ConnectionError):
    """The server could not be reached, or it is shutting down; worth retrying later."""


class ModelNotReadyError(EmbeddingError):
    """The server is up but the model is unknown or not loaded."""


class InferenceError(EmbeddingError):
    """The server rejected or failed a request for another reason (message from the server)."""
