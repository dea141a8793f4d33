"""Compaction, vacuum and table statistics.

Both maintenance operations are Delta commits (or deletions of files no version
still names within the retention window), so a reader of any snapshot keeps seeing
exactly what it saw: compaction adds the large files and removes the small ones in
one commit; vacuum only deletes files that left the table more than
``retention_hours`` ago, and untracked leftovers of interrupted writes."""

from __future__ import annotations

import math
from datetime import date
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
# The server's compaction is tiered (``compact_tiered``): files are merged a level at a
# time, ``FANOUT`` of a level into one of the next, the first level merging into files
# of about ``FIRST_LEVEL_ROWS`` rows, so a row is rewritten a few times per level instead
# of at every pass while its partition's file grows to the target.
FANOUT = 8
FIRST_LEVEL_ROWS = 1_024
FIRST_LEVEL_MIN_BYTES = 64 << 10  # below this a file's own overhead blurs bytes per row
MAX_LEVELS = 8  # compactions of one partition in a pass, at most


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


def level_target(
    sizes: list[int],
    rows: list[int],
    target_size: int = TARGET_FILE_BYTES,
    skip: frozenset[int] = frozenset(),
) -> int:
    """The ``target_size`` to compact one partition with, or 0 to leave it alone.

    Level k merges with target ``T_k``: ``T_1`` is ``FIRST_LEVEL_ROWS`` rows at the
    partition's bytes per row (at least ``FIRST_LEVEL_MIN_BYTES``), each next level
    ``FANOUT`` times more, up to ``target_size``. Level k's files are those in
    [T_(k-1)/2, T_k/2): any two of them fit in one bin of ``T_k``. The lowest level
    holding ``FANOUT`` files and not in ``skip`` (levels a pass could not merge) is due.

    delta-rs (1.6) reads only files under the target, and packs them newest first in
    commit order, a bin after the other (a larger file ends a run): a level's newest,
    partly filled output is topped up with the files that follow it until it is full,
    so a row is rewritten a few times per level (a model of that packing gives 2–5× the
    ingested bytes at 60-s passes; not yet measured on real tables), not at every pass
    as with one 128 MB target."""
    total_rows = sum(rows)
    if len(sizes) < FANOUT or total_rows <= 0:
        return 0
    per_row = max(sum(sizes) / total_rows, 1.0)
    first = max(int(FIRST_LEVEL_ROWS * per_row), FIRST_LEVEL_MIN_BYTES)
    low, high = 0, min(first, target_size)
    while True:
        if high not in skip and sum(1 for s in sizes if low <= s < high // 2) >= FANOUT:
            return high
        if high >= target_size:
            return 0
        low, high = high // 2, min(high * FANOUT, target_size)


def _partitions(dt: DeltaTable) -> dict[tuple[tuple[str, Any], ...], tuple[list[int], list[int]]]:
    """Per partition (its (column, value) pairs): the sizes and row counts of its files."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    parts = [c for c in actions.column_names if c.startswith("partition.")]
    groups: dict[tuple[tuple[str, Any], ...], tuple[list[int], list[int]]] = {}
    for a in actions.select(["size_bytes", "num_records", *parts]).to_pylist():
        key = tuple((c.removeprefix("partition."), a[c]) for c in parts)
        sizes, rows = groups.setdefault(key, ([], []))
        sizes.append(int(a["size_bytes"] or 0))
        rows.append(int(a["num_records"] or 0))
    return groups


def compact_tiered(dt: DeltaTable, target_size: int = TARGET_FILE_BYTES) -> dict[str, int]:
    """One pass of the server's compaction over ``dt``: in each partition, while a level
    is due (``level_target``), it is compacted with that level's target (its output
    may fill the next level, merged in the same pass). Returns the files removed and
    added and the compactions run."""
    out = {"files_removed": 0, "files_added": 0, "partitions": 0}
    for key, (sizes, rows) in sorted(_partitions(dt).items(), key=lambda kv: str(kv[0])):
        if any(v is None for _, v in key):
            continue  # no filter selects exactly a null partition: left as it is
        filters = [(c, "=", v.isoformat() if isinstance(v, date) else str(v)) for c, v in key]
        stuck: set[int] = set()
        for _ in range(MAX_LEVELS):
            target = level_target(sizes, rows, target_size, frozenset(stuck))
            if not target:
                break
            m = dt.optimize.compact(
                partition_filters=filters or None,
                target_size=target,
                writer_properties=writer_properties(),
            )
            removed = int(m.get("numFilesRemoved", 0))
            out["files_removed"] += removed
            out["files_added"] += int(m.get("numFilesAdded", 0))
            out["partitions"] += 1 if removed else 0
            if not removed:  # nothing could pair up (runs broken by larger files)
                stuck.add(target)
            sizes, rows = _partitions(dt).get(key, ([], []))
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
