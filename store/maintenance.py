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

import pyarrow as pa
from deltalake import DeltaTable

from store.delta import APP_ID, writer_properties
from store.errors import InvalidRequest, StoreError
from store.location import Location
from store.rows import decode_tables, num_rows
from store.schema import TABLES
from store.wal import scan

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
    """Bin-pack each partition's small files into files of about ``target_size``."""
    out = {}
    for name, dt in _tables(root).items():
        metrics = dt.optimize.compact(
            target_size=target_size, writer_properties=writer_properties()
        )
        out[name] = {
            "files_removed": int(metrics.get("numFilesRemoved", 0)),
            "files_added": int(metrics.get("numFilesAdded", 0)),
            "partitions_optimized": int(metrics.get("partitionsOptimized", 0)),
        }
    return out


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
    """Per table and use case: rows, files, bytes, Delta version; plus rows still in
    the write-ahead log (acknowledged, not yet flushed)."""
    rows: list[dict[str, Any]] = []
    tables = _tables(root)
    location = Location.parse(root)
    wal_records = [] if location.remote else scan(location.path / "wal", repair=False)[0]
    for name, dt in tables.items():
        version = dt.version()
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        per: dict[str, dict[str, Any]] = {}
        for a in actions:
            uc = a.get("partition.use_case") or "-"
            r = per.setdefault(
                uc, {"table": name, "use_case": uc, "rows": 0, "files": 0, "bytes": 0}
            )
            r["rows"] += int(a.get("num_records") or 0)
            r["files"] += 1
            r["bytes"] += int(a.get("size_bytes") or 0)
        applied = dt.transaction_version(APP_ID) or 0
        pending = sum(
            num_rows(decode_tables(rec.payload).get(name, {}))
            for rec in wal_records
            if rec.lsn > applied
        )
        for r in sorted(per.values(), key=lambda r: r["use_case"]):
            r["version"] = version
            rows.append(r)
        if pending:
            rows.append(
                {
                    "table": name,
                    "use_case": "(unflushed)",
                    "rows": pending,
                    "files": 0,
                    "bytes": 0,
                    "version": version,
                }  # fmt: skip
            )
        if not per and not pending:
            rows.append(
                {
                    "table": name,
                    "use_case": "-",
                    "rows": 0,
                    "files": 0,
                    "bytes": 0,
                    "version": version,
                }  # fmt: skip
            )
    return rows
