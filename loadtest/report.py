"""Summaries of a Locust run, computed from its final JSON statistics (`--json-file`).

Locust's CSV files are written on a timer and can miss the last seconds of a run; the JSON file is
written once at the end with every request's bucketed response time, so percentiles come from it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Summary:
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"requests {self.requests}, failures {self.failures}, {self.rps:.2f} req/s",
            f"latency ms: p50 {self.p50_ms:.0f}  p90 {self.p90_ms:.0f}  p95 {self.p95_ms:.0f}  "
            f"p99 {self.p99_ms:.0f}  avg {self.avg_ms:.0f}  max {self.max_ms:.0f}",
        ]


def percentile(histogram: Counter, total: int, q: float) -> float:
    """Smallest bucket value with at least q of the requests at or below it (Locust's definition)."""
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def summarize(entries: list[dict]) -> Summary:
    """Aggregate every endpoint of Locust's JSON statistics."""
    hist: Counter = Counter()
    requests = failures = 0
    total_time = max_ms = 0.0
    starts, ends = [], []
    for e in entries:
        requests += e["num_requests"]
        failures += e["num_failures"]
        total_time += e["total_response_time"]
        max_ms = max(max_ms, e["max_response_time"] or 0.0)
        hist.update({float(k): v for k, v in e["response_times"].items()})
        if e["num_requests"]:
            starts.append(e["start_time"])
            ends.append(e["last_request_timestamp"])
    span = (max(ends) - min(starts)) if starts else 0.0
    return Summary(
        requests=requests, failures=failures, rps=requests / span if span > 0 else 0.0,
        p50_ms=percentile(hist, requests, 0.50), p90_ms=percentile(hist, requests, 0.90),
        p95_ms=percentile(hist, requests, 0.95), p99_ms=percentile(hist, requests, 0.99),
        avg_ms=total_time / requests if requests else 0.0, max_ms=max_ms)


def read_summary(json_path: Path) -> Summary:
    return summarize(json.loads(Path(json_path).read_text()))


def read_failures(csv_prefix: Path) -> list[dict[str, str]]:
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))
