"""The project's client, as each Locust user needs it: protocol, transport and retries by option.

Users call the same methods applications call (`embed_batch`, `embed_arrays`), so what Locust
measures is what an application gets. One difference on purpose: retries are off unless asked
for, so a failing server shows as failures, not as slow successes.
"""

from __future__ import annotations

from client import EmbeddingClient, RetryPolicy

#: The load test's transport names -> the client's.
TRANSPORT_NAMES = {"float": "float32", "uint8": "uint8"}


def supported_protocols() -> tuple[str, ...]:
    return ("grpc", "http")


def supported_transports() -> tuple[str, ...]:
    return tuple(TRANSPORT_NAMES)


def strip_scheme(url: str | None) -> str | None:
    """Locust users often write `http://host:port`; the client wants `host:port` for plain HTTP."""
    if not url:
        return None
    if url.startswith("http://"):
        url = url[len("http://"):]
    return url.rstrip("/")


def make_client(url: str | None, model: str, *, protocol: str = "grpc", transport: str = "float",
                timeout: float = 120.0, attempts: int = 1) -> EmbeddingClient:
    """An `EmbeddingClient` for one user; `attempts` > 1 turns on the client's retry policy."""
    retry = RetryPolicy.none() if attempts <= 1 else RetryPolicy(attempts=attempts)
    return EmbeddingClient(strip_scheme(url), model, protocol=protocol,  # type: ignore[arg-type]
                           transport=TRANSPORT_NAMES.get(transport, transport), timeout=timeout,
                           retry=retry)
