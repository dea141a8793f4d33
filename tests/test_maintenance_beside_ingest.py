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
