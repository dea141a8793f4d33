"""The server's compaction is tiered, and what it replaces leaves the index.

A pass used to bin-pack every file under 128 MB: while a day's partition grew towards
the target, each pass read and rewrote all of it, and re-indexed all of its rows (the
30-minute soak of 2026-11-29: 36 compactions of a 1.4M-row partition, 44M postings of
dead files in the index, which nothing ever swept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

import store.index as index_module
import store.maintenance as maintenance
from service.maintenance import MaintenanceJob
from store.engine import Store, StoreOptions
from store.maintenance import FANOUT, TARGET_FILE_BYTES, compact_tiered, level_target
from store.schema import INTERACTIONS_TABLE
from tests.test_store import SLOW_FLUSH, ids, rows

MB = 1 << 20


def test_a_partition_waits_for_a_full_level() -> None:
    small = [10_000] * (FANOUT - 1)
    assert level_target(small, [100] * len(small)) == 0
    assert level_target([*small, 10_000], [100] * FANOUT) > 0


def test_the_lowest_full_level_is_merged_and_larger_files_are_not_candidates() -> None:
    # 100 bytes a row: the first level merges into files of FIRST_LEVEL_ROWS rows.
    first = maintenance.FIRST_LEVEL_ROWS * 100
    big = [100 * MB] * 3  # far above the first level: not candidates
    fresh = [first // 4] * FANOUT
    sizes = big + fresh
    n_rows = [s // 100 for s in sizes]
    target = level_target(sizes, n_rows)
    assert target == first
    assert all(s >= target for s in big) and all(s < target // 2 for s in fresh)
    # A level a pass could not merge is skipped; nothing else is due here.
    assert level_target(sizes, n_rows, skip=frozenset({first})) == 0
    # Files of more than half a level's target cannot pair: they belong to the next.
    halves = [first // 2 + 100] * (FANOUT - 1) + [first // 4]
    assert level_target(halves, [s // 100 for s in halves]) == 0
    # Eight files from the first level: the next one, still under the final target.
    second = [first // 2 + 100] * FANOUT
    assert level_target(second, [s // 100 for s in second]) == first * FANOUT
    # Files at the final target are left alone for good.
    done = [TARGET_FILE_BYTES] * 20
    assert level_target(done, [s // 100 for s in done]) == 0


def _first_level_above_the_small_files(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny files are mostly Parquet overhead: set the first level by bytes, so that
    the small files are in it (under half its target) and the one large file is not
    even a candidate (at least its target)."""
    sizes = sorted(DeltaTable(str(data_dir / "interactions")).get_add_actions(flatten=True)
                   .column("size_bytes").to_pylist())  # fmt: skip
    first = 2 * sizes[-2] + 2
    assert sizes[-1] >= first
    monkeypatch.setattr(maintenance, "FIRST_LEVEL_ROWS", 0)
    monkeypatch.setattr(maintenance, "FIRST_LEVEL_MIN_BYTES", first)


def test_tiered_compaction_rewrites_the_small_files_only(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(3000)).result()  # one settled file
    store.flush()
    table = DeltaTable(str(data_dir / "interactions"))
    settled = set(table.file_uris())
    for k in range(FANOUT):  # FANOUT flushes of a few rows
        store.write(INTERACTIONS_TABLE, rows(3, start=10_000 + 10 * k)).result()
        store.flush()
    expected = ids(store)
    _first_level_above_the_small_files(data_dir, monkeypatch)
    table = DeltaTable(str(data_dir / "interactions"))
    assert len(table.file_uris()) == FANOUT + 1
    done = compact_tiered(table)
    # Bins of the first level's size (tiny files are mostly overhead: a few bins).
    assert done["files_removed"] == FANOUT and 1 <= done["files_added"] < FANOUT
    table = DeltaTable(str(data_dir / "interactions"))
    assert settled <= set(table.file_uris())  # the large file was not rewritten
    assert len(table.file_uris()) == 1 + done["files_added"]
    assert compact_tiered(table)["files_removed"] == 0  # nothing due
    store.refresh()
    assert ids(store) == expected
    store.close()


