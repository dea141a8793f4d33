"""``GET /metrics`` in Prometheus' text format: what the store, the gateway, the HTTP
layer and the maintenance job are doing. Values are read from their own counters at
scrape time (one registry per app), so the hot paths only bump integers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from store.metrics import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestMetrics:
    """Per route template, method and status class: a latency histogram."""

    def __init__(self) -> None:
        self.latency: dict[tuple[str, str, str], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, f"{status // 100}xx")
        h = self.latency.get(key)
        if h is None:
            h = self.latency.setdefault(key, Histogram())
        h.observe(seconds)


def _hist(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add(family: HistogramMetricFamily, values: list[str], h: Histogram) -> None:
    family.add_metric(values, h.cumulative(), h.sum)


class Collector:
    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        store = state.store
        m = store.metrics
        status = store.status()
        ingested_rows, ingested_bytes, deleted_rows, timers = m.snapshot()

        rows = CounterMetricFamily("istore_ingested_records", "Rows made durable, per table",
                                   labels=["table"])  # fmt: skip
        nbytes = CounterMetricFamily("istore_ingested_bytes", "Write-ahead-log bytes of "
                                     "durable rows, per table", labels=["table"])  # fmt: skip
        for table, n in sorted(ingested_rows.items()):
            rows.add_metric([table], n)
            nbytes.add_metric([table], ingested_bytes.get(table, 0))
        yield rows
        yield nbytes

        deleted = CounterMetricFamily("istore_deleted_rows", "Rows removed from the tables, "
                                      "per table and reason (deleted, retention)",
                                      labels=["table", "reason"])  # fmt: skip
        for (table, why), n in sorted(deleted_rows.items()):
            deleted.add_metric([table, why], n)
        yield deleted

        yield GaugeMetricFamily("istore_wal_bytes", "Size of the write-ahead log on disk",
                                value=_wal_bytes(store.wal_dir))  # fmt: skip
        yield GaugeMetricFamily("istore_pending_rows", "Durable rows not yet in the Delta "
                                "tables (flush lag)", value=status["pending_rows"])  # fmt: skip
        yield GaugeMetricFamily("istore_pending_bytes", "Durable bytes not yet in the Delta "
                                "tables", value=status["pending_bytes"])  # fmt: skip
        yield GaugeMetricFamily("istore_flush_failing", "1 while flushes to the tables fail",
                                value=1 if status["flush_error"] else 0)  # fmt: skip

        keys = state.keys
        checks = CounterMetricFamily("istore_key_checks", "New API key secrets: scrypt runs "
                                     "(hashed); requests verified, refused, or throttled "
                                     "(429 without hashing)",
                                     labels=["outcome"])  # fmt: skip
        for outcome, n in sorted(keys.counts.items()):
            checks.add_metric([outcome], n)
        yield checks

        flush = _hist("istore_flush_seconds", "Time to append the log's tail to the Delta "
                      "tables (write and commit)", [])  # fmt: skip
        _add(flush, [], m.flush_seconds)
        yield flush
        maint = _hist("istore_maintenance_seconds", "Maintenance work: whole runs and "
                      "Delta deletes", ["kind"])  # fmt: skip
        for kind, h in sorted(timers.items()):
            _add(maint, [kind], h)
        yield maint

        version = GaugeMetricFamily("istore_table_version", "Delta version", labels=["table"])
        files = GaugeMetricFamily("istore_table_files", "Parquet files in the current "
                                  "version", labels=["table"])  # fmt: skip
        for table, fv in sorted(store.files_views().items()):
            version.add_metric([table], fv.version)
            files.add_metric([table], len(fv.files))
        yield version
        yield files

        req = _hist("istore_request_seconds", "HTTP request latency by route",
                    ["route", "method", "status"])  # fmt: skip
        for (route, method, cls), h in sorted(dict(state.request_metrics.latency).items()):
            _add(req, [route, method, cls], h)
        yield req

        gw = state.gateway_stats
        for name, doc, value in [
            ("istore_gateway_calls", "Chat calls accepted by the gateway", gw.calls),
            ("istore_gateway_upstream_errors", "Gateway calls whose upstream failed",
             gw.upstream_errors),
            ("istore_gateway_logged", "Gateway interactions made durable", gw.logged),
            ("istore_gateway_log_failures", "Gateway interactions that could not be logged",
             gw.log_failures),
        ]:  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)

        job = getattr(state, "maintenance", None)
        if job is not None:
            yield CounterMetricFamily("istore_maintenance_runs", "Maintenance runs", value=job.runs)
            yield CounterMetricFamily("istore_maintenance_failures", "Failed maintenance runs",
                                      value=job.failures)  # fmt: skip
        yield GaugeMetricFamily("istore_arrow_allocated_bytes", "Bytes held by Arrow's pool",
                                value=pa.total_allocated_bytes())  # fmt: skip
        yield GaugeMetricFamily("istore_duckdb_memory_bytes", "Bytes held by DuckDB's buffer "
                                "manager", value=store.duck.memory_bytes())  # fmt: skip
        yield GaugeMetricFamily("istore_python_allocated_blocks", "Python objects' memory "
                                "blocks (sys.getallocatedblocks)",
                                value=sys.getallocatedblocks())  # fmt: skip
        index = store.index.status() if store.index is not None else {"files": 0}
        yield GaugeMetricFamily("istore_index_files", "Data files the on-disk index covers",
                                value=index["files"])  # fmt: skip
        yield GaugeMetricFamily("istore_up_seconds", "Seconds since the app started",
                                value=time.monotonic() - state.started)  # fmt: skip


def _wal_bytes(directory: os.PathLike[str]) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())
    except FileNotFoundError:
        return 0


def registry(state: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(state))  # type: ignore[arg-type]
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
