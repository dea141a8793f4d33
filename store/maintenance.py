"""Compaction, vacuum and table statistics.

Both maintenance operations are Delta commits (or deletions of files no version
still names within the retention window), so a reader of any snapshot keeps seeing
exactly what it saw: compaction adds the large files and removes the small ones in
one commit; vacuum only deletes files that left the table more than
``retention_hours`` ago, and untracked leftovers of interrupted writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from deltalake import DeltaTable

from store.delta import writer_properties
from store.engine import Store
from store.errors import InvalidRequest, StoreError
from store.location import Location
from store.schema import TABLES

TARGET_FILE_BYTES = 128 << 20
MIN_RETENTION_HOURS = 1.0


def _tables(root: str | Path) -> dict[str, DeltaTable]:
    location = Location.parse(root)
    if not location.exists():
        raise StoreError(f"no store at {location.uri}")
    out = {}
    for name in TABLES:
        if location.is_table(name):
            out[name] = location.open(name)
    return out


def compact(root: str | Path, target_size: int = TARGET_FILE_BYTES) -> dict[str, dict[str, Any]]:
    """Bin-pack each partition's small files into files of about ``target_size``; per
    table what was done: files and bytes replaced and written, partitions rewritten,
    and the files left as they were (alone in their partition, or large enough)."""
    out = {}
    for name, dt in _tables(root).items():
        metrics = dt.optimize.compact(
            target_size=target_size, writer_properties=writer_properties()
        )
        out[name] = {
            "files_removed": int(metrics.get("numFilesRemoved", 0)),
            "files_added": int(metrics.get("numFilesAdded", 0)),
            "partitions_optimized": int(metrics.get("partitionsOptimized", 0)),
            "bytes_removed": _total_size(metrics.get("filesRemoved")),
            "bytes_added": _total_size(metrics.get("filesAdded")),
            "files_kept": int(metrics.get("totalFilesSkipped", 0)),
        }
    return out


def _total_size(stats: Any) -> int:
    """``totalSize`` of delta-rs's file statistics (a JSON string or a dict)."""
    if isinstance(stats, str):
        try:
            stats = orjson.loads(stats)
        except orjson.JSONDecodeError:
            return 0
    return int(stats.get("totalSize", 0)) if isinstance(stats, dict) else 0


def check_retention(retention_hours: float, force: bool = False) -> None:
    if retention_hours < 0 or (retention_hours < MIN_RETENTION_HOURS and not force):
        raise InvalidRequest(
            f"retention_hours: at least {MIN_RETENTION_HOURS:g} hour is kept so that queries "
            f"running on an older snapshot never lose files; got {retention_hours:g} "
            "(a window under an hour needs force: `istore vacuum --force`)",
            param="retention_hours",
        )


def vacuum(
    root: str | Path, retention_hours: float, *, dry_run: bool = False, force: bool = False
) -> dict[str, list[str]]:
    """Delete files that are no longer part of the table and older than the window.
    Under ``MIN_RETENTION_HOURS`` only with ``force``: a query or ``as_of`` export still
    reading an older version may then find its files gone."""
    check_retention(retention_hours, force)
    out = {}
    for name, dt in _tables(root).items():
        out[name] = dt.vacuum(
            retention_hours=math.ceil(retention_hours),
            dry_run=dry_run,
            enforce_retention_duration=False,
        )
    return out


def table_stats(root: str | Path) -> list[dict[str, Any]]:
    """Per table and use case: ``rows``, what queries see (deleted rows left out, rows
    still in the write-ahead log included); ``deleted``, rows deleted but still in the
    files until the next purge (``istore compact``, maintenance); ``unflushed``, rows
    still in the log; the ``files`` and ``bytes`` of the table's current version.
    Tables not partitioned by use case have one line, ``use_case`` "-"."""
    tables = _tables(root)
    out: list[dict[str, Any]] = []
    with Store(root, writable=False) as store:
        snap = store.snapshot()
        for name, dt in tables.items():
            out.extend(_one_table(store, snap, name, dt))
    return out


def _one_table(store: Store, snap: Any, name: str, dt: DeltaTable) -> list[dict[str, Any]]:
    split = "use_case" in TABLES[name].partition_by
    per: dict[str, dict[str, Any]] = {}
    stored: dict[str, int] = {}  # rows in the files and the log, deleted ones included

    def row(uc: str | None) -> dict[str, Any]:
        key = (uc or "-") if split else "-"
        return per.setdefault(key, {"table": name, "use_case": key, "rows": 0, "deleted": 0,
                                    "unflushed": 0, "files": 0, "bytes": 0})  # fmt: skip

    for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
        r = row(a.get("partition.use_case"))
        stored[r["use_case"]] = stored.get(r["use_case"], 0) + int(a.get("num_records") or 0)
        r["files"] += 1
        r["bytes"] += int(a.get("size_bytes") or 0)
    for uc in snap.tables[name].pending.column("use_case").to_pylist():
        r = row(uc)
        r["unflushed"] += 1
        stored[r["use_case"]] = stored.get(r["use_case"], 0) + 1
    seen = store.query(
        f"SELECT use_case, count(*) AS n FROM {name} GROUP BY use_case", snapshot=snap
    ).to_pylist()
    for x in seen:
        row(x["use_case"])["rows"] += int(x["n"])
    if not per:
        row(None)
    version = dt.version()
    for key, r in per.items():  # what the files and the log hold beyond what reads see
        r["deleted"] = max(stored.get(key, 0) - r["rows"], 0)
        r["version"] = version
    return sorted(per.values(), key=lambda r: r["use_case"])
