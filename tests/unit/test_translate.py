"""The error translation table: one case per rule, and what each error tells the caller to do."""

from __future__ import annotations

import asyncio

import pytest
from tritonclient.utils import InferenceServerException

from client.errors import (
    AuthenticationError,
    ClientClosedError,
    EmbeddingError,
    InferenceError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from client.translate import EXCEPTION_RULES, FALLBACK, STATUS_RULES, classify, grpc_code, translate

URL, MODEL = "triton:8001", "pnasnet_large"


def server(message: str, status: str) -> InferenceServerException:
    return InferenceServerException(message, status=status)


# (exception, error type, transient, words the message must contain)
STATUS_CASES = [
    (server("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), RequestTimeoutError, False,
     ["timed out"]),
    (server("request timeout", "408"), RequestTimeoutError, False, ["timed out"]),
    (server("missing token", "StatusCode.UNAUTHENTICATED"), AuthenticationError, False,
     ["refused", "headers="]),
    (server("forbidden", "403"), AuthenticationError, False, ["credentials"]),
    (server("This API is restricted, expecting header 'admin-key'", "StatusCode.UNAVAILABLE"),
     AuthenticationError, False, ["refused"]),
    (server("Request for unknown model: 'pnasnet_large' has no available versions",
            "StatusCode.NOT_FOUND"), ModelNotReadyError, True, ["not ready"]),
    (server("Request for unknown model: 'pnasnet_large' is not found", "StatusCode.NOT_FOUND"),
     ModelNotReadyError, False, ["not known", "check the model name"]),
    (server("Request for unknown model: 'x' is not found", "404"), ModelNotReadyError, False,
     ["not known"]),
    (server("Sent message larger than max (1000 vs. 10)", "StatusCode.RESOURCE_EXHAUSTED"),
     InferenceError, False, ["too large", "batch_size="]),
    (server("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:8000: "
            "Socket closed", "StatusCode.UNAVAILABLE"), ServerUnavailableError, True,
     ["without speaking gRPC", "HTTP port", "protocol='http'"]),
    (server("failed to connect to all addresses; Connection refused", "StatusCode.UNAVAILABLE"),
     ServerUnavailableError, True, ["unavailable (UNAVAILABLE)"]),
    (server("Service Unavailable", "503"), ServerUnavailableError, True, ["unavailable (503)"]),
    (server("too many requests", "429"), ServerUnavailableError, True, ["unavailable"]),
    (server("cancelled", "StatusCode.CANCELLED"), ServerUnavailableError, False, ["cancelled"]),
    (server("unexpected shape for input 'images'", "StatusCode.INVALID_ARGUMENT"), InferenceError,
     False, ["failed the request (INVALID_ARGUMENT)", "unexpected shape"]),
]


@pytest.mark.parametrize(("exc", "kind", "transient", "words"), STATUS_CASES,
                         ids=[f"{c[0].status()}:{c[0].message()[:30]}" for c in STATUS_CASES])
def test_each_server_answer_becomes_its_typed_error(exc: InferenceServerException,
                                                    kind: type, transient: bool,
                                                    words: list[str]) -> None:
    error = translate(exc, MODEL, URL)
    assert type(error) is kind and error.transient is transient
    for word in words:
        assert word in str(error)
    assert URL in str(error)


def test_every_status_rule_has_a_case() -> None:
    used = {next((r for r in STATUS_RULES if r.matches(grpc_code(str(e.status())), e.message())),
                 FALLBACK) for e, *_ in STATUS_CASES}
    assert used == {*STATUS_RULES, FALLBACK}


class HTTPParseError(Exception):  # geventhttpclient's, by name (the rule matches class names)
    pass


class ServerDisconnectedError(Exception):  # aiohttp's
    pass


EXCEPTION_CASES = [
    (HTTPParseError("Expected HTTP/, RTSP/ or ICE/", 8), ServerUnavailableError, False,
     ["does not answer in HTTP/1.1", "gRPC port", "protocol='grpc'"]),
    (Exception('400, message="Bad status line: Expected HTTP/, RTSP/ or ICE/"'),
     ServerUnavailableError, False, ["protocol='grpc'"]),
    (asyncio.TimeoutError(), RequestTimeoutError, False, ["timed out"]),
    (TimeoutError("timed out"), RequestTimeoutError, False, ["timed out"]),
    (ConnectionRefusedError(111, "Connection refused"), ServerUnavailableError, True,
     ["unreachable"]),
    (ServerDisconnectedError("Server disconnected"), ServerUnavailableError, True,
     ["unreachable"]),
]


@pytest.mark.parametrize(("exc", "kind", "transient", "words"), EXCEPTION_CASES,
                         ids=[type(c[0]).__name__ for c in EXCEPTION_CASES])
def test_each_network_failure_becomes_its_typed_error(exc: BaseException, kind: type,
                                                      transient: bool, words: list[str]) -> None:
    error = translate(exc, MODEL, URL)
    assert type(error) is kind and error.transient is transient
    for word in words:
        assert word in str(error)


def test_every_exception_rule_has_a_case() -> None:
    used = {next(r for r in EXCEPTION_RULES if r.matches(e)) for e, *_ in EXCEPTION_CASES}
    assert used == set(EXCEPTION_RULES)


def test_anything_else_is_an_inference_error_and_typed_errors_pass_through() -> None:
    error = translate(KeyError("odd"), MODEL, URL)
    assert type(error) is InferenceError and "KeyError" in str(error)
    closed = ClientClosedError()
    assert translate(closed, MODEL, URL) is closed
    assert isinstance(closed, RuntimeError) and isinstance(closed, EmbeddingError)
    assert "create a new one" in str(closed)


def test_classify_takes_grpc_and_http_codes() -> None:
    assert grpc_code("StatusCode.NOT_FOUND") == "NOT_FOUND" and grpc_code("503") == "503"
    assert classify("", "whatever", MODEL, URL).status is None
