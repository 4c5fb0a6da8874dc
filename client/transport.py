"""How the client talks to Triton: gRPC or HTTP, blocking or asyncio, TLS, headers, typed errors.

Both protocols sit behind one small interface (health, metadata, config, statistics, infer) so the
clients above never branch on the protocol. Everything that goes wrong comes out as a typed
`EmbeddingError` (see `translate`), which is what the retry policy decides on.

tritonclient's HTTP modules are imported only when an HTTP transport is made: `import client` needs
only `tritonclient[grpc]`; `protocol="http"` needs `tritonclient[http]` (the loadtest extra).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from client.errors import (
    AuthenticationError,
    EmbeddingError,
    InferenceError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)

Protocol = Literal["grpc", "http"]

DEFAULT_GRPC_URL = "localhost:8001"
DEFAULT_HTTP_URL = "localhost:8000"
INT32_MAX = 2**31 - 1

#: gRPC codes that mean "try again later": the server is unreachable, restarting or overloaded.
TRANSIENT_GRPC_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"})
#: HTTP statuses with the same meaning (from Triton or a proxy in front of it).
TRANSIENT_HTTP_STATUSES = frozenset({"429", "502", "503", "504"})


def default_url(protocol: Protocol = "grpc") -> str:
    """`TRITON_GRPC_URL` / `TRITON_HTTP_URL`, else localhost on Triton's default port."""
    if protocol == "http":
        return os.environ.get("TRITON_HTTP_URL", DEFAULT_HTTP_URL)
    return os.environ.get("TRITON_GRPC_URL", DEFAULT_GRPC_URL)


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to reach it; shared by the blocking and asyncio transports.

    TLS: `ssl=True` (implied by any certificate option or an `https://`/`grpcs://` URL) with
    `root_certificates` (PEM file of the CA that signed the server; default: the system's),
    and for mutual TLS `private_key` + `certificate_chain` (PEM files of the client).
    `headers` go with every call (for example `{"authorization": "Bearer ..."}`).
    """

    url: str
    protocol: Protocol = "grpc"
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
        protocol = protocol.lower()
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        url = url or default_url(protocol)  # type: ignore[arg-type]
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


# -- errors ---------------------------------------------------------------------------------------

def _grpc_code(status: str) -> str:
    return status.rsplit(".", 1)[-1].upper() if status else ""


def translate(exc: BaseException, model: str, url: str) -> EmbeddingError:
    """Map tritonclient's and the network's exceptions onto the client's typed errors."""
    if isinstance(exc, EmbeddingError):
        return exc
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        code = _grpc_code(status) if status.startswith("StatusCode.") else status
        message = exc.message() or str(exc)
        return _classify(code, message, model, url)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)) or \
            type(exc).__name__ in ("Timeout", "ServerTimeoutError"):
        return RequestTimeoutError(f"request to {url} timed out ({exc or type(exc).__name__})")
    if isinstance(exc, (ConnectionError, OSError)) or type(exc).__name__.startswith("ClientConnector") \
            or type(exc).__name__ in ("ServerDisconnectedError", "ClientOSError"):
        return ServerUnavailableError(f"server at {url} unreachable: {exc or type(exc).__name__}",
                                      status="UNAVAILABLE")
    return InferenceError(f"request to {url} failed: {type(exc).__name__}: {exc}")


