"""The store: write-ahead log + Delta tables + the in-memory tail, one consistent view.

Writes go: ``write()`` → WAL (fsync, group commit) → in-memory tail (visible to
readers) → acknowledgement. A flusher thread appends the tail to the Delta tables in
batches, each commit carrying the last log sequence number it contains as the Delta
app transaction ``istore-wal``; recovery replays exactly the records above that
number, so a crash anywhere loses nothing acknowledged and duplicates nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from store.duck import Duck, Snapshot, TableSnapshot
from store.errors import StoreError, StoreLocked, Unavailable
from store.idindex import IdIndex, hash_ids
from store.schema import INTERACTIONS_TABLE, TABLES, TABLES_BY_CODE, TableSpec
from store.wal import Record, RecoveryReport, WriteAheadLog, scan

log = logging.getLogger("istore.store")

APP_ID = "istore-wal"


@dataclass(frozen=True)
class StoreOptions:
    flush_interval_s: float = 1.0
    flush_rows: int = 50_000
    max_pending_bytes: int = 1 << 30
    wal_segment_bytes: int = 64 << 20
    query_memory_limit: str = "2GB"
    query_threads: int = 2


@dataclass(frozen=True)
class WriteResult:
    lsn: int | None  # None when every row was already stored
    stored: int
    duplicate_ids: tuple[str, ...] = ()


@dataclass
class _Tail:
    """Acknowledged rows of one table that are not yet in Delta, in LSN order."""

    entries: list[tuple[int, pa.Table]] = field(default_factory=list)
    nbytes: int = 0
    nrows: int = 0
    cached: pa.Table | None = None


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(payload: bytes) -> pa.Table:
    return ipc.open_stream(payload).read_all()


def _combine(futures: Sequence[Future[Any]], result: WriteResult) -> Future[WriteResult]:
    """A future that resolves with ``result`` once every future in ``futures`` has."""
    out: Future[WriteResult] = Future()
    if not futures:
        out.set_result(result)
        return out
    remaining = [len(futures)]
    lock = threading.Lock()

    def _done(f: Future[Any]) -> None:
        exc = f.exception()
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
            if out.done():
                return
            if exc is not None:
                out.set_exception(exc)
            elif last:
                out.set_result(result)

    for f in futures:
        f.add_done_callback(_done)
    return out


class Store:
    """Open with ``Store(root)`` (the writer: one per data root, takes a lock) or
    ``Store(root, writable=False)`` (a read-only view beside a running writer)."""

    def __init__(
        self, root: str | Path, *, writable: bool = True, options: StoreOptions | None = None
    ) -> None:
        self.root = Path(root).absolute()
        self.writable = writable
        self.options = options or StoreOptions()
        self._lock = threading.RLock()  # guards tails, snapshot, id index
        self._flush_lock = threading.Lock()
        self._tails: dict[str, _Tail] = {name: _Tail() for name in TABLES}
        self._ids = IdIndex()
        self._inflight: dict[str, Future[int]] = {}
        self._deltas: dict[str, DeltaTable | None] = {}
        self._files_views: dict[str, tuple[int, str | None]] = {}
        self._durable_lsn = 0
        self._lock_fd: int | None = None
        self._wal: WriteAheadLog | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._flusher: threading.Thread | None = None
        self.flush_error: str | None = None
        self.recovery = RecoveryReport()
        self.flushes = 0

        if writable:
            self.root.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        elif not self.root.exists():
            raise StoreError(f"no store at {self.root}")
        try:
            self._open()
        except BaseException:
            self._release_lock()
            raise

    # -- opening ------------------------------------------------------------------------
    def _take_lock(self) -> None:
        fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLocked(
                f"the store at {self.root} is open for writing by another process "
                f"(pid {owner}); stop it, or send data to its HTTP API"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def table_path(self, spec: TableSpec) -> Path:
        return self.root / spec.name

    def _open(self) -> None:
        applied: dict[int, int] = {}
        for spec in TABLES.values():
            path = self.table_path(spec)
            if DeltaTable.is_deltatable(str(path)):
                dt = DeltaTable(str(path))
            elif self.writable:
                dt = DeltaTable.create(
                    str(path),
                    schema=spec.schema,
                    partition_by=list(spec.partition_by),
                    name=spec.name,
                    configuration={"delta.checkpointInterval": "50"},
                )
            else:
                dt = None
            self._deltas[spec.name] = dt
            applied[spec.code] = (dt.transaction_version(APP_ID) or 0) if dt else 0

        records, self.recovery = scan(self.root / "wal", repair=self.writable)
        max_lsn = max([r.lsn for r in records] + list(applied.values()) + [0])
        replay = [r for r in records if r.code in TABLES_BY_CODE and r.lsn > applied[r.code]]
        for r in replay:
            self._apply(r, _from_ipc(r.payload))
        self._durable_lsn = max_lsn
        if replay:
            log.info("recovered %d write-ahead log records not yet in the tables", len(replay))

        self.duck = Duck(
            [self.table_path(s) for s in TABLES.values()],
            memory_limit=self.options.query_memory_limit,
            threads=self.options.query_threads,
        )
        for spec in TABLES.values():
            self._refresh_files_view(spec)
        self._load_ids()

        if self.writable:
            self._wal = WriteAheadLog(
                self.root / "wal",
                next_lsn=max_lsn + 1,
                on_durable=self._on_durable,
                segment_bytes=self.options.wal_segment_bytes,
            )
            self._flusher = threading.Thread(target=self._flush_loop, name="istore-flush", daemon=True)
            self._flusher.start()

    def _load_ids(self) -> None:
        view = self._files_views.get(INTERACTIONS_TABLE.name, (0, None))[1]
        if view is not None:
            table = self.duck.query(
                Snapshot({}), f'SELECT id FROM "{view}"'
            )
            ids = table.column("id").to_pylist()
            self._ids.load_committed(hash_ids(ids))
        tail = self._tails[INTERACTIONS_TABLE.name]
        for _, t in tail.entries:
            self._ids.add_pending(t.column("id").to_pylist())

    def _refresh_files_view(self, spec: TableSpec) -> None:
        dt = self._deltas.get(spec.name)
        if dt is None:
            self._files_views[spec.name] = (-1, None)
            return
        version = dt.version()
        current = self._files_views.get(spec.name)
        if current is not None and current[0] == version:
            return
        view = self.duck.files_view(spec, version, dt.file_uris())
        self._files_views[spec.name] = (version, view)

    # -- writing ------------------------------------------------------------------------
    def write(self, spec: TableSpec, data: pa.Table) -> Future[WriteResult]:
        """Persist rows (already in ``spec.schema``). The future resolves once they are
        durable; rows whose ``id`` is already stored are skipped (idempotency)."""
        if self._wal is None:
            raise StoreError("this store handle is read-only")
        if self.flush_error and self._pending_bytes() > self.options.max_pending_bytes:
            raise Unavailable(
                f"the store cannot write to its tables ({self.flush_error}) and its backlog is full",
                retry_after=5,
            )
        if self._pending_bytes() > self.options.max_pending_bytes:
            raise Unavailable("the store is catching up with its backlog", retry_after=1)
        if data.schema != spec.schema:
            data = data.cast(spec.schema)
        waits: list[Future[int]] = []
        dupes: tuple[str, ...] = ()
        ids: list[str] = []
        if "id" in spec.schema.names and spec is INTERACTIONS_TABLE:
            with self._lock:
                keep, ids, waits, dupes = self._dedupe(data.column("id").to_pylist())
                if len(dupes):
                    data = data.filter(pa.array(keep))
                self._ids.add_pending(ids)
                if data.num_rows == 0:
                    return _combine(waits, WriteResult(None, 0, dupes))
                fut = self._wal.append(spec.code, _to_ipc(data), (spec, data, ids))
                for id_ in ids:
                    self._inflight[id_] = fut
        else:
            fut = self._wal.append(spec.code, _to_ipc(data), (spec, data, ids))

        result: Future[WriteResult] = Future()

        def _done(f: Future[int]) -> None:
            exc = f.exception()
            if exc is not None:
                with self._lock:
                    self._ids.drop_pending(ids)
                    for id_ in ids:
                        self._inflight.pop(id_, None)
                result.set_exception(exc)
            else:
                result.set_result(WriteResult(f.result(), data.num_rows, dupes))

        fut.add_done_callback(_done)
        if not waits:
            return result
        return _chain(result, waits)

    def _dedupe(
        self, ids: list[str]
    ) -> tuple[list[bool], list[str], list[Future[int]], tuple[str, ...]]:
        keep: list[bool] = []
        new: list[str] = []
        dupes: list[str] = []
        seen: set[str] = set()
        waits: list[Future[int]] = []
        maybe = set(self._ids.maybe_committed(ids))
        confirmed = self._confirm_committed(sorted(maybe)) if maybe else set()
        for id_ in ids:
            if id_ in seen or id_ in confirmed or self._ids.pending(id_):
                keep.append(False)
                dupes.append(id_)
                inflight = self._inflight.get(id_)
                if inflight is not None:
                    waits.append(inflight)
                continue
            seen.add(id_)
            keep.append(True)
            new.append(id_)
        return keep, new, waits, tuple(dupes)

    def _confirm_committed(self, ids: list[str]) -> set[str]:
        view = self._files_views[INTERACTIONS_TABLE.name][1]
        if view is None:
            return set()
        t = self.duck.query(Snapshot({}), f'SELECT id FROM "{view}" WHERE list_contains(?, id)', [ids])
        return set(t.column("id").to_pylist())

    def _on_durable(self, records: list[tuple[Record, object]]) -> None:
        with self._lock:
            for record, meta in records:
                spec, data, ids = meta  # type: ignore[misc]
                self._apply(record, data)
                for id_ in ids:
                    self._inflight.pop(id_, None)
                self._durable_lsn = max(self._durable_lsn, record.lsn)
        if self._pending_rows() >= self.options.flush_rows:
            self._kick.set()

    def _apply(self, record: Record, data: pa.Table) -> None:
        tail = self._tails[TABLES_BY_CODE[record.code].name]
        tail.entries.append((record.lsn, data))
        tail.nbytes += data.nbytes
        tail.nrows += data.num_rows
        tail.cached = None

    def _pending_bytes(self) -> int:
        return sum(t.nbytes for t in self._tails.values())

    def _pending_rows(self) -> int:
        return sum(t.nrows for t in self._tails.values())

    # -- flushing -----------------------------------------------------------------------
    def _flush_loop(self) -> None:
        backoff = self.options.flush_interval_s
        while not self._stop.is_set():
            self._kick.wait(backoff)
            self._kick.clear()
            try:
                self.flush()
                self.flush_error = None
                backoff = self.options.flush_interval_s
            except Exception as exc:  # keep the data in the log and the tail; retry
                self.flush_error = str(exc)
                log.error("flush to the tables failed (will retry): %s", exc)
                backoff = min(backoff * 2, 30.0)

    def flush(self) -> int:
        """Append the in-memory tail to the Delta tables. Returns rows written."""
        written = 0
        with self._flush_lock:
            for spec in TABLES.values():
                written += self._flush_table(spec)
            with self._lock:
                heads = [t.entries[0][0] for t in self._tails.values() if t.entries]
                applied = (min(heads) - 1) if heads else self._durable_lsn
            if self._wal is not None:
                self._wal.release(applied)
        return written

    def _flush_table(self, spec: TableSpec) -> int:
        with self._lock:
            entries = list(self._tails[spec.name].entries)
        if not entries:
            return 0
        path = str(self.table_path(spec))
        dt = DeltaTable(path)
        done = dt.transaction_version(APP_ID) or 0
        todo = [(lsn, t) for lsn, t in entries if lsn > done]
        if todo:
            upto = todo[-1][0]
            data = pa.concat_tables([t for _, t in todo])
            write_deltalake(
                dt,
                data,
                partition_by=list(spec.partition_by),
                mode="append",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=APP_ID, version=upto)]
                ),
            )
            self.flushes += 1
        else:
            upto = entries[-1][0]
        dt = DeltaTable(path)
        flushed_ids: list[str] = []
        with self._lock:
            self._deltas[spec.name] = dt
            self._refresh_files_view(spec)
            tail = self._tails[spec.name]
            k = 0
            while k < len(tail.entries) and tail.entries[k][0] <= upto:
                k += 1
            done_entries, tail.entries = tail.entries[:k], tail.entries[k:]
            for _, t in done_entries:
                tail.nbytes -= t.nbytes
                tail.nrows -= t.num_rows
                if spec is INTERACTIONS_TABLE:
                    flushed_ids.extend(t.column("id").to_pylist())
            tail.cached = None
            if flushed_ids:
                self._ids.commit(flushed_ids)
        return sum(t.num_rows for _, t in todo)

    # -- reading ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            tables = {}
            for name, spec in TABLES.items():
                tail = self._tails[name]
                if tail.cached is None:
                    parts = [t for _, t in tail.entries]
                    tail.cached = (
                        pa.concat_tables(parts) if parts else spec.schema.empty_table()
                    )
                version, view = self._files_views.get(name, (-1, None))
                tables[name] = TableSnapshot(spec, version, view, tail.cached)
            return Snapshot(tables)

    def query(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        snapshot: Snapshot | None = None,
        timeout_s: float | None = None,
        max_rows: int | None = None,
    ) -> pa.Table:
        return self.duck.query(
            snapshot or self.snapshot(), sql, params, timeout_s=timeout_s, max_rows=max_rows
        )

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "durable_lsn": self._durable_lsn,
                "pending_rows": self._pending_rows(),
                "pending_bytes": self._pending_bytes(),
                "flush_error": self.flush_error,
                "wal_error": self._wal.last_error if self._wal else None,
                "versions": {n: v for n, (v, _) in self._files_views.items()},
            }

    def delta(self, spec: TableSpec) -> DeltaTable | None:
        path = self.table_path(spec)
        return DeltaTable(str(path)) if DeltaTable.is_deltatable(str(path)) else None

    # -- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting writes, flush what is acknowledged, release the lock."""
        if self._wal is not None:
            self._wal.close()
        self._stop.set()
        self._kick.set()
        if self._flusher is not None:
            self._flusher.join()
            try:
                self.flush()
            except Exception as exc:
                log.error("final flush failed, the write-ahead log keeps the data: %s", exc)
        self.duck.close()
        self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chain(result: Future[WriteResult], waits: Sequence[Future[Any]]) -> Future[WriteResult]:
    """Resolve after ``result`` and the writes it depends on (same ids in flight)."""
    out: Future[WriteResult] = Future()

    def _own(f: Future[WriteResult]) -> None:
        if f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]
            return
        dep = _combine(waits, f.result())
        dep.add_done_callback(
            lambda d: out.set_exception(d.exception())  # type: ignore[arg-type]
            if d.exception()
            else out.set_result(d.result())
        )

    result.add_done_callback(_own)
    return out
