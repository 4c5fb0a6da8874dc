"""One home for the client's names and defaults: the library, the CLI and the environment agree.

| idea | library keyword | CLI option | environment | default |
|---|---|---|---|---|
| address | `url` | `--url` | `TRITON_GRPC_URL` / `TRITON_HTTP_URL` | localhost:8001 / :8000 |
| protocol | `protocol` | `--protocol` | `TRITON_PROTOCOL` | grpc |
| model | `model` | `--model` | `TRITON_MODEL` | pnasnet_large |
| what requests carry | `payload` | `--payload` | `TRITON_PAYLOAD` | auto |

The payload is "float32" (the model's own input), "uint8" (8-bit pixels to the model's uint8 model,
a server-side ensemble export writes as `<model>_uint8`: a quarter of the bytes, the same
embeddings) or "auto" (uint8 when the server has the uint8 model, else float32). Its old names
still work and warn: the keyword and option `transport`, the variable `TRITON_TRANSPORT`, and the
values "float", "fp32" and "compact".
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

Protocol = Literal["grpc", "http"]
Payload = Literal["float32", "uint8", "auto"]

DEFAULT_GRPC_URL = "localhost:8001"
DEFAULT_HTTP_URL = "localhost:8000"
DEFAULT_MODEL = "pnasnet_large"
DEFAULT_PROTOCOL: Protocol = "grpc"
DEFAULT_PAYLOAD: Payload = "auto"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_IN_FLIGHT = 4

PROTOCOLS: tuple[str, ...] = ("grpc", "http")
PAYLOADS: tuple[str, ...] = ("float32", "uint8", "auto")
_OLD_PAYLOAD_NAMES = {"float": "float32", "fp32": "float32", "compact": "uint8"}

#: The uint8 model of `<model>` is `<model>_uint8` (export/ensemble.py writes it).
UINT8_SUFFIX = "_uint8"

URL_ENV = {"grpc": "TRITON_GRPC_URL", "http": "TRITON_HTTP_URL"}
PROTOCOL_ENV = "TRITON_PROTOCOL"
MODEL_ENV = "TRITON_MODEL"
PAYLOAD_ENV = "TRITON_PAYLOAD"
OLD_PAYLOAD_ENV = "TRITON_TRANSPORT"


def uint8_model_name(model: str) -> str:
    """Name of the uint8 model (the ensemble taking 8-bit pixels) that export writes beside `model`."""
    return f"{model}{UINT8_SUFFIX}"


def check_payload(value: str, source: str = "payload") -> str:
    """The canonical payload name; ValueError naming `source` (keyword, option or variable)."""
    lowered = str(value).strip().lower()
    if lowered in _OLD_PAYLOAD_NAMES:
        new = _OLD_PAYLOAD_NAMES[lowered]
        warnings.warn(f"{source}={value!r} is an old name; use {new!r}", DeprecationWarning,
                      stacklevel=3)
        return new
    if lowered not in PAYLOADS:
        raise ValueError(f"{source} must be one of {', '.join(PAYLOADS)}; got {value!r}")
    return lowered


def check_protocol(value: str, source: str = "protocol") -> Protocol:
    lowered = str(value).strip().lower()
    if lowered not in PROTOCOLS:
        raise ValueError(f"{source} must be one of {', '.join(PROTOCOLS)}; got {value!r}")
    return lowered  # type: ignore[return-value]


def env_protocol() -> Protocol:
    value = os.environ.get(PROTOCOL_ENV)
    return check_protocol(value, PROTOCOL_ENV) if value else DEFAULT_PROTOCOL


def env_url(protocol: str = DEFAULT_PROTOCOL) -> str:
    """`TRITON_GRPC_URL` / `TRITON_HTTP_URL`, else localhost on Triton's default port."""
    if protocol == "http":
        return os.environ.get(URL_ENV["http"]) or DEFAULT_HTTP_URL
    return os.environ.get(URL_ENV["grpc"]) or DEFAULT_GRPC_URL


def env_model() -> str:
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def env_payload() -> str:
    """`TRITON_PAYLOAD` (or the old `TRITON_TRANSPORT`, with a warning), else the default."""
    value = os.environ.get(PAYLOAD_ENV)
    if value:
        return check_payload(value, PAYLOAD_ENV)
    old = os.environ.get(OLD_PAYLOAD_ENV)
    if old:
        warnings.warn(f"{OLD_PAYLOAD_ENV} is renamed {PAYLOAD_ENV}", DeprecationWarning,
                      stacklevel=2)
        return check_payload(old, OLD_PAYLOAD_ENV)
    return DEFAULT_PAYLOAD
