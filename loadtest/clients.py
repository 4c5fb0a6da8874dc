"""The project's client, as each Locust user needs it: protocol and transport chosen by options.

Users call the same methods applications call (`embed_batch`, `embed_arrays`), so what Locust
measures is what an application gets.
"""

from __future__ import annotations

import inspect
from typing import Any

from client import EmbeddingClient


def supported_protocols() -> tuple[str, ...]:
    """Protocols `EmbeddingClient` offers (gRPC always; HTTP once the client has it)."""
    params = inspect.signature(EmbeddingClient.__init__).parameters
    return ("grpc", "http") if "protocol" in params else ("grpc",)


def supported_transports() -> tuple[str, ...]:
    """Transports `EmbeddingClient` offers: float32 always; compact uint8 once the client has it."""
    params = inspect.signature(EmbeddingClient.__init__).parameters
    return ("float", "uint8") if "transport" in params else ("float",)


def strip_scheme(url: str | None) -> str | None:
    """tritonclient takes `host:port`; Locust users often write `http://host:port`."""
    if not url:
        return None
    return url.split("://", 1)[-1].rstrip("/")


def make_client(url: str | None, model: str, *, protocol: str = "grpc", transport: str = "float",
                timeout: float = 120.0) -> EmbeddingClient:
    """An `EmbeddingClient` for one user; a clear error when the client lacks a protocol/transport."""
    if protocol not in supported_protocols():
        raise ValueError(f"EmbeddingClient has no {protocol!r} protocol in this version "
                         f"(available: {', '.join(supported_protocols())})")
    if transport not in supported_transports():
        raise ValueError(f"EmbeddingClient has no {transport!r} transport in this version "
                         f"(available: {', '.join(supported_transports())})")
    kwargs: dict[str, Any] = {"timeout": timeout}
    if "protocol" in inspect.signature(EmbeddingClient.__init__).parameters:
        kwargs["protocol"] = protocol
    if transport != "float":
        kwargs["transport"] = transport
    return EmbeddingClient(strip_scheme(url), model, **kwargs)
