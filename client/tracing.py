"""W3C trace context for inference requests, so an application's trace continues into Triton.

Triton's OpenTelemetry tracing (`--trace-config mode=opentelemetry`) reads the W3C `traceparent`
header of a request (gRPC metadata or HTTP header) and makes its spans children of that context.
Pass `traceparent=` to any embed call; every request of the call carries it.

    from client.tracing import new_traceparent
    client.embed(img, traceparent=new_traceparent())

With OpenTelemetry in the application, pass the current span's context instead, e.g.
`opentelemetry.propagate.inject(carrier := {}); client.embed(img, traceparent=carrier["traceparent"])`.
"""

from __future__ import annotations

import re
import secrets

#: The header (gRPC metadata key, lower case as gRPC requires) Triton reads the context from.
TRACEPARENT_HEADER = "traceparent"

# version 00: 2 hex version, 32 hex trace id, 16 hex parent (span) id, 2 hex flags (W3C, lower case).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def new_traceparent(sampled: bool = True) -> str:
    """A fresh root context: random trace and span ids; `sampled` sets the trace flag."""
    trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    if int(trace_id, 16) == 0 or int(span_id, 16) == 0:  # all-zero ids are invalid (2^-64 odds)
        return new_traceparent(sampled)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def check_traceparent(value: str | None) -> str | None:
    """`value` if it is a valid W3C traceparent (or None); ValueError naming it otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"traceparent must be a string like '00-<32 hex>-<16 hex>-<2 hex>', "
                         f"got {type(value).__name__} {value!r}")
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        raise ValueError(f"traceparent {value!r} is not W3C trace context: expected "
                         f"'00-<32 lower-case hex trace id>-<16 hex span id>-<2 hex flags>'")
    trace_id, span_id, _ = match.groups()
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        raise ValueError(f"traceparent {value!r} has an all-zero trace or span id, which W3C "
                         f"trace context forbids")
    return value


def trace_headers(traceparent: str | None) -> dict[str, str] | None:
    """The per-request headers for `traceparent` (validated), or None without one."""
    checked = check_traceparent(traceparent)
    return {TRACEPARENT_HEADER: checked} if checked else None
