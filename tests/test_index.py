"""The on-disk index agrees with the tables, whatever happened to either.

Random sequences of ingest, retries, deletes, label changes, retention, compaction,
vacuum, restarts and kill -9 (a child process that dies mid-work) end with the same
check: every interaction the table holds is found through the index where it really
is, nothing else is, and lookups through the index give exactly what full scans give.
A damaged, foreign, stale or missing index file is detected and rebuilt, never
served wrong."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import pipeline
from ingest.parse import validate
from service.maintenance import MaintenanceJob
from store.duck import Duck, Snapshot
from store.engine import Store, StoreOptions
from store.filters import filter_from_kwargs
from store.index import FILE
from store.lifecycle import Retention, apply_retention, chunks, matching, purge, tombstones
from store.maintenance import compact
from store.reader import Reader
from store.schema import AMENDMENTS_TABLE
from tests.conftest import interaction

OPTIONS = StoreOptions(flush_interval_s=3600)  # flushes happen when the test says
USE_CASES = ("alpha", "beta")
NOW = datetime.now(UTC)


def _item(i: int) -> dict[str, Any]:
    """Interaction ``i``: the same every time it is sent (retries are exact repeats)."""
    rng = random.Random(i)
    age = rng.choice([0, 0, 1, 40])  # some past a 30-day retention
    return validate(interaction(
        i, id=f"i-{i}", use_case=rng.choice(USE_CASES), session_id=f"s-{i % 7}",
        created_at=(NOW - timedelta(days=age, seconds=i)).isoformat(),
        labels={"topic": f"t{rng.randrange(3)}", "tier": f"r{rng.randrange(2)}"},
    ))  # fmt: skip


def _ingest(store: Store, rng: random.Random, state: dict[str, Any]) -> None:
    items = []
    for _ in range(rng.randrange(1, 40)):
        if state["next"] and rng.random() < 0.3:  # a retry of an id already sent
            items.append(_item(rng.randrange(state["next"])))
        else:
            items.append(_item(state["next"]))
            state["next"] += 1
    pipeline.submit(store, items, source="api").ack.result(30)


def _step(store: Store, op: str, rng: random.Random, state: dict[str, Any]) -> None:
    if op == "ingest":
        _ingest(store, rng, state)
    elif op == "flush":
        store.flush()
    elif op == "delete":
        pairs = matching(store, filter_from_kwargs({"label": f"topic:t{rng.randrange(3)}"}), None)
        for chunk in chunks(rng.sample(pairs, min(len(pairs), 3))):
            store.write(AMENDMENTS_TABLE, tombstones(chunk)).result(30)
    elif op == "relabel":
        pairs = matching(store, filter_from_kwargs({}), None)
        if pairs:
            id_, uc = rng.choice(pairs)
            now = int((datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
            store.write(AMENDMENTS_TABLE, {
                "id": [f"amend-{rng.getrandbits(40)}"], "created_at": [now], "completion_id": [id_],
                "use_case": [uc], "action": ["labels"], "labels": [{"topic": "t9"}],
                "day": [now // 86_400_000_000],
            }).result(30)  # fmt: skip
    elif op == "purge":
        purge(store)
    elif op == "retention":
        apply_retention(store, Retention(default_days=30))
    elif op == "maintenance":
        job = MaintenanceJob(store, 0, 0)
        job.run_once()
    elif op == "compact":  # every small file, as `istore compact` does (the server's waits)
        compact(store.root)
        store.refresh()
    elif op == "sweep" and store.index is not None:  # maintenance's sweeps wait for enough
        store.index.sweep(force=True)


OPS = ["ingest", "ingest", "ingest", "flush", "delete", "relabel", "purge", "retention",
       "maintenance", "compact", "sweep"]  # fmt: skip


def check(data: Path) -> None:
    """The index agrees with the table (after the builder caught up)."""
    store = Store(data, options=OPTIONS)
    try:
        store.flush()
        _wait_indexed(store)
        assert store.index is not None
        rows = store.query("SELECT id, use_case, session_id FROM interactions").to_pylist()
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "an interaction is stored twice"
        files = [f.path for f in store.snapshot().tables["interactions"].files]
        where: dict[str, tuple[str, int]] = {}
        if files:
            scan = Duck.scan_sql(store_spec(), files, filename=True, row_number=True)
            sql = f"SELECT id, filename, file_row_number AS rn FROM {scan}"
            for r in store.duck.query(Snapshot({}), sql).to_pylist():
                where[r["id"]] = (r["filename"], r["rn"])
        found = store.index.locate(list(where))
        for id_, (path, rn) in where.items():
            loc = found.get(id_)
            assert loc is not None, f"{id_} is in the table but not in the index"
            assert (loc.path, loc.rn) == (path, rn), id_
        by_id = {r["id"]: r for r in rows}
        for id_, r in by_id.items():
            assert (found[id_].use_case, found[id_].session_id) == (r["use_case"], r["session_id"])
        assert not store.index.locate([f"i-{n}" for n in range(2000) if f"i-{n}" not in where])
        reader = Reader(store)
        for kw in ({"label": "topic:t1"}, {"label": ["topic:t0", "tier:r1"]},
                   {"label": "topic:t9"}, {"label": "topic:t2", "use_case": "beta"}):  # fmt: skip
            flt = filter_from_kwargs(kw)
            w, params = flt.where()
            want = [r["id"] for r in store.query(
                f"SELECT id FROM interactions WHERE {w} ORDER BY created_at DESC, id DESC", params
            ).to_pylist()]  # fmt: skip
            got: list[str] = []
            after = None
            while True:
                page = reader.page(flt, limit=5, after=after)
                got += [x["id"] for x in page.data]
                if not page.has_more:
                    break
                after = page.next_cursor
            assert got == want, kw
        for id_ in rng_sample(list(by_id)):
            assert reader.get(id_)["id"] == id_
    finally:
        store.close()


def store_spec() -> Any:
    from store.schema import INTERACTIONS_TABLE

    return INTERACTIONS_TABLE


def rng_sample(ids: list[str]) -> list[str]:
    return random.Random(0).sample(ids, min(len(ids), 10))


def _wait_indexed(store: Store) -> None:
    import time

    deadline = time.monotonic() + 60
    while store.status()["index"]["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.status()["index"]["waiting"] == 0


def _child(data: str, seed: int, ops: list[str], die_after: int) -> None:
    """Run ``ops`` and die without closing anything after ``die_after`` of them."""
    store = Store(data, options=OPTIONS)
    rng = random.Random(seed)
    state = {
        "next": int((Path(data) / "next").read_text()) if (Path(data) / "next").exists() else 0
    }
    for k, op in enumerate(ops):
        if k == die_after:
            os._exit(0)  # like kill -9: no close, no final flush, no index commit after this
        _step(store, op, rng, state)
        (Path(data) / "next").write_text(str(state["next"]))
    store.close()
    os._exit(0)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    runs=st.lists(
        st.tuples(
            st.lists(st.sampled_from(OPS), min_size=3, max_size=10),
            st.booleans(),
            st.integers(0, 10),
        ),  # fmt: skip
        min_size=1,
        max_size=3,
    ),
    seed=st.integers(0, 2**16),
)
def test_index_agrees_with_the_tables(tmp_path_factory: pytest.TempPathFactory, runs: Any,
                                      seed: int) -> None:  # fmt: skip
    data = tmp_path_factory.mktemp("idx") / "data"
    ctx = multiprocessing.get_context("spawn")  # delta-rs (tokio) does not survive a fork
    for k, (ops, crash, at) in enumerate(runs):
        p = ctx.Process(target=_child, args=(str(data), seed + k, ops, at if crash else -1))
        p.start()
        p.join(120)
        assert p.exitcode == 0
    check(data)


def _some(data: Path, n: int = 60) -> None:
    rng = random.Random(1)
    with Store(data, options=OPTIONS) as store:
        state = {"next": 0}
        for op in ["ingest"] * 4 + ["flush", "delete", "flush"] + ["ingest"] * 3:
            _step(store, op, rng, state)


@pytest.mark.slow  # a live server or a long property run: `make test` only
@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "foreign", "stale"])
def test_a_damaged_or_missing_index_is_rebuilt_never_served(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    _some(data)
    index = data / FILE
    if damage == "stale":  # an old copy: files compacted and purged since are not in it
        shutil.copy(index, tmp_path / "old")
        with Store(data, options=OPTIONS) as store:
            purge(store)
            MaintenanceJob(store, 0, 0).run_once()
        for suffix in ("-wal", "-shm"):
            Path(str(index) + suffix).unlink(missing_ok=True)
        shutil.copy(tmp_path / "old", index)
    elif damage == "garbage":
        index.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:3000])
    elif damage == "missing":
        index.unlink()
    elif damage == "foreign":
        other = tmp_path / "other"
        _some(other)
        with Store(other, options=OPTIONS):
            pass
        shutil.copy(other / FILE, index)
    for suffix in ("-wal", "-shm"):
        if damage != "stale":
            Path(str(index) + suffix).unlink(missing_ok=True)
    check(data)


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_a_clean_close_is_recorded_so_the_next_start_skips_the_full_check(tmp_path: Path) -> None:
    """Open: the index says it is in use (a kill -9 leaves it so, and the next open reads
    every page); closed: it says it was closed cleanly, its write-ahead log is folded
    into the file, and the file is as long as its header says."""
    import sqlite3

    data = tmp_path / "data"
    _some(data, 20)

    def meta() -> dict[str, str]:
        db = sqlite3.connect(f"file:{data / FILE}?mode=ro", uri=True)
        try:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()

    with Store(data, options=OPTIONS) as store:
        assert store.index is not None
        assert meta()["clean"] == "0"
    assert meta()["clean"] == "1"
    assert not Path(f"{data / FILE}-wal").exists() or not Path(f"{data / FILE}-wal").stat().st_size
    db = sqlite3.connect(data / FILE)
    pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute(
        "PRAGMA page_size").fetchone()[0]  # fmt: skip
    db.close()
    assert (data / FILE).stat().st_size == pages * size
    check(data)