def _live_postings(store: Store) -> tuple[int, int, int]:
    """(dead files, postings, postings of live files) in the index."""
    assert store.index is not None
    with store.index.reading() as db:
        dead = db.execute("SELECT count(*) FROM files WHERE NOT live").fetchone()[0]
        total = db.execute("SELECT count(*) FROM labels").fetchone()[0]
        live = db.execute(
            "SELECT count(*) FROM labels WHERE fid IN (SELECT fid FROM files WHERE live)"
        ).fetchone()[0]
    return int(dead), int(total), int(live)


def test_maintenance_sweeps_what_compaction_replaced_from_the_index(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "SWEEP_MIN_ROWS", 0)
    store = Store(data_dir, options=StoreOptions(flush_interval_s=3600))
    for k in range(FANOUT):
        store.write(INTERACTIONS_TABLE, rows(5, start=10 * k, labels={"topic": "x"})).result()
        store.flush()
    expected = ids(store)
    result = MaintenanceJob(store, 0, 0).run_once(("compact",))
    assert result["compacted"]["interactions"] == FANOUT
    assert result["index"]["files"] == FANOUT  # the steps of `compact` include the sweep
    dead, total, live = _live_postings(store)
    assert (dead, total, live) == (0, 5 * FANOUT, 5 * FANOUT)
    assert ids(store) == expected
    store.close()


def test_the_sweep_waits_until_the_dead_files_are_worth_a_pass(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "SWEEP_MIN_ROWS", 0)
    monkeypatch.setattr(index_module, "SWEEP_CHUNK", 7)  # several chunks, several transactions
    store = Store(data_dir, options=StoreOptions(flush_interval_s=3600))
    store.write(INTERACTIONS_TABLE, rows(3000, labels={"topic": "x", "tier": "y"})).result()
    store.flush()
    for k in range(FANOUT):
        store.write(INTERACTIONS_TABLE, rows(2, start=10_000 + 10 * k, labels={"a": "b"})).result()
        store.flush()
    _first_level_above_the_small_files(data_dir, monkeypatch)
    assert MaintenanceJob(store, 0, 0).run_once(("compact",))["compacted"]["interactions"] == FANOUT
    assert store.index is not None
    # 16 dead rows against 3,016 live: under a quarter, the sweep waits.
    assert _live_postings(store)[0] == FANOUT
    assert store.index.sweep() == {"files": 0, "rows": 0, "labels": 0, "waiting_files": FANOUT}
    assert store.index.sweep(force=True) == {"files": FANOUT, "rows": 0, "labels": 2 * FANOUT}
    assert _live_postings(store) == (0, 6000 + 2 * FANOUT, 6000 + 2 * FANOUT)
    hits, _ = store.index.candidates(
        [("a", ["b"])], use_cases=None, since=None, until=None, desc=True, limit=100
    )
    assert len(hits) == 2 * FANOUT
    store.close()


def test_compaction_runs_on_its_own_between_maintenance_runs(data_dir: Path) -> None:
    """An hour between maintenance runs is an hour of one-second files for every read:
    compaction alone runs every ``compact_interval_s`` in between."""
    import time

    store = Store(data_dir, options=StoreOptions(flush_interval_s=3600))
    for k in range(FANOUT):
        store.write(INTERACTIONS_TABLE, rows(2, start=10 * k)).result()
        store.flush()
    expected = ids(store)
    job = MaintenanceJob(store, 3600, 0, compact_interval_s=0.2)
    job.start()
    try:
        deadline = time.monotonic() + 60
        while not job.last_result and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.stop()
    assert job.last_result["compacted"]["interactions"] == FANOUT
    assert "purged" not in job.last_result and "vacuumed" not in job.last_result
    assert len(DeltaTable(str(data_dir / "interactions")).file_uris()) == 1
    assert ids(store) == expected
    store.close()


