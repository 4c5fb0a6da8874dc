"""Server-side numbers from Triton's statistics: how requests were batched and where time went.

Take a snapshot before and after a run and subtract: the difference covers exactly the run. The
client's share of a request's latency is what is left after the server's `request_ns` (time from
receipt to response inside Triton, queue and compute included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tritonclient.grpc as grpcclient


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model since the server loaded it."""

    inference_count: int  # images (batch rows) inferred
    execution_count: int  # model executions (batches run)
    success_count: int  # requests
    queue_ns: int
    compute_ns: int  # compute_infer: the model's own execution
    request_ns: int = 0  # success: whole request inside the server
    compute_input_ns: int = 0
    compute_output_ns: int = 0
    fail_count: int = 0

    @property
    def avg_batch(self) -> float:
        return self.inference_count / self.execution_count if self.execution_count else 0.0

    def __sub__(self, before: ModelStats) -> ModelStats:
        return ModelStats(*(getattr(self, f) - getattr(before, f) for f in self.__dataclass_fields__))

    @property
    def queue_ms_per_request(self) -> float:
        return self.queue_ns / self.success_count / 1e6 if self.success_count else 0.0

    @property
    def compute_ms_per_request(self) -> float:
        return self.compute_ns / self.success_count / 1e6 if self.success_count else 0.0

    @property
    def server_ms_per_request(self) -> float:
        return self.request_ns / self.success_count / 1e6 if self.success_count else 0.0


def stats_from_response(response: dict[str, Any]) -> ModelStats:
    """Sum every version in a statistics response (gRPC `as_json=True` or HTTP JSON)."""
    totals = dict(inference_count=0, execution_count=0, success_count=0, queue_ns=0, compute_ns=0,
                  request_ns=0, compute_input_ns=0, compute_output_ns=0, fail_count=0)
    for entry in response.get("model_stats", []):
        stats = entry.get("inference_stats", {})

        def part(name: str, key: str, _stats: dict = stats) -> int:
            return int(_stats.get(name, {}).get(key, 0))

        totals["inference_count"] += int(entry.get("inference_count", 0))
        totals["execution_count"] += int(entry.get("execution_count", 0))
        totals["success_count"] += part("success", "count")
        totals["request_ns"] += part("success", "ns")
        totals["fail_count"] += part("fail", "count")
        totals["queue_ns"] += part("queue", "ns")
        totals["compute_ns"] += part("compute_infer", "ns")
        totals["compute_input_ns"] += part("compute_input", "ns")
        totals["compute_output_ns"] += part("compute_output", "ns")
    return ModelStats(**totals)


def model_stats(url: str, model: str) -> ModelStats:
    """Sum the statistics of every loaded version of `model` (warmup requests included)."""
    with grpcclient.InferenceServerClient(url) as triton:
        response = triton.get_inference_statistics(model, as_json=True)
    return stats_from_response(response)
