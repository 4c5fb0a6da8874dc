"""Exact latency: every request's response time in a log-bucket histogram, mergeable across processes.

Locust keeps response times rounded (10 ms steps above 100 ms, 100 ms above 1 s), so a percentile
from its statistics can be off by up to 10 %, and the tail of a GPU service (tens of ms) hides in
one bucket. Here each generator process counts every latency in geometric buckets 0.15 % wide (so a
percentile is within 0.075 % of the true sample; min, max and mean are kept exactly), ships its
counts to the master in Locust's worker reports (compressed, a few kilobytes), and the master adds
them up: every percentile the load test reports, the per-step rows, the sweep and the SLO gate come
from the merged histogram. It is HdrHistogram's idea in a few lines of plain Python: the PyPI
port drags in a build tool that needs a setuptools without `pkg_resources`, which TF Hub still uses.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass

#: Bucket i holds [GROWTH**i, GROWTH**(i+1)) ms; its value is the geometric middle of that range.
GROWTH = 1.0015
_LOG_GROWTH = math.log(GROWTH)
#: Latencies below this (ms) count as this: a loopback round trip is never faster.
FLOOR_MS = 1e-3
#: The percentiles a report gives, as (label, percentile).
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


def _bucket(ms: float) -> int:
    return math.floor(math.log(max(ms, FLOOR_MS)) / _LOG_GROWTH)


def _value(bucket: int) -> float:
    return math.exp((bucket + 0.5) * _LOG_GROWTH)


class Latencies:
    """Response times of one process (or merged from many), in milliseconds."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, ms: float) -> None:
        self.counts[_bucket(ms)] += 1
        self.count += 1
        self.total += ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)

    def add(self, other: Latencies) -> Latencies:
        if other.count:
            self.counts.update(other.counts)
            self.count += other.count
            self.total += other.total
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> float:
        """Latency (ms) at or below which `q` percent of the requests finished (nearest rank, as
        HdrHistogram defines it); 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(int(q * self.count / 100.0 + 0.5), 1)
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(max(_value(bucket), self.min), self.max)
        return self.max

    def summary(self) -> LatencySummary:
        if not self.count:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        values = {label: round(self.percentile(q), 3) for label, q in PERCENTILES}
        return LatencySummary(count=self.count, min=round(self.min, 3),
                              mean=round(self.total / self.count, 3), max=round(self.max, 3),
                              **values)

    def encode(self) -> str:
        """Compressed, base64: small enough for every Locust worker report."""
        if not self.count:
            return ""
        buckets = sorted(self.counts)
        deltas = [b - a for a, b in zip([0, *buckets[:-1]], buckets, strict=True)]
        body = {"b": deltas, "c": [self.counts[b] for b in buckets], "n": self.count,
                "sum": self.total, "min": self.min, "max": self.max}
        return base64.b64encode(zlib.compress(json.dumps(body).encode(), 9)).decode("ascii")

    @classmethod
    def decode(cls, text: str | bytes | None) -> Latencies:
        out = cls()
        if not text:
            return out
        body = json.loads(zlib.decompress(base64.b64decode(text)))
        bucket = 0
        for delta, count in zip(body["b"], body["c"], strict=True):
            bucket += delta
            out.counts[bucket] = count
        out.count, out.total, out.min, out.max = body["n"], body["sum"], body["min"], body["max"]
        return out

    def pop(self) -> Latencies:
        """This histogram's content as a new object, and this one emptied (a report's delta)."""
        out = Latencies().add(self)
        self.__init__()
        return out

    def copy(self) -> Latencies:
        return Latencies().add(self)


@dataclass(frozen=True)
class LatencySummary:
    """Latency figures of a set of requests, milliseconds (percentiles within 0.075 %)."""

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
