"""Where the time went on the server: Triton's inference statistics read before and after a run.

Locust measures what a client sees (preprocessing + serialization + network + server). Triton counts,
per model, how long requests waited in the queue and how long the model computed, and how many
model executions (batches) ran. The difference of two snapshots covers exactly the run, warmup and
earlier runs excluded, so a report can split each request's latency into client + network, queue and
compute, and say what batch size the dynamic batcher achieved. The statistics are read and parsed by
the client (`client.stats`); this module only subtracts and divides.

For an ensemble (a preprocessing step chained to the model), request counts come from the ensemble
and queue/compute time is summed over its composing models; batching is judged by the composing
model that computes longest, not by the ensemble (whose execution_count counts requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from client.stats import ModelStats, model_stats, stats_from_response

EMPTY = ModelStats(0, 0, 0, 0, 0)


def compute_ns(m: ModelStats) -> int:
    """Input copy + the model's execution + output copy."""
    return m.compute_input_ns + m.compute_ns + m.compute_output_ns


@dataclass(frozen=True)
class ServerSnapshot:
    """Statistics of the model under test and, for an ensemble, of its composing models."""

    model: str
    entry: ModelStats
    composing: dict[str, ModelStats] = field(default_factory=dict)

    def __sub__(self, before: ServerSnapshot) -> ServerSnapshot:
        return ServerSnapshot(self.model, self.entry - before.entry,
                              {n: m - before.composing.get(n, EMPTY)
                               for n, m in self.composing.items()})

    def split(self, client_avg_ms: float | None = None, client_requests: int | None = None) -> dict:
        """Per-request milliseconds by stage, the achieved batch size, and a cross-check of counts.

        `client_avg_ms` is the clients' mean latency; what the server did not account for is the
        client's share (preprocessing, serialization) plus the network.
        """
        entry = self.entry
        requests = entry.success_count
        workers = self.composing or {self.model: entry}

        def per_request(ns: float) -> float:
            return round(ns / requests / 1e6, 3) if requests else 0.0

        queue_ns = sum(m.queue_ns for m in workers.values())
        all_compute_ns = sum(compute_ns(m) for m in workers.values())
        infer_ns = sum(m.compute_ns for m in workers.values())
        batcher = max(workers, key=lambda n: compute_ns(workers[n]))
        server_ms = per_request(entry.request_ns)
        out: dict[str, Any] = {
            "requests": requests,
            "failed_requests": entry.fail_count,
            "images": entry.inference_count,
            "executions": workers[batcher].execution_count,
            "avg_batch": round(workers[batcher].avg_batch, 3),
            "batching_model": batcher,
            "server_ms": server_ms,
            "queue_ms": per_request(queue_ns),
            "compute_ms": per_request(all_compute_ns),
            "compute_infer_ms": per_request(infer_ns),
            "compute_io_ms": per_request(all_compute_ns - infer_ns),
            "server_other_ms": round(max(server_ms - per_request(queue_ns)
                                         - per_request(all_compute_ns), 0.0), 3),
        }
        if client_avg_ms is not None and requests:
            out["client_and_network_ms"] = round(max(client_avg_ms - server_ms, 0.0), 3)
        if client_requests is not None:
            # Other traffic on the same server, or requests lost from the statistics, show here.
            out["counts_match"] = abs(requests + out["failed_requests"] - client_requests) <= max(
                2, int(0.01 * client_requests))
        if self.composing:
            out["models"] = {n: {"requests": m.success_count, "executions": m.execution_count,
                                 "queue_ms": per_request(m.queue_ns),
                                 "compute_ms": per_request(compute_ns(m))}
                             for n, m in self.composing.items()}
        return out


class ServerStats:
    """Reads Triton's statistics over gRPC (`host:port`) or HTTP (`http://host:port` or protocol)."""

    def __init__(self, url: str, model: str, protocol: str = "grpc") -> None:
        self.model = model
        self.protocol = "http" if url.startswith(("http://", "https://")) else protocol
        self.url = url.split("://", 1)[-1]
        self._composing: list[str] | None = None

    def _read(self, model: str) -> ModelStats:
        if self.protocol == "grpc":
            return model_stats(self.url, model)
        import tritonclient.http as triton

        with triton.InferenceServerClient(self.url) as client:
            return stats_from_response(client.get_inference_statistics(model))

    def composing_models(self) -> list[str]:
        """Step models of an ensemble (empty for a plain model), read once from its config."""
        if self._composing is None:
            if self.protocol == "grpc":
                import tritonclient.grpc as triton
            else:
                import tritonclient.http as triton
            with triton.InferenceServerClient(self.url) as client:
                config = (client.get_model_config(self.model, as_json=True)
                          if self.protocol == "grpc" else client.get_model_config(self.model))
            config = config.get("config", config)
            steps = config.get("ensemble_scheduling", {}).get("step", [])
            self._composing = list(dict.fromkeys(s["model_name"] for s in steps))
        return self._composing

    def snapshot(self) -> ServerSnapshot:
        """Current cumulative counters; raises tritonclient's exception if the server can't say."""
        names = self.composing_models()
        return ServerSnapshot(self.model, self._read(self.model), {n: self._read(n) for n in names})
