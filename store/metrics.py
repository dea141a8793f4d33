"""Counters and latency histograms the store keeps for ``/metrics`` (``api.metrics``
turns them into Prometheus families). Plain Python, thread-safe, no dependency."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Seconds: from a fast flush to a slow compaction.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    __slots__ = ("counts", "sum", "n", "_lock")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.n = 0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            self.counts[i] += 1
            self.sum += seconds
            self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of observations ≤ it), ending with +Inf."""
        with self._lock:
            counts = list(self.counts)
        out, acc = [], 0
        for bound, c in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            acc += c
            out.append((bound, acc))
        return out


class StoreMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ingested_rows: defaultdict[str, int] = defaultdict(int)
        self.ingested_bytes: defaultdict[str, int] = defaultdict(int)
        self.deleted_rows: defaultdict[tuple[str, str], int] = defaultdict(int)  # (table, why)
        self.tombstones = 0
        self.flush_seconds = Histogram()
        self.maintenance_seconds: defaultdict[str, Histogram] = defaultdict(Histogram)

    def ingested(self, table: str, rows: int, nbytes: int) -> None:
        with self._lock:
            self.ingested_rows[table] += rows
            self.ingested_bytes[table] += nbytes

    def deleted(self, table: str, why: str, rows: int) -> None:
        with self._lock:
            self.deleted_rows[(table, why)] += rows

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int],
                                dict[str, Histogram]]:  # fmt: skip
        """Copies of the counters (another thread may be adding keys)."""
        with self._lock:
            return (dict(self.ingested_rows), dict(self.ingested_bytes),
                    dict(self.deleted_rows), dict(self.maintenance_seconds))  # fmt: skip

    def timer(self, kind: str) -> Histogram:
        with self._lock:
            return self.maintenance_seconds[kind]
