"""The client's exceptions: one base class, and a subclass per thing a caller can act on.

    EmbeddingError
    ├── InvalidImageError        the input (which `index`) cannot become a model input: fix the input
    ├── ServerUnavailableError   cannot reach the server, or it is stopping: retry later
    │   └── RequestTimeoutError  the per-call deadline passed
    ├── ModelNotReadyError       the server is up but the model is unknown, loading or unloading
    ├── ModelContractError       the server's model is not what this client sends or reads
    ├── AuthenticationError      the server or a proxy refused the credentials (TLS or headers)
    ├── InferenceError           the server rejected or failed the request for another reason
    └── ClientClosedError        the client was closed; make a new one (also a RuntimeError)

Server-side errors carry `status` (the gRPC code name, e.g. "UNAVAILABLE", or the HTTP status) and
`transient`, which the retry policy reads: only conditions that go away by themselves are retried.
"""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base class of every error this client raises."""

    def __init__(self, message: str, *, status: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


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

    def at(self, index: int | None, item: str | None) -> InvalidImageError:
        """The same error, located at `index` of a batch (the reason is kept as is)."""
        located = InvalidImageError(self.reason, index, item)
        located.__cause__ = self.__cause__
        return located

    def __reduce__(self) -> tuple:  # picklable across processes, keeping index and item
        return (InvalidImageError, (self.reason, self.index, self.item))


class ServerUnavailableError(EmbeddingError, ConnectionError):
    """The server could not be reached, or it is shutting down; worth retrying later."""

    def __init__(self, message: str, *, status: str | None = None, transient: bool = True) -> None:
        super().__init__(message, status=status, transient=transient)


class RequestTimeoutError(ServerUnavailableError, TimeoutError):
    """The call did not finish within its timeout (the server may still be working on it)."""

    def __init__(self, message: str, *, status: str | None = "DEADLINE_EXCEEDED",
                 transient: bool = False) -> None:
        super().__init__(message, status=status, transient=transient)


class ModelNotReadyError(EmbeddingError):
    """The server is up but the model is unknown or not loaded (transient while it (un)loads)."""


class ModelContractError(EmbeddingError):
    """The server's model is not an image embedding model this client can drive.

    For example its input is not [H, W, 3] FP32 or UINT8, it has several inputs, or the uint8
    model takes float input. Not transient: fix the model name or the export.
    """


class ClientClosedError(EmbeddingError, RuntimeError):
    """A call on a client after `close()`: create a new client (or keep this one open)."""

    def __init__(self, what: str = "client") -> None:
        super().__init__(f"this {what} is closed; create a new one, or call it inside its "
                         f"`with` block")


class AuthenticationError(EmbeddingError, PermissionError):
    """The server (or a proxy in front of it) refused the request's credentials."""


class InferenceError(EmbeddingError):
    """The server rejected or failed a request for another reason (message from the server)."""


class VersionChangedError(InferenceError):
    """With `exact_versions`, the embedding model's version changed during every attempt of a
    request, so its rows can't be attributed to one version."""
