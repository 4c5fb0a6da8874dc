"""Server-side numbers from Triton's statistics: how requests were batched and where time went."""

from __future__ import annotations

from dataclasses import dataclass

import tritonclient.grpc as grpcclient


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model since the server loaded it."""

    inference_count: int  # images (batch rows) inferred
    execution_count: int  # model executions (batches run)
    success_count: int  # requests
    queue_ns: int
    compute_ns: int

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


def model_stats(url: str, model: str) -> ModelStats:
    """Sum the statistics of every loaded version of `model` (warmup requests included)."""
    with grpcclient.InferenceServerClient(url) as triton:
        response = triton.get_inference_statistics(model, as_json=True)
    totals = dict(inference_count=0, execution_count=0, success_count=0, queue_ns=0, compute_ns=0)
    for entry in response.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        totals["inference_count"] += int(entry.get("inference_count", 0))
        totals["execution_count"] += int(entry.get("execution_count", 0))
        totals["success_count"] += int(stats.get("success", {}).get("count", 0))
        totals["queue_ns"] += int(stats.get("queue", {}).get("ns", 0))
        totals["compute_ns"] += int(stats.get("compute_infer", {}).get("ns", 0))
    return ModelStats(**totals)
