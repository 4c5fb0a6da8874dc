"""Service-level thresholds that gate a release: a run passes only if every given threshold holds.

The same check runs in `python -m loadtest` (on the final report) and inside the locustfile at the
end of a plain or distributed Locust run (so a Kubernetes master Job fails too).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Exit code of a run that completed but missed a threshold (1 stays Locust's "requests failed").
SLO_EXIT_CODE = 3


@dataclass(frozen=True)
class Thresholds:
    """Upper bounds on latency and error rate, lower bounds on throughput; None means unchecked."""

    max_p50_ms: float | None = None
    max_p95_ms: float | None = None
    max_p99_ms: float | None = None
    max_error_rate: float | None = None
    min_rps: float | None = None
    min_images_per_s: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_options(cls, options: Any) -> Thresholds:
        """From an argparse namespace (CLI or Locust's parsed options) with the same names."""
        return cls(**{f.name: getattr(options, f.name, None) for f in fields(cls)})


def evaluate(metrics: dict[str, float], thresholds: Thresholds) -> list[str]:
    """Human-readable violations; `metrics` has p50_ms, p95_ms, p99_ms, error_rate, rps, images_per_s.

    A run with no completed request violates every latency and throughput threshold: no evidence
    is not a pass.
    """
    violations = []
    for name, bound in thresholds.as_dict().items():
        kind, metric = name.split("_", 1)
        value = metrics.get(metric)
        if value is None:
            violations.append(f"{metric}: not measured (threshold {bound:g})")
        elif kind == "max" and value > bound:
            violations.append(f"{metric} {value:g} > {bound:g}")
        elif kind == "min" and value < bound:
            violations.append(f"{metric} {value:g} < {bound:g}")
    return violations
