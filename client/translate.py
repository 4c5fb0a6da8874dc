"""tritonclient's and the network's exceptions -> the client's typed errors, as two tables.

`STATUS_RULES` classifies a server answer (`InferenceServerException`: a gRPC code such as
"UNAVAILABLE" or an HTTP status such as "503", and Triton's message); `EXCEPTION_RULES` classifies
exceptions raised below tritonclient (sockets, HTTP parsers, timeouts). The first rule that matches
wins. Each rule names the error type, whether the condition goes away by itself (`transient`, what
`RetryPolicy` retries) and a message that says what to do. tests/unit/test_translate.py has one
case per rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.utils import InferenceServerException

from client.errors import (
    AuthenticationError,
    EmbeddingError,
    InferenceError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)

#: What a wrong port looks like, and what to do about it.
GRPC_AT_HTTP_PORT = ("the server at {url} closed the connection without speaking gRPC: if {url} is "
                     "Triton's HTTP port (8000 by default), use its gRPC port (8001) or "
                     "protocol='http'")
HTTP_AT_GRPC_PORT = ("the server at {url} does not answer in HTTP/1.1: if {url} is Triton's gRPC "
                     "port (8001 by default), use its HTTP port (8000) or protocol='grpc'")


@dataclass(frozen=True)
class Rule:
    """Matches when the code is in `codes`, or every word of one of `phrases` is in the message."""

    error: type[EmbeddingError]
    message: str  # formatted with url, model, code, detail
    codes: frozenset[str] = frozenset()
    phrases: tuple[tuple[str, ...], ...] = ()
    transient: bool = False

    def matches(self, code: str, text: str) -> bool:
        lowered = text.lower()
        return code in self.codes or any(all(w in lowered for w in words) for words in self.phrases)

    def make(self, url: str, model: str, code: str, detail: str) -> EmbeddingError:
        message = self.message.format(url=url, model=model, code=code or "error", detail=detail)
        return self.error(message, status=code or None, transient=self.transient)


def _codes(*names: str) -> frozenset[str]:
    return frozenset(names)


STATUS_RULES: tuple[Rule, ...] = (
    Rule(RequestTimeoutError, "request to {url} timed out: {detail}",
         _codes("DEADLINE_EXCEEDED", "408"), (("deadline exceeded",),)),
    Rule(AuthenticationError, "server at {url} refused the request ({code}): {detail}; check the "
         "credentials (headers=, TLS certificates)",
         _codes("UNAUTHENTICATED", "PERMISSION_DENIED", "401", "403"), (("restricted", "header"),)),
    # Triton says these while a known model unloads or loads (a restart, a rollout): transient.
    Rule(ModelNotReadyError, "model {model!r} is not ready at {url}: {detail}", frozenset(),
         (("no available versions",), ("is not ready",), ("unavailable model",)), transient=True),
    Rule(ModelNotReadyError, "model {model!r} is not known to the server at {url}: {detail}; "
         "check the model name, or that the server loads it",
         _codes("NOT_FOUND"), (("unknown model",),)),
    Rule(InferenceError, "request too large for {url}: {detail}; send smaller batches "
         "(batch_size=)", frozenset(), (("larger than max",), ("message too large",))),
    Rule(ServerUnavailableError, GRPC_AT_HTTP_PORT + " ({detail})", frozenset(),
         (("unavailable", "socket closed"),), transient=True),
    Rule(ServerUnavailableError, "server at {url} unavailable ({code}): {detail}",
         _codes("UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "429", "502", "503", "504"),
         transient=True),
    Rule(ServerUnavailableError, "request to {url} was cancelled: {detail}", _codes("CANCELLED")),
)
#: When no rule matches: the server failed the request (its message says why).
FALLBACK = Rule(InferenceError, "server at {url} failed the request ({code}): {detail}")


@dataclass(frozen=True)
class ExceptionRule:
    """Matches an exception by class (or class name, for optional libraries) or message words."""

    error: type[EmbeddingError]
    message: str
    types: tuple[type[BaseException], ...] = ()
    names: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()
    transient: bool = False

    def matches(self, exc: BaseException) -> bool:
        names = {cls.__name__ for cls in type(exc).__mro__}
        return isinstance(exc, self.types) or bool(names & self.names) or \
            any(p in str(exc) for p in self.phrases)


EXCEPTION_RULES: tuple[ExceptionRule, ...] = (
    # geventhttpclient / aiohttp reading an HTTP/2 (gRPC) server's first bytes as a status line.
    ExceptionRule(ServerUnavailableError, HTTP_AT_GRPC_PORT + " ({detail})",
                  names=frozenset({"HTTPParseError"}), phrases=("Expected HTTP/",)),
    ExceptionRule(RequestTimeoutError, "request to {url} timed out ({detail})",
                  types=(TimeoutError,),  # asyncio.TimeoutError and socket.timeout too
                  names=frozenset({"Timeout", "ServerTimeoutError"})),
    ExceptionRule(ServerUnavailableError, "server at {url} unreachable: {detail}",
                  types=(ConnectionError, OSError),
                  names=frozenset({"ClientConnectorError", "ClientConnectionError",
                                   "ServerDisconnectedError", "ClientOSError"}), transient=True),
)


def grpc_code(status: str) -> str:
    """'StatusCode.UNAVAILABLE' -> 'UNAVAILABLE'; HTTP statuses ('503') stay as they are."""
    return status.rsplit(".", 1)[-1].upper() if status.startswith("StatusCode.") else status


def classify(code: str, detail: str, model: str, url: str) -> EmbeddingError:
    """A server answer's code and message -> the typed error of the first matching rule."""
    rule = next((r for r in STATUS_RULES if r.matches(code, detail)), FALLBACK)
    return rule.make(url, model, code, detail)


def translate(exc: BaseException, model: str, url: str) -> EmbeddingError:
    """Any exception of a call to the server at `url` about `model` -> a typed `EmbeddingError`."""
    if isinstance(exc, EmbeddingError):
        return exc
    if isinstance(exc, InferenceServerException):
        return classify(grpc_code(str(exc.status() or "")), exc.message() or str(exc), model, url)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for rule in EXCEPTION_RULES:
        if rule.matches(exc):
            error = rule.error(rule.message.format(url=url, detail=detail),
                               transient=rule.transient)
            if rule.error is ServerUnavailableError and rule.transient:
                error.status = "UNAVAILABLE"
            return error
    return InferenceError(f"request to {url} failed: {detail}")
