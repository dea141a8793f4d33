"""Maintenance never holds ingest up: a purge's Delta deletes run while the flusher
keeps committing, a delete that meets an append in a partition it rewrites is tried
again (Delta refuses the delete, never the append), and nothing acknowledged is lost
or written twice. (The figures under load: ``make bench-maintenance``.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from ingest.normalize import build_batch
from ingest.parse import validate
from store.engine import Store, StoreOptions
from store.lifecycle import purge, tombstones
from store.rows import Columns
from store.schema import AMENDMENTS_TABLE, INTERACTIONS_TABLE
from tests.conftest import interaction


def _rows(ids: list[str], days_ago: float = 0.0) -> Columns:
    created = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
    items = [validate(interaction(i, id=id_, created_at=created)) for i, id_ in enumerate(ids)]
    return build_batch(items, source="api").interactions()


class Writer:
    """Writes interactions until stopped; remembers what was acknowledged."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            # ids that span the victims' (min/max statistics cannot rule a file out)
            batch = [f"a-new-{n}", f"z-new-{n}"]
            self.store.write(INTERACTIONS_TABLE, _rows(batch)).result(10)
            self.acked.extend(batch)
            n += 1
            time.sleep(0.005)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


class OwnedLock:
    """The store's flush lock, knowing which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self) -> None:
        self._lock.acquire()
        self.owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()


def _open(root: Path) -> Store:
    store = Store(root, options=StoreOptions(flush_interval_s=0.05))
    store._flush_lock = OwnedLock()  # type: ignore[assignment]
    return store


@pytest.fixture
def deletes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Every Delta delete, before it starts, waits for the flusher to commit twice
    (unless it runs holding the flush lock): under a maintenance that kept the flusher
    out, that never happens."""
    seen: dict[str, Any] = {"calls": 0, "flushed_meanwhile": [], "store": None}
    real = DeltaTable.delete

    def delete(self: DeltaTable, *args: Any, **kwargs: Any) -> Any:
        store: Store = seen["store"]
        seen["calls"] += 1
        if store._flush_lock.owner != threading.get_ident():  # type: ignore[attr-defined]
            start = store.flushes
            deadline = time.monotonic() + 20  # a guard only: a stalled flusher fails here
            while store.flushes < start + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen["flushed_meanwhile"].append(store.flushes >= start + 2)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "delete", delete)
    yield seen


def _tombstone(store: Store, ids: list[str], use_case: str = "support") -> None:
    store.write(AMENDMENTS_TABLE, tombstones([(i, use_case) for i in ids])).result(10)
    store.flush()


def _check_everything_acked_is_there_once(root: Path, expect: set[str]) -> None:
    with Store(root) as again:
        got = again.query("SELECT id FROM interactions").column("id").to_pylist()
    assert len(got) == len(set(got))
    assert set(got) == expect


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_a_purge_of_old_days_runs_beside_the_flusher(
    tmp_path: Path, deletes: dict[str, Any]
) -> None:
    root = tmp_path / "data"
    store = _open(root)
    deletes["store"] = store
    old = [f"m-old-{i:03d}" for i in range(300)]
    for k in range(3):  # three days, ten days ago and more
        store.write(INTERACTIONS_TABLE, _rows(old[k * 100 : (k + 1) * 100], 10 + k)).result(10)
    store.flush()
    victims = old[::10]
    _tombstone(store, victims)
    try:
        with Writer(store) as w:
            while len(w.acked) < 20:
                time.sleep(0.01)
            removed = purge(store)
        assert removed["interactions"] == len(victims)
        assert deletes["flushed_meanwhile"] and all(deletes["flushed_meanwhile"])
        left = store.committed(INTERACTIONS_TABLE, "id", "id LIKE 'm-old-%'").column("id")
        assert sorted(left.to_pylist()) == sorted(set(old) - set(victims))
    finally:
        store.close()
    _check_everything_acked_is_there_once(root, (set(old) - set(victims)) | set(w.acked))


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_a_delete_that_meets_an_append_in_its_partition_is_tried_again(
    tmp_path: Path, deletes: dict[str, Any]
) -> None:
    root = tmp_path / "data"
    store = _open(root)
    deletes["store"] = store
    today = [f"m-now-{i:03d}" for i in range(100)]
    store.write(INTERACTIONS_TABLE, _rows(today)).result(10)
    store.flush()
    victims = today[::4]
    _tombstone(store, victims)
    try:
        with Writer(store) as w:
            while len(w.acked) < 20:
                time.sleep(0.01)
            removed = purge(store)
        assert removed["interactions"] == len(victims)
        # The flusher appended to today's files while each unlocked attempt ran, so
        # Delta refused those; the last attempt held the flush lock.
        interactions_calls = deletes["calls"]
        assert interactions_calls >= 3
    finally:
        store.close()
    _check_everything_acked_is_there_once(root, (set(today) - set(victims)) | set(w.acked))