def _classify(code: str, message: str, model: str, url: str) -> EmbeddingError:
    lowered = message.lower()
    if code in ("DEADLINE_EXCEEDED", "408") or "deadline exceeded" in lowered:
        return RequestTimeoutError(f"request to {url} timed out: {message}", status=code or None)
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "401", "403") or \
            ("restricted" in lowered and "header" in lowered):
        return AuthenticationError(f"server at {url} refused the request ({code}): {message}",
                                   status=code or None)
    if "no available versions" in lowered or "is not ready" in lowered or \
            "unavailable model" in lowered:
        # Triton says this while a known model unloads or loads (a restart, a rollout): transient.
        return ModelNotReadyError(f"model {model!r} is not ready at {url}: {message}",
                                  status=code or None, transient=True)
    if "unknown model" in lowered or code == "NOT_FOUND":
        return ModelNotReadyError(f"model {model!r} is not known to the server at {url}: {message}",
                                  status=code or None)
    if "larger than max" in lowered or "message too large" in lowered:
        return InferenceError(f"request too large for {url}: {message}", status=code or None)
    if code in TRANSIENT_GRPC_CODES or code in TRANSIENT_HTTP_STATUSES:
        return ServerUnavailableError(f"server at {url} unavailable ({code}): {message}", status=code)
    if code == "CANCELLED":
        return ServerUnavailableError(f"request to {url} was cancelled: {message}", status=code,
                                      transient=False)
    return InferenceError(f"server at {url} failed the request ({code or 'error'}): {message}",
                          status=code or None)


# -- blocking transports --------------------------------------------------------------------------

class SyncTransport:
    """Blocking calls; each method raises `EmbeddingError` subclasses only. Thread-safe."""

    conn: Connection

    def server_live(self, timeout: float | None) -> bool:
        raise NotImplementedError

    def server_ready(self, timeout: float | None) -> bool:
        raise NotImplementedError

    def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        raise NotImplementedError

    def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def statistics(self, model: str, timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    def infer(self, model: str, version: str, input_name: str, datatype: str, batch: np.ndarray,
              output_name: str, timeout: float | None,
              headers: Mapping[str, str] | None = None) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class GrpcTransport(SyncTransport):
    """`tritonclient.grpc`: one channel, safe to share between threads."""

    def __init__(self, conn: Connection) -> None:
        import tritonclient.grpc as grpcclient

        self.conn = conn
        self._mod = grpcclient
        self._headers = dict(conn.headers) or None
        self._client = grpcclient.InferenceServerClient(
            conn.url, ssl=conn.ssl, root_certificates=conn.root_certificates,
            private_key=conn.private_key, certificate_chain=conn.certificate_chain,
            channel_args=grpc_channel_args(conn))

    def _call(self, model: str, fn: Callable[..., Any], *args: Any,
              extra_headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            return fn(*args, headers=_with(self._headers, extra_headers), **kwargs)
        except Exception as exc:
            raise translate(exc, model, self.conn.url) from exc

    def server_live(self, timeout: float | None) -> bool:
        return bool(self._call("", self._client.is_server_live, client_timeout=timeout))

    def server_ready(self, timeout: float | None) -> bool:
        return bool(self._call("", self._client.is_server_ready, client_timeout=timeout))

    def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        return bool(self._call(model, self._client.is_model_ready, model, version,
                               client_timeout=timeout))

    def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, self._client.get_model_metadata, model, version, as_json=True,
                          client_timeout=timeout)

    def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, self._client.get_model_config, model, version, as_json=True,
                          client_timeout=timeout)

    def statistics(self, model: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, self._client.get_inference_statistics, model, as_json=True,
                          client_timeout=timeout)

    def infer(self, model: str, version: str, input_name: str, datatype: str, batch: np.ndarray,
              output_name: str, timeout: float | None,
              headers: Mapping[str, str] | None = None) -> Answer:
        inp = self._mod.InferInput(input_name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch)
        out = self._mod.InferRequestedOutput(output_name)
        result = self._call(model, self._client.infer, model, [inp], model_version=version,
                            outputs=[out], client_timeout=timeout, extra_headers=headers)
        return _output(result, output_name, len(batch))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


@dataclass(frozen=True)
class Answer:
    """The rows of one inference response, and the model name and version the response names."""

    rows: np.ndarray
    model: str
    version: str


