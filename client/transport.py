"""How the client talks to Triton: one narrow interface over tritonclient's four clients.

`Transport` is everything the client needs from a server: `infer`, `metadata`/`config`, `live`/
`ready` and `statistics`. The tritonclient module (gRPC or HTTP, blocking or asyncio) is picked
once, when a transport is opened (`open_transport`); every method is written once in `_Calls`, and
the four classes below differ only in how they call tritonclient and wait. A blocking transport
returns values; an asyncio one returns awaitables of the same values. Everything that goes wrong
comes out as a typed `EmbeddingError` (`client.translate`), which the retry policy decides on.

`client.testing.FakeTransport` implements the same interface in memory, for tests without a server.
tritonclient's HTTP modules are imported only when an HTTP transport is opened: `import client`
needs only `tritonclient[grpc]`; `protocol="http"` needs `tritonclient[http]`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from tritonclient.utils import InferenceServerException

from client.errors import ClientClosedError, InferenceError
from client.settings import DEFAULT_GRPC_URL, DEFAULT_HTTP_URL, check_protocol, env_url
from client.settings import Protocol as ProtocolName
from client.translate import translate

__all__ = ["DEFAULT_GRPC_URL", "DEFAULT_HTTP_URL", "Answer", "Connection", "InferRequest",
           "Transport", "default_url", "grpc_channel_args", "open_transport", "translate"]

INT32_MAX = 2**31 - 1
T = TypeVar("T")


def default_url(protocol: ProtocolName = "grpc") -> str:
    """`TRITON_GRPC_URL` / `TRITON_HTTP_URL`, else localhost on Triton's default port."""
    return env_url(protocol)


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to reach it; shared by the blocking and asyncio transports.

    TLS: `ssl=True` (implied by any certificate option or an `https://`/`grpcs://` URL) with
    `root_certificates` (PEM file of the CA that signed the server; default: the system's),
    and for mutual TLS `private_key` + `certificate_chain` (PEM files of the client).
    `headers` go with every call (for example `{"authorization": "Bearer ..."}`).
    """

    url: str
    protocol: ProtocolName = "grpc"
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    insecure: bool = False  # HTTP only: skip the host name check of the server certificate
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    grpc_options: Sequence[tuple[str, Any]] = ()  # extra gRPC channel arguments

    @classmethod
    def make(cls, url: str | None, protocol: str = "grpc", **kwargs: Any) -> Connection:
        """Normalise the URL (scheme stripped; https/grpcs turn TLS on) and check the protocol."""
        protocol = check_protocol(protocol)
        url = url or env_url(protocol)
        for scheme, secure in (("https://", True), ("grpcs://", True), ("http://", False),
                               ("grpc://", False)):
            if url.startswith(scheme):
                url = url[len(scheme):]
                kwargs["ssl"] = kwargs.get("ssl") or secure
        url = url.rstrip("/")
        if any(kwargs.get(k) for k in ("root_certificates", "private_key", "certificate_chain")):
            kwargs["ssl"] = True
        if bool(kwargs.get("private_key")) != bool(kwargs.get("certificate_chain")):
            raise ValueError("mutual TLS needs both private_key and certificate_chain")
        kwargs["headers"] = dict(kwargs.get("headers") or {})
        return cls(url=url, protocol=protocol, **kwargs)  # type: ignore[arg-type]


def grpc_channel_args(conn: Connection) -> list[tuple[str, Any]]:
    """tritonclient's defaults (replaced whole when channel_args is given) plus short reconnects.

    gRPC backs off up to 120 s between reconnect attempts by default; after a server restart that
    would leave the client failing long after the server is back, so the backoff is capped at 2 s.
    """
    args: dict[str, Any] = {
        "grpc.max_send_message_length": INT32_MAX,
        "grpc.max_receive_message_length": INT32_MAX,
        "grpc.keepalive_time_ms": INT32_MAX,
        "grpc.keepalive_timeout_ms": 20000,
        "grpc.keepalive_permit_without_calls": False,
        "grpc.http2.max_pings_without_data": 2,
        "grpc.initial_reconnect_backoff_ms": 250,
        "grpc.min_reconnect_backoff_ms": 250,
        "grpc.max_reconnect_backoff_ms": 2000,
    }
    args.update(dict(conn.grpc_options))
    return list(args.items())


@dataclass(frozen=True)
class InferRequest:
    """One inference request: a batch for one input, one output wanted, extra headers."""

    model: str
    version: str
    input_name: str
    datatype: str
    batch: np.ndarray
    output_name: str
    headers: Mapping[str, str] | None = None  # e.g. {"traceparent": ...}, beside the connection's


@dataclass(frozen=True)
class Answer:
    """The rows of one inference response, and the model name and version the response names."""

    rows: np.ndarray
    model: str
    version: str


class Transport(Protocol):
    """What the client needs from a server. Blocking transports return the values; asyncio
    transports return awaitables of them. Every method raises only `EmbeddingError`s."""

    conn: Connection
    is_async: bool

    def live(self, timeout: float | None) -> Any: ...  # bool
    def ready(self, model: str | None, version: str, timeout: float | None) -> Any: ...  # bool
    def metadata(self, model: str, version: str, timeout: float | None) -> Any: ...  # dict
    def config(self, model: str, version: str, timeout: float | None) -> Any: ...  # dict
    def statistics(self, model: str, timeout: float | None) -> Any: ...  # dict
    def infer(self, request: InferRequest, timeout: float | None) -> Any: ...  # Answer
    def close(self) -> Any: ...  # None


def answer_of(result: Any, request: InferRequest) -> Answer:
    """The output rows of a tritonclient result, checked against the request, with its model."""
    array = result.as_numpy(request.output_name)
    if array is None:
        raise InferenceError(f"response has no output {request.output_name!r}")
    if array.shape[0] != len(request.batch):
        raise InferenceError(f"server returned {array.shape[0]} rows for {len(request.batch)} inputs")
    response = result.get_response()
    if isinstance(response, dict):  # HTTP: the JSON header of the response
        model, version = response.get("model_name", ""), response.get("model_version", "")
    else:  # gRPC: ModelInferResponse
        model, version = response.model_name, response.model_version
    return Answer(array.astype(np.float32, copy=False), str(model), str(version))


def _with(headers: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str] | None:
    """The connection's headers plus a call's own (e.g. `traceparent`); None when there are none."""
    merged = {**headers, **(extra or {})}
    return merged or None


class _Calls:
    """The transport interface written once over `_call` (one tritonclient call) and `_then`.

    `_call(model, timeout, method, *args, headers=None, **kwargs)` calls tritonclient's `method`
    and translates its errors; `_then(value, fn)` applies `fn` to the result, at once for blocking
    clients and after the await for asyncio ones. `_json` and `_binary` are the keyword arguments
    that differ between the gRPC and HTTP modules.
    """

    conn: Connection
    is_async = False
    _mod: Any
    _json: dict[str, Any] = {}
    _binary: dict[str, Any] = {}

    def _call(self, model: str, timeout: float | None, method: str, *args: Any,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _then(self, value: Any, fn: Callable[[Any], T]) -> Any:
        return fn(value)

    def live(self, timeout: float | None) -> Any:
        return self._then(self._call("", timeout, "is_server_live"), bool)

    def ready(self, model: str | None, version: str, timeout: float | None) -> Any:
        if model is None:
            return self._then(self._call("", timeout, "is_server_ready"), bool)
        return self._then(self._call(model, timeout, "is_model_ready", model, version), bool)

    def metadata(self, model: str, version: str, timeout: float | None) -> Any:
        return self._call(model, timeout, "get_model_metadata", model, version, **self._json)

    def config(self, model: str, version: str, timeout: float | None) -> Any:
        return self._call(model, timeout, "get_model_config", model, version, **self._json)

    def statistics(self, model: str, timeout: float | None) -> Any:
        return self._call(model, timeout, "get_inference_statistics", model, **self._json)

    def infer(self, request: InferRequest, timeout: float | None) -> Any:
        inp = self._mod.InferInput(request.input_name, list(request.batch.shape), request.datatype)
        inp.set_data_from_numpy(request.batch, **self._binary)
        out = self._mod.InferRequestedOutput(request.output_name, **self._binary)
        result = self._call(request.model, timeout, "infer", request.model, [inp],
                            model_version=request.version, outputs=[out], headers=request.headers)
        return self._then(result, lambda r: answer_of(r, request))


class _AsyncCalls(_Calls):
    """The asyncio clients: `client_timeout=` where tritonclient takes it (gRPC), else
    `asyncio.wait_for` (HTTP)."""

    is_async = True
    _client: Any
    _takes_timeout = True

    def _then(self, value: Awaitable[Any], fn: Callable[[Any], T]) -> Awaitable[T]:
        async def after() -> T:
            return fn(await value)

        return after()

    async def _call(self, model: str, timeout: float | None, method: str, *args: Any,
                    headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        if self._client is None:
            raise ClientClosedError("transport")
        fn = getattr(self._client, method)
        merged = _with(self.conn.headers, headers)
        try:
            if self._takes_timeout:
                return await fn(*args, headers=merged, client_timeout=timeout, **kwargs)
            return await asyncio.wait_for(fn(*args, headers=merged, **kwargs), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc, model, self.conn.url) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _grpc_client(module: Any, conn: Connection) -> Any:
    return module.InferenceServerClient(
        conn.url, ssl=conn.ssl, root_certificates=conn.root_certificates,
        private_key=conn.private_key, certificate_chain=conn.certificate_chain,
        channel_args=grpc_channel_args(conn))


class GrpcTransport(_Calls):
    """`tritonclient.grpc`: one channel, safe to share between threads."""

    _json = {"as_json": True}

    def __init__(self, conn: Connection) -> None:
        import tritonclient.grpc as grpcclient

        self.conn, self._mod = conn, grpcclient
        self._client: Any = _grpc_client(grpcclient, conn)

    def _call(self, model: str, timeout: float | None, method: str, *args: Any,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        if self._client is None:
            raise ClientClosedError("transport")
        try:
            return getattr(self._client, method)(*args, headers=_with(self.conn.headers, headers),
                                                 client_timeout=timeout, **kwargs)
        except Exception as exc:
            raise translate(exc, model, self.conn.url) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class AsyncGrpcTransport(_AsyncCalls):
    """`tritonclient.grpc.aio`: requests in flight without threads, on one event loop."""

    _json = {"as_json": True}

    def __init__(self, conn: Connection) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpcaio

        self.conn, self._mod = conn, grpcclient
        self._client = _grpc_client(grpcaio, conn)


def _import_http(asyncio_variant: bool = False) -> Any:
    try:
        if asyncio_variant:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
    except ImportError as exc:  # tritonclient[http] is an extra
        raise ImportError("protocol='http' needs tritonclient's HTTP client: "
                          "pip install 'tritonclient[http]' (or this project's loadtest extra)") from exc
    return module


def _http_ssl_options(conn: Connection) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if conn.root_certificates:
        options["ca_certs"] = conn.root_certificates
    if conn.certificate_chain:
        options["certfile"] = conn.certificate_chain
        options["keyfile"] = conn.private_key
    return options


class HttpTransport(_Calls):
    """`tritonclient.http`, which is not thread-safe: one underlying client per thread.

    geventhttpclient cooperates with gevent (Locust) without patching. A per-call timeout is a
    `gevent.Timeout` around the call; the connection's own timeouts bound everything else.
    """

    _binary = {"binary_data": True}

    def __init__(self, conn: Connection, network_timeout: float | None = None) -> None:
        self.conn = conn
        self._mod = _import_http()
        self._network_timeout = network_timeout or 600.0
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise ClientClosedError("transport")
            kwargs: dict[str, Any] = {}
            if self.conn.ssl:
                import gevent.ssl

                kwargs = dict(ssl=True, ssl_options=_http_ssl_options(self.conn),
                              ssl_context_factory=gevent.ssl.create_default_context,
                              insecure=self.conn.insecure)
            client = self._mod.InferenceServerClient(
                self.conn.url, connection_timeout=self.conn.connect_timeout,
                network_timeout=self._network_timeout, **kwargs)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, model: str, timeout: float | None, method: str, *args: Any,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        import gevent

        try:
            fn = getattr(self._client(), method)
            merged = _with(self.conn.headers, headers)
            if timeout is None:
                return fn(*args, headers=merged, **kwargs)
            with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g} s")):
                return fn(*args, headers=merged, **kwargs)
        except ClientClosedError:
            raise
        except Exception as exc:
            if not isinstance(exc, InferenceServerException):
                self._reset()  # the connection may be half-used: start the next call afresh
            raise translate(exc, model, self.conn.url) from exc

    def _reset(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not mask the error
                pass

    def close(self) -> None:
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a client of another thread may be mid-call
                pass


class AsyncHttpTransport(_AsyncCalls):
    """`tritonclient.http.aio` (aiohttp); per-call timeouts are `asyncio.wait_for`."""

    _binary = {"binary_data": True}
    _takes_timeout = False

    def __init__(self, conn: Connection) -> None:
        aio = _import_http(asyncio_variant=True)
        self.conn, self._mod = conn, _import_http()
        ssl_context = None
        if conn.ssl:
            import ssl

            ssl_context = ssl.create_default_context(cafile=conn.root_certificates)
            if conn.certificate_chain:
                ssl_context.load_cert_chain(conn.certificate_chain, conn.private_key)
            if conn.insecure:
                ssl_context.check_hostname = False
        self._client = aio.InferenceServerClient(conn.url, conn_timeout=600.0, ssl=conn.ssl,
                                                 ssl_context=ssl_context)


#: The tritonclient flavour for (protocol, asyncio?), picked once per connection.
TRANSPORTS: dict[tuple[str, bool], Callable[[Connection], Transport]] = {
    ("grpc", False): GrpcTransport, ("grpc", True): AsyncGrpcTransport,
    ("http", False): HttpTransport, ("http", True): AsyncHttpTransport,
}


def check_available(protocol: str) -> None:
    """ImportError now, with what to install, when the protocol's tritonclient extra is missing."""
    if protocol == "http":
        _import_http()


def open_transport(conn: Connection, *, asyncio: bool = False) -> Transport:
    """The transport for `conn.protocol`, blocking or asyncio."""
    return TRANSPORTS[(conn.protocol, asyncio)](conn)
