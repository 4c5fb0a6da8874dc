"""Where the time went on the server: Triton's inference statistics read before and after a run.

Locust measures what a client sees (preprocessing + serialization + network + server). Triton counts,
per model, how long requests waited in the queue and how long the model computed, and how many
model executions (batches) ran. The difference of two snapshots covers exactly the run, warmup and
earlier runs excluded, so a report can split each request's latency into client + network, queue and
compute, and say what batch size the dynamic batcher achieved.

For an ensemble (a preprocessing step chained to the model), request counts come from the ensemble
and queue/compute time is summed over its composing models; batching is judged by the composing
model that computes longest, not by the ensemble (whose execution_count counts requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model (all loaded versions summed)."""

    name: str
    inference_count: int = 0  # batch rows (images) inferred
    execution_count: int = 0  # model executions (batches run)
    counts: dict[str, int] = field(default_factory=dict)  # COUNTERS -> request count
    ns: dict[str, int] = field(default_factory=dict)  # COUNTERS -> cumulative nanoseconds

    def __sub__(self, before: ModelCounters) -> ModelCounters:
        return ModelCounters(
            self.name, self.inference_count - before.inference_count,
            self.execution_count - before.execution_count,
            {k: self.counts.get(k, 0) - before.counts.get(k, 0) for k in COUNTERS},
            {k: self.ns.get(k, 0) - before.ns.get(k, 0) for k in COUNTERS})

    @property
    def requests(self) -> int:
        return self.counts.get("success", 0)

    @property
    def compute_ns(self) -> int:
        return sum(self.ns.get(k, 0) for k in ("compute_input", "compute_infer", "compute_output"))


@dataclass(frozen=True)
class ServerSnapshot:
    """Counters of the model under test and, for an ensemble, of its composing models."""

    model: str
    entry: ModelCounters
    composing: tuple[ModelCounters, ...] = ()

    def __sub__(self, before: ServerSnapshot) -> ServerSnapshot:
        old = {c.name: c for c in before.composing}
        return ServerSnapshot(self.model, self.entry - before.entry,
                              tuple(c - old.get(c.name, ModelCounters(c.name)) for c in self.composing))

    def split(self, client_avg_ms: float | None = None, client_requests: int | None = None) -> dict:
        """Per-request milliseconds by stage, the achieved batch size, and a cross-check of counts.

        `client_avg_ms` is Locust's mean latency; what the server did not account for is the
        client's share (preprocessing, serialization) plus the network.
        """
        entry = self.entry
        requests = entry.requests
        workers = self.composing or (entry,)

        def per_request(ns: float) -> float:
            return round(ns / requests / 1e6, 3) if requests else 0.0

        queue_ns = sum(m.ns.get("queue", 0) for m in workers)
        compute_ns = sum(m.compute_ns for m in workers)
        infer_ns = sum(m.ns.get("compute_infer", 0) for m in workers)
        batcher = max(workers, key=lambda m: m.compute_ns)
        server_ms = per_request(entry.ns.get("success", 0))
        out: dict[str, Any] = {
            "requests": requests,
            "failed_requests": entry.counts.get("fail", 0),
            "images": entry.inference_count,
            "executions": batcher.execution_count,
            "avg_batch": round(batcher.inference_count / batcher.execution_count, 3)
            if batcher.execution_count else 0.0,
            "batching_model": batcher.name,
            "server_ms": server_ms,
            "queue_ms": per_request(queue_ns),
            "compute_ms": per_request(compute_ns),
            "compute_infer_ms": per_request(infer_ns),
            "compute_io_ms": per_request(compute_ns - infer_ns),
            "server_other_ms": round(max(server_ms - per_request(queue_ns) - per_request(compute_ns),
                                         0.0), 3),
        }
        if client_avg_ms is not None and requests:
            out["client_avg_ms"] = round(client_avg_ms, 3)
            out["client_and_network_ms"] = round(max(client_avg_ms - server_ms, 0.0), 3)
        if client_requests is not None:
            # Other traffic on the same server, or requests lost from Locust's statistics, show here.
            out["client_requests"] = client_requests
            out["counts_match"] = abs(requests + out["failed_requests"] - client_requests) <= max(
                2, int(0.01 * client_requests))
        if self.composing:
            out["models"] = {m.name: {"requests": m.requests, "executions": m.execution_count,
                                      "queue_ms": per_request(m.ns.get("queue", 0)),
                                      "compute_ms": per_request(m.compute_ns)}
                             for m in self.composing}
        return out


def _counters(name: str, entries: list[dict]) -> ModelCounters:
    counts = dict.fromkeys(COUNTERS, 0)
    ns = dict.fromkeys(COUNTERS, 0)
    inference = execution = 0
    for entry in entries:
        if entry.get("name") != name:
            continue
        inference += int(entry.get("inference_count", 0))
        execution += int(entry.get("execution_count", 0))
        stats = entry.get("inference_stats", {})
        for key in COUNTERS:
            counts[key] += int(stats.get(key, {}).get("count", 0))
            ns[key] += int(stats.get(key, {}).get("ns", 0))
    return ModelCounters(name, inference, execution, counts, ns)


class ServerStats:
    """Reads Triton's statistics over gRPC (`host:port`) or HTTP (`http://host:port` or protocol)."""

    def __init__(self, url: str, model: str, protocol: str = "grpc") -> None:
        self.model = model
        self.protocol = "http" if url.startswith(("http://", "https://")) else protocol
        self.url = url.split("://", 1)[-1]
        self._composing: list[str] | None = None

    def _client(self) -> Any:
        if self.protocol == "http":
            import tritonclient.http as triton
        else:
            import tritonclient.grpc as triton
        return triton.InferenceServerClient(self.url)

    def _call(self, client: Any, method: str, *args: Any) -> dict:
        if self.protocol == "http":
            return getattr(client, method)(*args)
        return getattr(client, method)(*args, as_json=True)

    def composing_models(self, client: Any) -> list[str]:
        """Step models of an ensemble (empty for a plain model), read once from its config."""
        if self._composing is None:
            config = self._call(client, "get_model_config", self.model)
            config = config.get("config", config)
            steps = config.get("ensemble_scheduling", {}).get("step", [])
            self._composing = list(dict.fromkeys(s["model_name"] for s in steps))
        return self._composing

    def snapshot(self) -> ServerSnapshot:
        """Current cumulative counters; raises tritonclient's exception if the server can't say."""
        client = self._client()
        try:
            names = self.composing_models(client)
            entries = self._call(client, "get_inference_statistics", "").get("model_stats", [])
        finally:
            client.close()
        return ServerSnapshot(self.model, _counters(self.model, entries),
                              tuple(_counters(n, entries) for n in names))
