"""The raw user's senders: requests built and serialized once, sent as bytes, as perf_analyzer does.

Profiling the raw user (py-spy on a Locust process, tiny twin, 8 users) showed that what it
measured beyond the server was mostly the client library rebuilding the same request: per call
`InferInput` + `set_data_from_numpy` (a 1.3 MB copy), the protobuf request (another copy) and its
serialization (a third), and a 17 KB response turned into numpy and L2-normalised. Triton's C++
generator builds its inputs once. Here the request for each pre-built batch is serialized once
(`ModelInferRequest.SerializeToString`) and sent over a gRPC channel with the client's own channel
arguments; the response is parsed and checked (output present, one row per image) but not copied.
The model contract (names, datatypes, shape) and the pixels still come from `client`.

Over HTTP the same holds: each body (JSON header + binary tensor, the binary tensor extension of
the KServe v2 protocol) is built once with tritonclient's own `generate_request_body` and posted
with geventhttpclient, the library tritonclient.http sends with; the response's JSON header is
read (output present, its binary size one row per image), the tensor is not decoded.
"""

from __future__ import annotations

import json
from typing import Any

import gevent
import grpc
import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import get_error_grpc

from client import EmbeddingClient
from client.errors import InferenceError
from client.transport import Connection, _http_ssl_options, grpc_channel_args, translate

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def serialized_request(model: str, version: str, input_name: str, datatype: str,
                       batch: np.ndarray, output_name: str) -> bytes:
    """One ModelInferRequest with `batch` as raw contents, serialized."""
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = input_name, datatype
    tensor.shape.extend(batch.shape)
    request.outputs.add().name = output_name
    request.raw_input_contents.append(np.ascontiguousarray(batch).tobytes())
    return request.SerializeToString()


class _Sender:
    """What both senders share: the model the batches go to, their row counts, the answer's check."""

    protocol = "grpc"

    def __init__(self, client: EmbeddingClient, batches: list[np.ndarray], timeout: float) -> None:
        self.info = client.info if batches[0].dtype == np.uint8 else client.float_info
        self.conn = Connection.make(client.url, self.protocol)
        self.url, self.model, self.timeout = self.conn.url, self.info.name, timeout
        self.output_name = self.info.output_name
        self.version = client.model_version if self.info.name == client.model else ""
        self.rows = [len(b) for b in batches]
        self.row_bytes = self.info.output_dim * 4

    def _rows_answered(self, index: int, output_bytes: int | None) -> int:
        """Batch `index`'s image count, if the response's output holds one row per image."""
        rows = self.rows[index]
        if output_bytes != rows * self.row_bytes:
            raise InferenceError(f"response of {self.model} lacks {rows} rows of "
                                 f"{self.output_name!r}")
        return rows


class RawGrpcSender(_Sender):
    """Sends pre-serialized requests over one gRPC channel (shared by a user's greenlets)."""

    def __init__(self, client: EmbeddingClient, batches: list[np.ndarray], timeout: float,
                 concurrency: int = 1) -> None:
        del concurrency  # one channel multiplexes every call in flight
        super().__init__(client, batches, timeout)
        info, conn = self.info, self.conn
        self.requests = [serialized_request(info.name, self.version, info.input_name,
                                            info.input_datatype, b, info.output_name)
                         for b in batches]
        options = grpc_channel_args(conn)
        self._channel = (grpc.secure_channel(conn.url, grpc.ssl_channel_credentials(), options)
                         if conn.ssl else grpc.insecure_channel(conn.url, options))
        self._infer = self._channel.unary_unary(
            MODEL_INFER, request_serializer=None,
            response_deserializer=service_pb2.ModelInferResponse.FromString)
        self._metadata = tuple(conn.headers.items()) or None

    def send(self, index: int) -> int:
        """Send pre-built batch `index`; return its image count; raise the client's typed errors."""
        try:
            response: Any = self._infer(self.requests[index], timeout=self.timeout,
                                        metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(get_error_grpc(exc), self.model, self.url) from exc
        return self._rows_answered(index, len(response.raw_output_contents[0])
                                   if response.raw_output_contents else None)

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()


class RawHttpSender(_Sender):
    """Posts pre-built request bodies over one HTTP connection pool (shared by a user's greenlets)."""

    protocol = "http"

    def __init__(self, client: EmbeddingClient, batches: list[np.ndarray], timeout: float,
                 concurrency: int = 1) -> None:
        import tritonclient.http as http
        from geventhttpclient import HTTPClient

        super().__init__(client, batches, timeout)
        info, conn, version = self.info, self.conn, self.version
        self.path = f"/v2/models/{info.name}{f'/versions/{version}' if version else ''}/infer"
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        for batch in batches:
            tensor = http.InferInput(info.input_name, list(batch.shape), info.input_datatype)
            tensor.set_data_from_numpy(np.ascontiguousarray(batch), binary_data=True)
            body, json_size = http.InferenceServerClient.generate_request_body(
                [tensor], outputs=[http.InferRequestedOutput(info.output_name, binary_data=True)])
            self.bodies.append((body, {**conn.headers, "Content-Type": "application/octet-stream",
                                       "Inference-Header-Content-Length": str(json_size)}))
        tls: dict[str, Any] = {}
        if conn.ssl:
            import gevent.ssl

            tls = dict(ssl_options=_http_ssl_options(conn), insecure=conn.insecure,
                       ssl_context_factory=gevent.ssl.create_default_context)
        self._http = HTTPClient.from_url(f"{'https' if conn.ssl else 'http'}://{conn.url}",
                                         concurrency=max(1, concurrency),
                                         connection_timeout=conn.connect_timeout,
                                         network_timeout=timeout, **tls)

    def send(self, index: int) -> int:
        """Post pre-built body `index`; return its image count; raise the client's typed errors."""
        from tritonclient.utils import InferenceServerException

        body, headers = self.bodies[index]
        try:
            with gevent.Timeout(self.timeout, TimeoutError(f"no answer within {self.timeout:g} s")):
                response = self._http.post(self.path, body=body, headers=headers)
                data = response.read()
        except Exception as exc:  # noqa: BLE001 - connection errors become the client's types
            raise translate(exc, self.model, self.url) from exc
        header_length = response.get("Inference-Header-Content-Length")
        try:
            header = json.loads(data[:int(header_length)] if header_length else data)
        except ValueError:
            header = {"error": data[:200].decode(errors="replace")}
        if response.status_code != 200:
            raise translate(InferenceServerException(header.get("error", f"HTTP {response.status_code}"),
                                                     status=str(response.status_code)),
                            self.model, self.url)
        outputs = {o.get("name"): o for o in header.get("outputs", [])}
        return self._rows_answered(index, outputs.get(self.output_name, {}).get(
            "parameters", {}).get("binary_data_size"))

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()
