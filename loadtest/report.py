"""Summaries of a Locust run, computed from its final JSON statistics (`--json-file`).

Locust's CSV files are written on a timer and can miss the last seconds of a run; the JSON file is
written once at the end with every request's bucketed response time, so percentiles come from it.
The same functions summarize a slice of a run (one step of a ramp) from two snapshots of Locust's
response-time histogram.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Summary:
    """Client-side numbers of a run (or a slice of it), every endpoint aggregated."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    images: int = 0
    images_per_s: float = 0.0
    span_s: float = 0.0
    completed: int = -1  # requests that got an answer (-1: all of `requests`)

    def __post_init__(self) -> None:
        if self.completed < 0:
            self.completed = self.requests

    @property
    def error_rate(self) -> float:
        total = self.requests
        return self.failures / total if total else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["error_rate"] = round(self.error_rate, 6)
        return out

    def metrics(self) -> dict[str, float | None]:
        """What SLO thresholds compare against; latency is unknown when nothing succeeded."""
        measured = self.requests > self.failures
        return {
            "p50_ms": self.p50_ms if measured else None,
            "p95_ms": self.p95_ms if measured else None,
            "p99_ms": self.p99_ms if measured else None,
            "error_rate": self.error_rate if self.requests else None,
            "rps": self.rps, "images_per_s": self.images_per_s,
        }

    def lines(self) -> list[str]:
        unanswered = self.requests - self.completed
        return [
            f"requests {self.requests}, failures {self.failures}, {self.rps:.2f} req/s, "
            f"{self.images_per_s:.2f} images/s"
            + (f" ({unanswered} never answered: see failures)" if unanswered else ""),
            f"latency ms: p50 {self.p50_ms:.0f}  p90 {self.p90_ms:.0f}  p95 {self.p95_ms:.0f}  "
            f"p99 {self.p99_ms:.0f}  avg {self.avg_ms:.0f}  max {self.max_ms:.0f}",
        ]


def percentile(histogram: Mapping[float, int], total: int, q: float) -> float:
    """Smallest bucket value with at least q of the requests at or below it (Locust's definition)."""
    if total == 0 or not histogram:
        return 0.0
    rank = q * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def from_histogram(hist: Mapping[float, int], *, requests: int, failures: int, total_ms: float,
                   max_ms: float, images: int, span_s: float) -> Summary:
    """A summary from a response-time histogram and counters over a span of `span_s` seconds."""
    rate = (lambda n: n / span_s) if span_s > 0 else (lambda n: 0.0)

    def pct(q: float) -> float:
        # Locust rounds times above 100 ms to 10 ms buckets (above 1 s to 100 ms): 167 ms counts
        # as 170, so a bucketed percentile may exceed the exact maximum; it never really does.
        value = percentile(hist, requests, q)
        return min(value, max_ms) if max_ms > 0 else value

    return Summary(
        requests=requests, failures=failures, rps=rate(requests),
        p50_ms=pct(0.50), p90_ms=pct(0.90), p95_ms=pct(0.95), p99_ms=pct(0.99),
        avg_ms=total_ms / requests if requests else 0.0, max_ms=max_ms, images=images,
        images_per_s=rate(images), span_s=span_s)


#: Entries the users record that are not answered requests: a user that could not start, and
#: open-loop requests still in flight when the run ended. They count as requests and failures
#: (so the error rate shows them) but not in latency or throughput.
UNANSWERED = ("setup", "unfinished")


def summarize(entries: Iterable[Mapping[str, Any]]) -> Summary:
    """Aggregate every endpoint of Locust's JSON statistics (or serialized StatsEntry dicts).

    Throughput is measured over the span between the first request's start and the last
    request's end; images are the sum of `response_length`, which the users set to the batch size.
    """
    hist: Counter = Counter()
    requests = failures = images = 0
    unanswered = unanswered_failures = 0
    total_time = max_ms = 0.0
    starts, ends = [], []
    for e in entries:
        if e.get("name") in UNANSWERED:
            unanswered += e["num_requests"]
            unanswered_failures += e["num_failures"]
            continue
        requests += e["num_requests"]
        failures += e["num_failures"]
        images += e.get("total_content_length", 0) or 0
        total_time += e["total_response_time"]
        max_ms = max(max_ms, e["max_response_time"] or 0.0)
        hist.update({float(k): v for k, v in e["response_times"].items()})
        if e["num_requests"] and e.get("last_request_timestamp"):
            starts.append(e["start_time"])
            ends.append(e["last_request_timestamp"])
    span = (max(ends) - min(starts)) if starts else 0.0
    summary = from_histogram(hist, requests=requests, failures=failures, total_ms=total_time,
                             max_ms=max_ms, images=images, span_s=span)
    summary.requests += unanswered
    summary.failures += unanswered_failures
    return summary


def read_summary(json_path: Path) -> Summary:
    return summarize(json.loads(Path(json_path).read_text()))


def read_failures(csv_prefix: Path) -> list[dict[str, str]]:
    """Locust's failures CSV (`<prefix>_failures.csv`) as rows; empty when there is none."""
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


_TYPE = re.compile(r"^([A-Za-z_][\w.]*)\(")


def error_type(error: str) -> str:
    """`ServerUnavailableError('...')` -> `ServerUnavailableError`; other texts stay as they are."""
    match = _TYPE.match(error.strip())
    return match.group(1) if match else error.strip()[:80]


def failures_by_type(errors: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Group Locust's error records (`error`, `occurrences`) by exception type, with one example."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in errors:
        error = str(row.get("error") or row.get("Error") or "")
        count = int(row.get("occurrences") or row.get("Occurrences") or 0)
        entry = grouped.setdefault(error_type(error), {"count": 0, "example": error[:300]})
        entry["count"] += count
    return dict(sorted(grouped.items(), key=lambda kv: -kv[1]["count"]))
