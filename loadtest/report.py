"""A run's figures: request counts and throughput from Locust's statistics, latency from the exact
histogram (`loadtest.latency`), and the failures grouped by type.

Locust's own statistics stay what they are (its CSV and HTML are written as usual); they give the
counts, the images (users set response_length to the batch size) and the time span. Percentiles
never come from them: Locust rounds response times (10 ms steps above 100 ms, 100 ms above 1 s).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.latency import Latencies, LatencySummary

#: Entries the users record that are not answered requests: a user that could not start, and
#: open-loop requests still in flight when the run ended. They count as requests and failures
#: (so the error rate shows them) but not in latency or throughput.
UNANSWERED = ("setup", "unfinished")


@dataclass(frozen=True)
class Throughput:
    """How many requests, how many failed, over which span, at what rate."""

    requests: int  # every request, unanswered ones included
    failures: int
    unanswered: int  # part of `failures`: never answered (setup failed, unfinished at the end)
    images: int  # images in answered requests that succeeded
    span_s: float  # first request's start to last request's end
    requests_per_s: float  # answered requests / span
    images_per_s: float
    error_rate: float  # failures / requests

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, requests: int, failures: int, unanswered: int, images: int,
           span_s: float) -> Throughput:
        answered = requests - unanswered
        return cls(requests=requests, failures=failures, unanswered=unanswered, images=images,
                   span_s=round(span_s, 3),
                   requests_per_s=round(answered / span_s, 3) if span_s > 0 else 0.0,
                   images_per_s=round(images / span_s, 3) if span_s > 0 else 0.0,
                   error_rate=round(failures / requests, 6) if requests else 0.0)


def throughput(entries: Iterable[Mapping[str, Any]]) -> Throughput:
    """Aggregate every endpoint of Locust's statistics (`StatsEntry.serialize()` dicts)."""
    requests = failures = images = unanswered = 0
    starts, ends = [], []
    for e in entries:
        requests += e["num_requests"]
        failures += e["num_failures"]
        if e.get("name") in UNANSWERED:
            unanswered += e["num_requests"]
            continue
        images += e.get("total_content_length", 0) or 0
        if e["num_requests"] and e.get("last_request_timestamp"):
            starts.append(e["start_time"])
            ends.append(e["last_request_timestamp"])
    span = (max(ends) - min(starts)) if starts else 0.0
    return Throughput.of(requests, failures, unanswered, images, span)


def metrics(flow: Mapping[str, Any], latency: Mapping[str, Any]) -> dict[str, float | None]:
    """What SLO thresholds compare against (from a report's `throughput` and `latency_ms`);
    latency is unknown when no request succeeded: no evidence is not a pass."""
    measured = bool(latency.get("count"))
    return {"p50_ms": latency["p50"] if measured else None,
            "p95_ms": latency["p95"] if measured else None,
            "p99_ms": latency["p99"] if measured else None,
            "error_rate": flow["error_rate"] if flow["requests"] else None,
            "rps": flow["requests_per_s"], "images_per_s": flow["images_per_s"]}


def lines(flow: Throughput, latency: LatencySummary) -> list[str]:
    """The two summary lines a run prints."""
    return [
        f"requests {flow.requests}, failures {flow.failures}, {flow.requests_per_s:.2f} req/s, "
        f"{flow.images_per_s:.2f} images/s"
        + (f" ({flow.unanswered} never answered: see failures)" if flow.unanswered else ""),
        f"latency ms (exact, {latency.count} successful requests): p50 {latency.p50:.1f}  "
        f"p90 {latency.p90:.1f}  p95 {latency.p95:.1f}  p99 {latency.p99:.1f}  "
        f"mean {latency.mean:.1f}  max {latency.max:.1f}",
    ]


def summary_of(entries: Iterable[Mapping[str, Any]], latencies: Latencies) -> dict[str, Any]:
    """`{"throughput": ..., "latency_ms": ...}`: the figures of a run or a step, each once."""
    return {"throughput": throughput(entries).as_dict(),
            "latency_ms": latencies.summary().as_dict()}


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