# -- SIGTERM during a long maintenance run -------------------------------------------------
SHUTDOWN_TIMEOUT_S = 2
FLUSH_MARGIN_S = 10  # the final flush of a few seconds of acknowledged writes, and exit


def _big_store(root: Path, rows: int) -> int:
    """``rows`` synthetic interactions over 30 days in ten appends, every second
    tombstoned: a purge of many Delta deletes, each rewriting most files."""
    import numpy as np
    from deltalake import write_deltalake

    from store.delta import writer_properties
    from store.lifecycle import chunks
    from testkit.synthetic import chunk

    Store(root).close()
    rng = np.random.default_rng(3)
    for start in range(0, rows, rows // 10):
        write_deltalake(str(root / "interactions"), chunk(rng, start, rows // 10),
                        mode="append", partition_by=["use_case", "day"],
                        writer_properties=writer_properties())  # fmt: skip
    with Store(root) as store:
        pairs = [(r["id"], r["use_case"]) for r in store.query(
            "SELECT id, use_case FROM interactions WHERE CAST(substr(id, 4) AS BIGINT) % 2 = 0",
            max_rows=None).to_pylist()]  # fmt: skip
        for part in chunks(pairs):
            store.write(AMENDMENTS_TABLE, tombstones(part)).result(60)
    return len(pairs)


@pytest.mark.slow
def test_sigterm_during_a_long_maintenance_run_exits_in_time_and_keeps_every_ack(
    server_factory: Any, tmp_path: Path
) -> None:
    import signal

    import httpx

    root = tmp_path / "data"
    _big_store(root, 300_000)
    timeout = str(SHUTDOWN_TIMEOUT_S)
    env = {"ISTORE_MAINTENANCE_INTERVAL_S": "0", "ISTORE_SHUTDOWN_TIMEOUT_S": timeout}
    server = server_factory(root, **env).start(60)
    deadline = time.monotonic() + 300
    while httpx.get(server.url + "/readyz", timeout=60).json()["index"]["waiting"]:
        assert time.monotonic() < deadline, "the index never covered the table"
        time.sleep(0.5)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/api/v1/interactions", json=interaction(i, id=f"sig-{w}-{i}"))
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked.append(f"sig-{w}-{i}")
                i += 1

    answer: dict[str, Any] = {}

    def maintain() -> None:
        try:
            r = httpx.post(server.url + "/api/v1/maintenance", params={"steps": "purge,compact"},
                           timeout=600)  # fmt: skip
            answer["status"] = r.status_code
        except httpx.HTTPError as exc:  # cut by the shutdown
            answer["error"] = type(exc).__name__

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=maintain))
    for t in threads:
        t.start()
    # The purge is under way (its first Delta deletes) when the signal comes.
    deadline = time.monotonic() + 120
    started = 'istore_maintenance_seconds_count{kind="delete"}'
    while started not in httpx.get(server.url + "/metrics", timeout=60).text:
        assert time.monotonic() < deadline and not answer, "the purge never started"
        time.sleep(0.1)
    assert not answer, "the maintenance run must still be running when SIGTERM comes"
    assert server.proc is not None
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=300)
    took = time.monotonic() - sent
    stop.set()
    for t in threads:
        t.join(60)
    assert code == 0, server.stderr_text[-2000:]
    # The contract (not a performance figure): in-flight requests get the timeout, then
    # the final flush; a maintenance step under way does not hold the exit.
    assert took <= SHUTDOWN_TIMEOUT_S + FLUSH_MARGIN_S, (took, server.stderr_text[-2000:])
    assert len(acked) > 50
    with Store(root) as again:
        got = again.query("SELECT id FROM interactions WHERE id LIKE 'sig-%'").column("id")
    ids = got.to_pylist()
    assert set(acked) <= set(ids) and len(ids) == len(set(ids))
