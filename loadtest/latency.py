"""Exact latency: every request's response time in an HdrHistogram, mergeable across processes.

Locust keeps response times rounded (10 ms steps above 100 ms, 100 ms above 1 s), so a percentile
from its statistics can be off by up to 10 %, and the tail of a GPU service (tens of ms) hides in
one bucket. Here each generator process records every latency in microseconds with 3 significant
digits (at most 0.1 % relative error, 1 us to 1 h), ships the histogram to the master in Locust's
worker reports (compressed, a few hundred bytes), and the master adds them up: every percentile the
load test reports, the per-step rows, the sweep and the SLO gate come from the merged histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

#: Recorded range and precision: 1 us .. 1 h, 3 significant digits (relative error <= 0.1 %).
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
DIGITS = 3
#: The percentiles a report gives, as (label, percentile).
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


class Latencies:
    """Response times of one process (or merged from many), in milliseconds at the interface."""

    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self.histogram = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)

    def record(self, ms: float) -> None:
        """One latency; values beyond the range are clamped (a 1-hour request is a failure anyway)."""
        us = min(max(int(round(ms * 1000.0)), LOWEST_US), HIGHEST_US)
        self.histogram.record_value(us)

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def add(self, other: Latencies) -> Latencies:
        if other.count:
            self.histogram.add(other.histogram)
        return self

    def percentile(self, q: float) -> float:
        """Latency (ms) at or below which `q` percent of the requests finished; 0 when empty."""
        if not self.count:
            return 0.0
        return self.histogram.get_value_at_percentile(q) / 1000.0

    def summary(self) -> LatencySummary:
        if not self.count:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        h = self.histogram
        values = {label: round(self.percentile(q), 3) for label, q in PERCENTILES}
        return LatencySummary(count=self.count, min=round(h.get_min_value() / 1000.0, 3),
                              mean=round(h.get_mean_value() / 1000.0, 3),
                              max=round(h.get_max_value() / 1000.0, 3), **values)

    def encode(self) -> str:
        """Compressed, base64: small enough for every Locust worker report."""
        return self.histogram.encode().decode("ascii") if self.count else ""

    @classmethod
    def decode(cls, text: str | bytes | None) -> Latencies:
        if not text:
            return cls()
        return cls(HdrHistogram.decode(text.encode("ascii") if isinstance(text, str) else text))

    def pop(self) -> Latencies:
        """This histogram's content as a new object, and this one emptied (a report's delta)."""
        out = Latencies()
        out.add(self)
        self.histogram.reset()
        return out

    def copy(self) -> Latencies:
        return Latencies().add(self)


@dataclass(frozen=True)
class LatencySummary:
    """Exact (to 0.1 %) latency figures of a set of requests, milliseconds."""

    count: int
    min: float
    mean: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p95": self.p95,
                "p99": self.p99, "p999": self.p999, "min": self.min, "mean": self.mean,
                "max": self.max}