def test_a_sweep_of_more_dead_files_than_sqlite_binds_at_once(tmp_path: Path) -> None:
    """Dead files are deleted one statement each, never as one ``IN (…)`` list:
    hundreds of thousands a day retire in a busy store (found in review)."""
    import sqlite3

    index = index_module.Index(tmp_path, "file:///t")
    n = index._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) + 1
    index._transaction(lambda db: db.executemany(
        "INSERT INTO files (path, live, n) VALUES (?, 0, 1)", [(f"f{i}",) for i in range(n)]
    ))  # fmt: skip
    assert index.sweep(force=True)["files"] == n
    assert index._writer.execute("SELECT count(*) FROM files").fetchone()[0] == 0
    index.close()


def _reader(ids: list[str], path_of: str) -> Any:
    """``read`` for ``Index.add``: the rows of one file holding ``ids``, no labels."""
    import pyarrow as pa

    def read(sql: str, paths: list[str]) -> pa.Table:
        if sql is index_module.ROWS_SQL:
            n = len(ids)
            return pa.table({"id": ids, "use_case": ["u"] * n, "session_id": [None] * n,
                             "ts": list(range(n)), "filename": [path_of] * n,
                             "rn": list(range(n))})  # fmt: skip
        return pa.table({"use_case": pa.array([], pa.string()), "kv": pa.array([], pa.int64()),
                         "ts": pa.array([], pa.int64()), "filename": pa.array([], pa.string()),
                         "rn": pa.array([], pa.int64())})  # fmt: skip

    return read


@pytest.mark.parametrize("order", ["retired, then the builder", "the builder, late"])
def test_an_older_file_indexed_late_never_takes_ids_from_their_rewrite(
    tmp_path: Path, order: str
) -> None:
    """A compaction's file (``new``) holds the rows of ``old``. The builder, working
    from an older list, indexes ``old`` after ``new``: the ids must stay with ``new``,
    or they are lost once ``old`` is retired (the 30-minute soak of 2026-11-30 got a
    404 for an acknowledged id)."""
    index = index_module.Index(tmp_path, "file:///t")
    ids = [f"x{i}" for i in range(5)]
    if order == "retired, then the builder":
        index.add(["old"], _reader(ids, "old"))
        index.add(["new"], _reader(ids, "new"))  # the compaction's file, indexed ahead
        index.retire(["new"])  # the view without old is installed
        index.add(["old"], _reader(ids, "old"), newer=False)  # a builder's stale list
    else:
        index.add(["new"], _reader(ids, "new"))
        index.add(["old"], _reader(ids, "old"), newer=False)  # still current, unindexed
        index.retire(["new"])
    found = index.locate(ids)
    assert sorted(found) == ids and {loc.path for loc in found.values()} == {"new"}
    assert index.unindexed(["new"]) == []
    index.close()


def test_ids_moved_by_a_rewrite_are_found_while_it_is_still_being_indexed(
    tmp_path: Path,
) -> None:
    """``add`` commits a rewrite's rows a group of files at a time and reloads its list
    of live files after the last: in between, a reader on another thread sees ids
    pointing to a file it does not know yet. It must read the list again, not answer
    that the interaction does not exist (the soak's 404)."""
    from functools import partial

    index = index_module.Index(tmp_path, "file:///t")
    ids = [f"x{i}" for i in range(5)]
    index.add(["old"], _reader(ids, "old"))
    read = _reader(ids, "new")
    rows, postings = read(index_module.ROWS_SQL, ["new"]), read(index_module.POSTINGS_SQL, ["new"])
    index._transaction(partial(index._add_files, ["new"], rows, postings, True))  # committed
    found = index.locate(ids)
    assert sorted(found) == ids and {loc.path for loc in found.values()} == {"new"}
    index.close()