def _output(result: Any, output_name: str, rows: int) -> Answer:
    array = result.as_numpy(output_name)
    if array is None:
        raise InferenceError(f"response has no output {output_name!r}")
    if array.shape[0] != rows:
        raise InferenceError(f"server returned {array.shape[0]} rows for {rows} inputs")
    response = result.get_response()
    if isinstance(response, dict):  # HTTP: the JSON header of the response
        model, version = response.get("model_name", ""), response.get("model_version", "")
    else:  # gRPC: ModelInferResponse
        model, version = response.model_name, response.model_version
    return Answer(array.astype(np.float32, copy=False), str(model), str(version))


def _with(headers: dict[str, str] | None, extra: Mapping[str, str] | None) -> dict[str, str] | None:
    """The connection's headers plus a call's own (e.g. `traceparent`)."""
    if not extra:
        return headers
    return {**(headers or {}), **extra}


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


class HttpTransport(SyncTransport):
    """`tritonclient.http`, which is not thread-safe: one underlying client per thread.

    geventhttpclient cooperates with gevent (Locust) without patching. A per-call timeout is a
    `gevent.Timeout` around the call; the connection's own timeouts bound everything else.
    """

    def __init__(self, conn: Connection, network_timeout: float | None = None) -> None:
        self.conn = conn
        self._mod = _import_http()
        self._headers = dict(conn.headers) or None
        self._network_timeout = network_timeout or 600.0
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise ServerUnavailableError("client is closed", transient=False)
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

    def _call(self, model: str, timeout: float | None, name: str, *args: Any,
              extra_headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        import gevent

        headers = _with(self._headers, extra_headers)
        try:
            fn = getattr(self._client(), name)
            if timeout is None:
                return fn(*args, headers=headers, **kwargs)
            with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g} s")):
                return fn(*args, headers=headers, **kwargs)
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

    def server_live(self, timeout: float | None) -> bool:
        return bool(self._call("", timeout, "is_server_live"))

    def server_ready(self, timeout: float | None) -> bool:
        return bool(self._call("", timeout, "is_server_ready"))

    def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        return bool(self._call(model, timeout, "is_model_ready", model, version))

    def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, timeout, "get_model_metadata", model, version)

    def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, timeout, "get_model_config", model, version)

    def statistics(self, model: str, timeout: float | None) -> dict[str, Any]:
        return self._call(model, timeout, "get_inference_statistics", model)

    def infer(self, model: str, version: str, input_name: str, datatype: str, batch: np.ndarray,
              output_name: str, timeout: float | None,
              headers: Mapping[str, str] | None = None) -> Answer:
        inp = self._mod.InferInput(input_name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch, binary_data=True)
        out = self._mod.InferRequestedOutput(output_name, binary_data=True)
        result = self._call(model, timeout, "infer", model, [inp], model_version=version,
                            outputs=[out], extra_headers=headers)
        return _output(result, output_name, len(batch))

    def close(self) -> None:
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a client of another thread may be mid-call
                pass


def sync_transport(conn: Connection, network_timeout: float | None = None) -> SyncTransport:
    if conn.protocol == "http":
        return HttpTransport(conn, network_timeout)
    return GrpcTransport(conn)


# -- asyncio transports ---------------------------------------------------------------------------

