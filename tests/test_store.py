"""The storage engine on a real Delta table on disk: durability, recovery, idempotency,
snapshots, compaction and vacuum."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ingest.normalize import build_batch
from ingest.parse import validate
from store.delta import APP_ID
from store.engine import Store, StoreOptions
from store.errors import StoreLocked
from store.maintenance import compact, table_stats, vacuum
from store.reader import Reader
from store.rows import Columns
from store.schema import INTERACTIONS_TABLE
from store.wal import list_segments, read_segment
from tests.conftest import interaction

SLOW_FLUSH = StoreOptions(flush_interval_s=3600)  # flush only when a test says so


def rows(n: int, start: int = 0, **over: object) -> Columns:
    items = [validate(interaction(i, id=f"i{i}", **over)) for i in range(start, start + n)]
    return build_batch(items, source="api").interactions()


def count(store: Store, where: str = "TRUE") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM interactions WHERE {where}")["n"][0].as_py())


def ids(store: Store) -> list[str]:
    return sorted(store.query("SELECT id FROM interactions").column("id").to_pylist())


def test_ack_means_in_the_log_before_the_table(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(5)).result()
    # Visible at once, from the in-memory tail; not yet in Delta.
    assert count(store) == 5
    assert DeltaTable(str(data_dir / "interactions")).version() == 0
    segs = list_segments(data_dir / "wal")
    assert sum(len(read_segment(s)[0]) for s in segs) == 1
    store._wal.close()  # type: ignore[union-attr]  # simulate a crash: no final flush
    store._release_lock()
    reopened = Store(data_dir, options=SLOW_FLUSH)
    assert ids(reopened) == sorted(f"i{i}" for i in range(5))
    reopened.close()


def test_recovery_replays_only_the_unapplied_part(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(3)).result()
    store.flush()
    store.write(INTERACTIONS_TABLE, rows(2, start=3)).result()
    applied = DeltaTable(str(data_dir / "interactions")).transaction_version(APP_ID)
    assert applied == 1
    store._wal.close()  # type: ignore[union-attr]  # crash after the first flush only
    store._release_lock()
    # Put back a WAL record that Delta already has: recovery must not apply it twice.
    reopened = Store(data_dir, options=SLOW_FLUSH)
    assert ids(reopened) == sorted(f"i{i}" for i in range(5))
    reopened.flush()
    assert ids(reopened) == sorted(f"i{i}" for i in range(5))
    assert DeltaTable(str(data_dir / "interactions")).transaction_version(APP_ID) == 2
    reopened.close()


def test_flush_is_idempotent_when_commit_landed_but_tail_was_not_dropped(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(4)).result()
    store.flush()
    # Re-insert the flushed entry into the tail as if the process died right after commit.
    lsn = DeltaTable(str(data_dir / "interactions")).transaction_version(APP_ID)
    store._apply(lsn, {"interactions": rows(4)}, 1)
    store.flush()
    assert len(ids(store)) == 4
    store.close()


def test_torn_and_corrupt_tail_is_cut_not_replayed(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    for k in range(3):
        store.write(INTERACTIONS_TABLE, rows(1, start=k)).result()
    store._wal.close()  # type: ignore[union-attr]
    store._release_lock()
    (seg,) = list_segments(data_dir / "wal")
    records, end = read_segment(seg)
    assert len(records) == 3
    data = bytearray(seg.read_bytes())
    # Flip one byte inside the third record's payload, then append half a frame.
    third_start = records[2].offset
    data[third_start + 30] ^= 0xFF
    data += data[:25]
    seg.write_bytes(bytes(data))
    reopened = Store(data_dir, options=SLOW_FLUSH)
    assert ids(reopened) == ["i0", "i1"]
    assert reopened.recovery.cut_bytes > 0
    # The cut is on disk: a new write lands after the good records and survives.
    reopened.write(INTERACTIONS_TABLE, rows(1, start=7)).result()
    reopened._wal.close()  # type: ignore[union-attr]
    reopened._release_lock()
    again = Store(data_dir, options=SLOW_FLUSH)
    assert ids(again) == ["i0", "i1", "i7"]
    assert again.recovery.cut_bytes == 0
    again.close()


def test_group_commit_shares_fsyncs(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    futures = []
    barrier = threading.Barrier(16)

    def send(k: int) -> None:
        barrier.wait()
        futures.append(store.write(INTERACTIONS_TABLE, rows(1, start=k)))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result()
    assert count(store) == 16
    assert store._wal.fsyncs < 16  # type: ignore[union-attr]
    store.close()


def test_idempotent_ids_across_tail_table_and_batch(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(3)).result()
    again = store.write(INTERACTIONS_TABLE, rows(3)).result()  # in the tail
    assert again.stored == 0 and sorted(again.duplicate_ids) == ["i0", "i1", "i2"]
    store.flush()
    mixed = store.write(INTERACTIONS_TABLE, rows(5)).result()  # 3 in Delta, 2 new
    assert mixed.stored == 2
    one = rows(1, start=9)
    twice = {k: v * 2 for k, v in one.items()}
    assert store.write(INTERACTIONS_TABLE, twice).result().stored == 1
    store.close()
    with Store(data_dir, options=SLOW_FLUSH) as reopened:  # index rebuilt from Delta
        assert reopened.write(INTERACTIONS_TABLE, rows(6)).result().stored == 1
        assert ids(reopened) == sorted(f"i{i}" for i in [0, 1, 2, 3, 4, 5, 9])


def test_concurrent_same_id_waits_for_the_first_write(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    futures = [store.write(INTERACTIONS_TABLE, rows(1)) for _ in range(10)]
    results = [f.result() for f in futures]
    assert sum(r.stored for r in results) == 1
    assert count(store) == 1
    store.close()


def test_one_writer_per_data_root(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    with pytest.raises(StoreLocked, match="open for writing by another process"):
        Store(data_dir)
    # A read-only handle works beside the writer and sees unflushed acked rows too.
    store.write(INTERACTIONS_TABLE, rows(2)).result()
    with Reader(Store(data_dir, writable=False)) as reader:
        table, _ = reader.run_sql("SELECT count(*) AS n FROM interactions")
        assert table["n"][0].as_py() == 2
    store.close()


def test_hive_layout_readable_without_our_code(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(3)).result()
    store.write(INTERACTIONS_TABLE, rows(2, start=3, use_case="billing")).result()
    store.close()
    parts = sorted(
        str(p.relative_to(data_dir / "interactions").parent)
        for p in (data_dir / "interactions").rglob("*.parquet")
    )
    assert all(p.count("/") == 1 for p in parts)
    assert {p.split("/")[0] for p in parts} == {"use_case=support", "use_case=billing"}
    assert all(p.split("/")[1].startswith("day=") for p in parts)
    dt = DeltaTable(str(data_dir / "interactions"))
    assert dt.metadata().partition_columns == ["use_case", "day"]
    assert pa.table(dt.to_pyarrow_table()).num_rows == 5
    df = pl.read_delta(str(data_dir / "interactions"))
    assert df.height == 5
    assert df.filter(pl.col("use_case") == "billing").height == 2
    assert "RAG Bot" in str(df["labels"].to_list()[0])  # a map (or list of key/value structs)


def test_compaction_keeps_what_readers_see(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    for k in range(6):
        store.write(INTERACTIONS_TABLE, rows(5, start=k * 5)).result()
        store.flush()
    before = store.snapshot()
    expected = sorted(store.query("SELECT id FROM interactions", snapshot=before)["id"].to_pylist())
    assert len(list((data_dir / "interactions").rglob("*.parquet"))) == 6
    result = compact(data_dir)
    assert result["interactions"]["files_removed"] == 6
    assert result["interactions"]["files_added"] == 1
    # The old snapshot still reads the old files; a new one reads the compacted file.
    old = sorted(store.query("SELECT id FROM interactions", snapshot=before)["id"].to_pylist())
    assert old == expected
    store.write(INTERACTIONS_TABLE, rows(1, start=100)).result()
    store.flush()  # the flusher commits on top of the compaction commit
    assert sorted(ids(store)) == sorted([*expected, "i100"])
    # Vacuum within the window deletes nothing a reader could still need.
    assert vacuum(data_dir, retention_hours=1)["interactions"] == []
    assert (
        sorted(store.query("SELECT id FROM interactions", snapshot=before)["id"].to_pylist())
        == expected
    )
    store.close()
    stats = table_stats(data_dir)
    support = next(r for r in stats if r["table"] == "interactions" and r["use_case"] == "support")
    assert support["rows"] == 31
    assert support["files"] == 2


def test_vacuum_refuses_a_window_that_could_break_readers(data_dir: Path) -> None:
    Store(data_dir).close()
    with pytest.raises(Exception, match="retention_hours"):
        vacuum(data_dir, retention_hours=0)


def test_write_failure_acknowledges_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(1)).result()
    real = os.fdatasync

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", broken)
    fut = store.write(INTERACTIONS_TABLE, rows(1, start=1))
    with pytest.raises(Exception, match="could not persist"):
        fut.result()
    assert count(store) == 1
    monkeypatch.setattr(os, "fdatasync", real)
    # The failed id is not marked as stored; a retry stores it.
    assert store.write(INTERACTIONS_TABLE, rows(1, start=1)).result().stored == 1
    store._wal.close()  # type: ignore[union-attr]
    store._release_lock()
    with Store(data_dir, options=SLOW_FLUSH) as reopened:
        assert ids(reopened) == ["i0", "i1"]


def test_a_row_that_cannot_be_stored_is_quarantined_not_blocking(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(2)).result()
    bad = rows(1, start=5)
    bad["usage"] = [{"prompt_tokens": "not a number"}]  # validation never lets this through
    store.write(INTERACTIONS_TABLE, bad).result()
    store.write(INTERACTIONS_TABLE, rows(1, start=9)).result()
    assert ids(store) == ["i0", "i1", "i9"]  # reads go on
    store.flush()
    assert store.status()["pending_rows"] == 0
    (kept,) = (data_dir / "quarantine").iterdir()
    assert b"not a number" in kept.read_bytes()
    store.close()
    with Store(data_dir, options=SLOW_FLUSH) as reopened:
        assert ids(reopened) == ["i0", "i1", "i9"]


def test_time_filters_with_offsets_prune_utc_days(data_dir: Path) -> None:
    from store.reader import filter_from_kwargs

    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(1, created_at="2024-01-01T20:00:00Z")).result()
    store.flush()
    reader = Reader(store)
    # 2024-01-02T01:00+05:00 is 2024-01-01T20:00Z: the row's UTC day must not be pruned.
    page = reader.page(filter_from_kwargs({"from": "2024-01-02T01:00:00+05:00"}))
    assert [r["id"] for r in page.data] == ["i0"]
    page = reader.page(filter_from_kwargs({"to": "2024-01-01T15:00:01-05:00"}))
    assert [r["id"] for r in page.data] == ["i0"]
    store.close()


def test_data_root_with_spaces_and_percent(tmp_path: Path) -> None:
    root = tmp_path / "my data %2k"
    with Store(root, options=SLOW_FLUSH) as store:
        store.write(INTERACTIONS_TABLE, rows(3)).result()
        store.flush()
        assert store.flush_error is None
        assert ids(store) == ["i0", "i1", "i2"]
    with Store(root, options=SLOW_FLUSH) as store:
        assert ids(store) == ["i0", "i1", "i2"]


def test_cut_bytes_are_kept_aside(data_dir: Path) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(1)).result()
    store._wal.close()  # type: ignore[union-attr]
    store._release_lock()
    (seg,) = list_segments(data_dir / "wal")
    seg.write_bytes(seg.read_bytes() + b"garbage tail")
    with Store(data_dir, options=SLOW_FLUSH) as reopened:
        assert ids(reopened) == ["i0"]
    (aside,) = (data_dir / "wal").glob("cut-*.bin")
    assert aside.read_bytes() == b"garbage tail"


def test_state_lost_after_a_durable_write_stops_writes_until_restart(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(data_dir, options=SLOW_FLUSH)

    def broken(records: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(store._wal, "_on_durable", broken)
    with pytest.raises(Exception, match="restart needed"):
        store.write(INTERACTIONS_TABLE, rows(1)).result()
    with pytest.raises(Exception, match="restart needed"):
        store.write(INTERACTIONS_TABLE, rows(1, start=1)).result()
    assert store.status()["wal_error"]  # /readyz answers 503
    store._wal.close()  # type: ignore[union-attr]
    store._release_lock()
    with Store(data_dir, options=SLOW_FLUSH) as reopened:  # the durable record is replayed
        assert ids(reopened) == ["i0"]
        assert reopened.write(INTERACTIONS_TABLE, rows(1)).result().stored == 0


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_pages_walk_days_in_order_with_old_unflushed_rows(
    data_dir: Path, order: str, limit: int
) -> None:
    """The list reads files a few days at a time; rows of every day, flushed or not,
    still come back exactly once and in order."""
    from store.filters import Filter

    store = Store(data_dir, options=SLOW_FLUSH)
    items = []
    for day in range(12):
        for k in range(day % 4):  # 0 to 3 rows a day, some days empty
            when = f"2026-03-{day + 1:02d}T0{k}:00:00Z"
            items.append(validate(interaction(day, id=f"d{day:02d}-{k}", created_at=when)))
    store.write(INTERACTIONS_TABLE, build_batch(items, source="api").interactions()).result()
    store.flush()
    late = [validate(interaction(0, id=f"late-{d}", created_at=f"2026-03-{d:02d}T12:00:00Z"))
            for d in (1, 6, 12, 20)]  # fmt: skip
    store.write(INTERACTIONS_TABLE, build_batch(late, source="api").interactions()).result()
    reader = Reader(store)
    every = [r["id"] for r in store.query("SELECT id, created_at FROM interactions").to_pylist()]
    want = sorted(
        store.query("SELECT id, created_at FROM interactions").to_pylist(),
        key=lambda r: (r["created_at"], r["id"]),
        reverse=order == "desc",
    )
    got: list[str] = []
    after = None
    while True:
        page = reader.page(Filter(), limit=limit, order=order, after=after)
        got += [r["id"] for r in page.data]
        if not page.has_more:
            break
        after = page.next_cursor
    assert got == [r["id"] for r in want] and len(got) == len(every)
    store.close()


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_label_index_lookups_equal_full_scans(data_dir: Path) -> None:
    """Lookups that the on-disk index narrows return exactly what a full scan returns."""
    from store.filters import filter_from_kwargs

    store = Store(data_dir, options=SLOW_FLUSH)
    for part in range(3):  # three files, the first with several row groups
        n = 5000 if part == 0 else 300
        items = [
            validate(interaction(i, id=f"x{part}-{i}", created_at=f"2026-04-0{part + 1}T00:00:00Z",
                                 labels={"customer": f"c{i % 2500}", "tier": f"t{i % 3}",
                                         "part": str(part)}))
            for i in range(n)
        ]  # fmt: skip
        store.write(INTERACTIONS_TABLE, build_batch(items, source="api").interactions()).result()
        store.flush()
    files = [f.path for f in store.snapshot().tables["interactions"].files]
    assert store.index is not None and store.index.unindexed(files) == []  # indexed at flush
    hits, _ = store.index.candidates(
        [("customer", ("c5",))], use_cases=None, since=None, until=None, desc=True, limit=100
    )
    assert {h.rn for h in hits} == {5, 2505} and hits[0].path == files[0] or hits
    assert store.index.candidates(
        [("customer", ("nope",))], use_cases=None, since=None, until=None, desc=True, limit=100
    ) == ([], None)
    reader = Reader(store)
    cases = [
        {"label": "customer:c5"},
        {"label": ["customer:c5|c17", "tier:t1"]},
        {"label": "part:1"},
        {"label": "customer:nope"},
        {"label": ["customer:c5", "part:0"], "from": "2026-04-01"},
    ]
    for kw in cases:
        flt = filter_from_kwargs(kw)
        where, params = flt.where()
        want = sorted(
            r["id"] for r in store.query(f"SELECT id FROM interactions WHERE {where}", params)
            .to_pylist()
        )  # fmt: skip
        got: list[str] = []
        after = None
        while True:
            page = reader.page(flt, limit=7, after=after)
            got += [r["id"] for r in page.data]
            if not page.has_more:
                break
            after = page.next_cursor
        assert sorted(got) == want and len(got) == len(set(got)), kw
    store.close()


def test_looked_up_ids_carry_bloom_filters(data_dir: Path) -> None:
    """A point read's feedback query skips the row groups without its id (bloom
    filters on the id columns; nothing else pays for them)."""
    import pyarrow.parquet as pq

    from ingest.feedback import FeedbackIn, feedback_rows
    from store.schema import FEEDBACK_TABLE

    store = Store(data_dir, options=SLOW_FLUSH)
    store.write(INTERACTIONS_TABLE, rows(3)).result()
    fb, _ = feedback_rows([(FeedbackIn(completion_id="i1", metric="m", value=1), "support")])
    store.write(FEEDBACK_TABLE, fb).result()
    store.flush()
    for table, looked_up in (("interactions", "id"), ("feedback", "completion_id")):
        (path,) = (data_dir / table).rglob("*.parquet")
        group = pq.ParquetFile(path).metadata.row_group(0)
        blooms = {group.column(i).path_in_schema for i in range(group.num_columns)
                  if group.column(i).bloom_filter_offset is not None}  # fmt: skip
        assert looked_up in blooms and "messages" not in blooms and "metric" not in blooms
    found = store.query("SELECT metric FROM feedback WHERE completion_id = 'i1'")
    assert found.column("metric").to_pylist() == ["m"]
    store.close()