class AsyncTransport:
    """The same calls as `SyncTransport`, as coroutines, for one event loop."""

    conn: Connection

    async def server_live(self, timeout: float | None) -> bool:
        raise NotImplementedError

    async def server_ready(self, timeout: float | None) -> bool:
        raise NotImplementedError

    async def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        raise NotImplementedError

    async def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    async def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        raise NotImplementedError

    async def infer(self, model: str, version: str, input_name: str, datatype: str,
                    batch: np.ndarray, output_name: str, timeout: float | None,
                    headers: Mapping[str, str] | None = None) -> Answer:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class AsyncGrpcTransport(AsyncTransport):
    """`tritonclient.grpc.aio`: requests in flight without threads."""

    def __init__(self, conn: Connection) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpcaio

        self.conn = conn
        self._mod = grpcclient
        self._headers = dict(conn.headers) or None
        self._client = grpcaio.InferenceServerClient(
            conn.url, ssl=conn.ssl, root_certificates=conn.root_certificates,
            private_key=conn.private_key, certificate_chain=conn.certificate_chain,
            channel_args=grpc_channel_args(conn))

    async def _call(self, model: str, fn: Callable[..., Any], *args: Any,
                    extra_headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            return await fn(*args, headers=_with(self._headers, extra_headers), **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc, model, self.conn.url) from exc

    async def server_live(self, timeout: float | None) -> bool:
        return bool(await self._call("", self._client.is_server_live, client_timeout=timeout))

    async def server_ready(self, timeout: float | None) -> bool:
        return bool(await self._call("", self._client.is_server_ready, client_timeout=timeout))

    async def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        return bool(await self._call(model, self._client.is_model_ready, model, version,
                                     client_timeout=timeout))

    async def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return await self._call(model, self._client.get_model_metadata, model, version,
                                as_json=True, client_timeout=timeout)

    async def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return await self._call(model, self._client.get_model_config, model, version,
                                as_json=True, client_timeout=timeout)

    async def infer(self, model: str, version: str, input_name: str, datatype: str,
                    batch: np.ndarray, output_name: str, timeout: float | None,
                    headers: Mapping[str, str] | None = None) -> Answer:
        inp = self._mod.InferInput(input_name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch)
        out = self._mod.InferRequestedOutput(output_name)
        result = await self._call(model, self._client.infer, model, [inp], model_version=version,
                                  outputs=[out], client_timeout=timeout, extra_headers=headers)
        return _output(result, output_name, len(batch))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


class AsyncHttpTransport(AsyncTransport):
    """`tritonclient.http.aio` (aiohttp); per-call timeouts are `asyncio.wait_for`."""

    def __init__(self, conn: Connection) -> None:
        import tritonclient.http as httpclient

        aio = _import_http(asyncio_variant=True)
        self.conn = conn
        self._mod = httpclient
        self._headers = dict(conn.headers) or None
        ssl_context = None
        if conn.ssl:
            import ssl

            ssl_context = ssl.create_default_context(cafile=conn.root_certificates)
            if conn.certificate_chain:
                ssl_context.load_cert_chain(conn.certificate_chain, conn.private_key)
            if conn.insecure:
                ssl_context.check_hostname = False
        self._client = aio.InferenceServerClient(conn.url, conn_timeout=600.0,
                                                 ssl=conn.ssl, ssl_context=ssl_context)

    async def _call(self, model: str, timeout: float | None, fn: Callable[..., Any], *args: Any,
                    extra_headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(
                fn(*args, headers=_with(self._headers, extra_headers), **kwargs), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc, model, self.conn.url) from exc

    async def server_live(self, timeout: float | None) -> bool:
        return bool(await self._call("", timeout, self._client.is_server_live))

    async def server_ready(self, timeout: float | None) -> bool:
        return bool(await self._call("", timeout, self._client.is_server_ready))

    async def model_ready(self, model: str, version: str, timeout: float | None) -> bool:
        return bool(await self._call(model, timeout, self._client.is_model_ready, model, version))

    async def metadata(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return await self._call(model, timeout, self._client.get_model_metadata, model, version)

    async def config(self, model: str, version: str, timeout: float | None) -> dict[str, Any]:
        return await self._call(model, timeout, self._client.get_model_config, model, version)

    async def infer(self, model: str, version: str, input_name: str, datatype: str,
                    batch: np.ndarray, output_name: str, timeout: float | None,
                    headers: Mapping[str, str] | None = None) -> Answer:
        inp = self._mod.InferInput(input_name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch, binary_data=True)
        out = self._mod.InferRequestedOutput(output_name, binary_data=True)
        result = await self._call(model, timeout, self._client.infer, model, [inp],
                                  model_version=version, outputs=[out], extra_headers=headers)
        return _output(result, output_name, len(batch))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def async_transport(conn: Connection) -> AsyncTransport:
    if conn.protocol == "http":
        return AsyncHttpTransport(conn)
    return AsyncGrpcTransport(conn)
