"""The store: write-ahead log + Delta tables + the in-memory tail, one consistent view.

Writes go: ``write()`` → WAL (fsync, group commit) → in-memory tail (visible to
readers) → acknowledgement. A flusher thread appends the tail to the Delta tables in
batches, each commit carrying the last log sequence number it contains as the Delta
app transaction ``istore-wal``; recovery replays exactly the records above that
number, so a crash anywhere loses nothing acknowledged and duplicates nothing.

The store lock (``_lock``) guards only in-memory bookkeeping and is never held
across I/O, Arrow conversion or DuckDB work, so ingest never waits on a flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import (
    CommitProperties,
    DeltaTable,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError

from store.ack import Ack, chain, combine
from store.delta import (
    APP_ID,
    COMMIT_RETRIES,
    configure,
    data_files,
    sync_commit,
    table_configuration,
    writer_id,
    writer_properties,
)
from store.duck import NO_FILES, Duck, FilesView, Snapshot, TableSnapshot, survivors
from store.errors import Conflict, StoreError, StoreLocked, Unavailable, ValidationFailed
from store.files import fsync_path
from store.indexing import IndexKeeper, open_index
from store.location import Location
from store.metrics import StoreMetrics
from store.rows import Columns, decode_tables, encode_tables, num_rows, select
from store.schema import AMENDMENTS_TABLE, FEEDBACK_TABLE, INTERACTIONS_TABLE, TABLES, TableSpec
from store.state import Document, SharedState
from store.tail import CONVERT_ERRORS, Entry, Tail, convert
from store.wal import Record, RecoveryReport, WriteAheadLog, scan

log = logging.getLogger("istore.store")

RECORD_FORMAT = 1  # WAL payload: {table name: columns}, see store.rows

_CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError, KeyError)

# How often a writer looks for commits made by other processes: maintenance commands
# beside a single writer; every few seconds when several writers share the tables.
REFRESH_S = 10.0
SHARED_REFRESH_S = 2.0

# A maintenance delete runs beside this writer's appends; Delta rejects its commit when
# an append landed meanwhile in a partition it rewrites. It tries this many times
# without the flush lock, then once holding it (see ``delete_where``).
DELETE_ATTEMPTS = 3
MAINTENANCE_GRACE_S = 2.0  # how long ``close`` waits for a maintenance step to stop


@dataclass(frozen=True)
class StoreOptions:
    flush_interval_s: float = 1.0
    flush_rows: int = 50_000
    max_pending_bytes: int = 1 << 30
    wal_segment_bytes: int = 64 << 20
    query_memory_limit: str = "2GB"
    query_threads: int = 2
    query_temp_limit: str = "4GB"  # DuckDB's spill files, under <state root>/tmp
    state_refresh_s: float = 2.0  # object storage: how often shared keys/rules are re-read


@dataclass(frozen=True)
class Stored:
    """What an interaction id was first stored as: what a repeat is answered with."""

    use_case: str
    session_id: str | None


@dataclass(frozen=True)
class WriteResult:
    lsn: int | None  # None when every row was already stored
    stored: int
    duplicate_ids: tuple[str, ...] = ()
    existing: dict[str, Stored] = field(default_factory=dict)  # the duplicates, as stored


class IdConflict(Conflict):
    """Ids that are already stored (or repeated in the same write) in another use case.
    Interaction ids are unique across use cases: feedback and comparisons name them
    alone. ``positions``: the offending rows of the write."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(
            f"{len(positions)} id(s) are already used by interactions of another use case; "
            "an id names one interaction in the whole store: choose another id",
            param="id",
            code="id_conflict",
        )
        self.positions = positions


class Store:
    """Open with ``Store(root)`` (the writer of the data root's own log, takes its lock)
    or ``Store(root, writable=False)`` (a read-only view beside running writers).

    With ``wal_dir``, the store writes through that log instead, as one of several
    writers of the same tables (``istore serve --workers N``, or servers on several
    hosts sharing an object-store root): each log has its own writer id, stored in
    the folder, and commits under its own Delta app transaction ``istore-wal-<id>``,
    so recovery replays exactly what that log has not yet committed. ``root`` may be
    ``s3://``, ``gs://`` or ``az://``; then ``wal_dir`` is required, and ``state_dir``
    (default: ``wal_dir``) holds the node's copies of the shared keys and retention
    rules, which live with the data (``state``)."""

    def __init__(
        self,
        root: str | Path,
        *,
        writable: bool = True,
        options: StoreOptions | None = None,
        wal_dir: str | Path | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        self.location = Location.parse(root)
        if self.location.remote:
            local = state_dir or wal_dir or (None if writable else ".")
            if local is None:
                raise StoreError(
                    f"the data root {self.location.uri} is object storage: the write-ahead "
                    "log needs a local folder (ISTORE_WAL_DIR or --wal-dir)"
                )
            self.root = Path(local).absolute()
        else:
            self.root = Path(state_dir).absolute() if state_dir else self.location.path
        legacy = self.location.path / "wal" if not self.location.remote else None
        self.wal_dir = Path(wal_dir).absolute() if wal_dir else (legacy or self.root / "wal")
        # Keys and retention rules live with the data; ``root`` keeps this node's copies
        # (object storage) and any from before they were shared (a read-only handle
        # opened with no local folder has neither).
        self.options = options or StoreOptions()
        local = (
            self.root if (writable or state_dir or wal_dir or not self.location.remote) else None
        )
        self.state = SharedState(self.location, local, refresh_s=self.options.state_refresh_s)
        # A shared store: other writers may commit to the same tables.
        self.shared = legacy is None or self.wal_dir.resolve() != legacy.resolve()
        self.app_id = APP_ID
        self.writable = writable
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._maintenance_lock = threading.Lock()  # one maintenance job at a time
        # Set when the node stops: maintenance stops between its steps and chunks.
        self.maintenance_stop = threading.Event()
        self._convert_lock = threading.Lock()
        self._tails: dict[str, Tail] = {name: Tail() for name in TABLES}
        self._index_gen = 0  # bumped whenever ids leave the tail for the table
        self._inflight: dict[str, Ack[int]] = {}
        # Interactions written but not yet in Delta: how each id was stored.
        self._pending_meta: dict[str, Stored] = {}
        self._last_ack: Ack[int] | None = None  # the newest write handed to the log
        self._deltas: dict[str, DeltaTable | None] = {}
        self._files_views: dict[str, FilesView] = {}
        self._durable_lsn = 0
        self._lock_fd: int | None = None
        self._wal: WriteAheadLog | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._flusher: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self.flush_error: str | None = None
        self.recovery = RecoveryReport()
        self.flushes = 0
        self.metrics = StoreMetrics()

        if writable:
            self.root.mkdir(parents=True, exist_ok=True)
            self.wal_dir.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            if self.shared:
                self.app_id = f"{APP_ID}-{writer_id(self.wal_dir)}"
        elif not self.location.exists():
            raise StoreError(f"no store at {self.location.uri}")
        try:
            self._open()
        except BaseException:
            self._release_lock()
            raise

    # -- opening ------------------------------------------------------------------------
    def _take_lock(self) -> None:
        # The lock belongs to the log: the data root's own log is locked by <data>/LOCK
        # (whatever the state folder), every other log by a LOCK in its folder.
        lock = self.wal_dir / "LOCK" if self.shared else self.location.path / "LOCK"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            what = f"the log at {self.wal_dir}" if self.shared else f"the store at {self.root}"
            raise StoreLocked(
                f"{what} is open for writing by another process "
                f"(pid {owner}); stop it, or send data to its HTTP API"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def table_path(self, spec: TableSpec) -> str:
        return self.location.table(spec.name)

    def _open(self) -> None:
        for _attempt in range(5):
            applied = self._load_tables()
            if self.writable or not self.location.remote:
                records, self.recovery = scan(self.wal_dir, repair=self.writable)
            else:
                records = []
            # A writer may flush and delete segments between the two reads: if the
            # tables moved on meanwhile, read again, or those rows would be in neither.
            if self.writable or self._applied() == applied:
                break
        max_lsn = max([r.lsn for r in records] + list(applied.values()) + [0])
        replayed = 0
        for r in records:
            if r.code != RECORD_FORMAT:
                raise StoreError(f"write-ahead log record {r.lsn} has unknown format {r.code}")
            tables = {
                name: cols for name, cols in decode_tables(r.payload).items()
                if name in TABLES and r.lsn > applied[name]
            }  # fmt: skip
            if tables:
                self._apply(r.lsn, tables, len(r.payload))
                replayed += 1
        self._durable_lsn = max_lsn
        if replayed:
            log.info("recovered %d write-ahead log records not yet in the tables", replayed)

        self.duck = Duck(
            [self.table_path(s) for s in TABLES.values()],
            filesystem=self.location.duckdb_filesystem(),
            memory_limit=self.options.query_memory_limit,
            threads=self.options.query_threads,
            # DuckDB's spill folder: under the state root; a read-only handle on object
            # storage without a local folder uses the system's temporary folder.
            temp_dir=self.root / "tmp" if self.writable or not self.location.remote else None,
            temp_limit=self.options.query_temp_limit,
            metadata_cache=self.location.remote,
        )
        self.index = open_index(self.root, self.location.table(INTERACTIONS_TABLE.name),
                                writable=self.writable)  # fmt: skip
        self._keeper: IndexKeeper | None = None
        if self.index is not None and self.writable:
            self._keeper = IndexKeeper(self.index, self.duck, self._current, self._stop)
        for spec in TABLES.values():
            self._refresh_files_view(spec, self._deltas[spec.name])
        for entry in self._tails[INTERACTIONS_TABLE.name].entries:  # replayed from the log
            c = entry.cols
            for id_, uc, sid in zip(c["id"], c["use_case"], c["session_id"], strict=True):
                self._pending_meta[id_] = Stored(uc, sid)

        if self.writable:
            self._wal = WriteAheadLog(
                self.wal_dir,
                next_lsn=max_lsn + 1,
                on_durable=self._on_durable,
                segment_bytes=self.options.wal_segment_bytes,
            )
            self._flusher = threading.Thread(
                target=self._flush_loop, name="istore-flush", daemon=True
            )
            self._flusher.start()
            if self.shared:
                self._refresher = threading.Thread(
                    target=self._refresh_loop, name="istore-refresh", daemon=True
                )
                self._refresher.start()

    def _load_tables(self) -> dict[str, int]:
        """Open (or create) the Delta tables; the log position each has applied."""
        for spec in TABLES.values():
            if self.location.is_table(spec.name):
                dt = self.location.open(spec.name)
                if self.writable:
                    dt = configure(dt, spec, self.location)
            elif self.writable:
                try:
                    dt = DeltaTable.create(
                        self.table_path(spec),
                        schema=spec.schema,
                        partition_by=list(spec.partition_by),
                        name=spec.name,
                        configuration=table_configuration(spec),
                        storage_options=self.location.options(),
                    )
                except Exception:
                    if not self.location.is_table(spec.name):
                        raise
                    dt = self.location.open(spec.name)  # another writer created it first
            else:
                dt = None
            self._deltas[spec.name] = dt
        return self._applied()

    def _applied(self) -> dict[str, int]:
        out = {}
        for spec in TABLES.values():
            dt = self._deltas.get(spec.name)
            if dt is not None and not self.writable:
                dt = self.delta(spec)
            out[spec.name] = (dt.transaction_version(self.app_id) or 0) if dt else 0
        return out

    def _refresh_files_view(self, spec: TableSpec, dt: DeltaTable | None) -> None:
        """Point the table's view at ``dt``'s version (files listed and the view made
        outside the store lock). Interactions: the index follows first, indexing the
        files added since the view it replaces (another writer's appends, a
        compaction's rewrite), so their ids are found as soon as their rows are read;
        a first view leaves the whole table to the background builder."""
        prepared = self._prepare_view(spec, dt)
        if prepared is not None and spec is INTERACTIONS_TABLE and self.writable:
            current = self._current(spec)
            before = {f.path for f in current.files}
            new = [f.path for f in prepared.files if f.path not in before]
            self._follow(prepared, new if current.version >= 0 else [])
        with self._lock:
            self._install_view(spec, dt, prepared)
        if spec is INTERACTIONS_TABLE and self.writable:
            self._settle_index()
        elif spec is AMENDMENTS_TABLE and self._keeper is not None and prepared is not None:
            self._keeper.amended(self._current(spec))

    def _follow(self, fv: FilesView, new: list[str], *, rewritten: bool = True) -> None:
        if self._keeper is not None:
            self._keeper.follow(fv, new, rewritten=rewritten)

    def _settle_index(self) -> None:
        if self._keeper is not None:
            self._keeper.settle()

    def _current(self, spec: TableSpec) -> FilesView:
        return self._files_views.get(spec.name, NO_FILES)

    @contextlib.contextmanager
    def current_view(self, spec: TableSpec) -> Iterator[str | None]:
        """The current view of ``spec``'s committed files, kept while in use."""
        with self._lock:
            view = self._current(spec).view
            self.duck.pin([view])
        try:
            yield view
        finally:
            self.duck.unpin([view])

    def _prepare_view(self, spec: TableSpec, dt: DeltaTable | None) -> FilesView | None:
        """Listing files and creating the DuckDB view (pinned), done without the store
        lock. None when the current view is as new."""
        if dt is None:
            return NO_FILES
        version = dt.version()
        if self._current(spec).version >= version:
            return None
        files = data_files(self.location, dt, spec)
        return FilesView(version, self.duck.files_view(spec, version, [f.path for f in files]),
                         files)  # fmt: skip

    def _install_view(
        self, spec: TableSpec, dt: DeltaTable | None, prepared: FilesView | None
    ) -> None:
        """Make a prepared view current (caller holds the store lock); the view it
        replaces, or a prepared one that lost to a newer, is unpinned."""
        if prepared is None:
            return
        current = self._files_views.get(spec.name)
        if current is None or current.version < prepared.version:
            self._deltas[spec.name] = dt
            self._files_views[spec.name] = prepared
            if current is not None:
                self.duck.unpin([current.view])
        else:
            self.duck.unpin([prepared.view])

    # -- writing ------------------------------------------------------------------------
    def write(
        self, spec: TableSpec, cols: Columns, *, feedback: Columns | None = None
    ) -> Ack[WriteResult]:
        """Persist rows (column lists in the JSON-native form of ``store.rows``), with
        ``feedback`` rows in the same log record when given. The ack resolves once they
        are durable. Interactions whose ``id`` is already stored are skipped, and so is
        the feedback that came with them (idempotent retries)."""
        if self._wal is None:
            raise StoreError("this store handle is read-only")
        if self._pending_bytes() > self.options.max_pending_bytes:
            if self.flush_error:
                raise Unavailable(
                    f"the store cannot write to its tables ({self.flush_error}) "
                    "and its backlog is full",
                    retry_after=5,
                )
            raise Unavailable("the store is catching up with its backlog", retry_after=1)
        waits: list[Ack[int]] = []
        dupes: tuple[str, ...] = ()
        ids: list[str] = []
        tables: dict[str, Columns] = {spec.name: cols}
        existing: dict[str, Stored] = {}
        if spec is INTERACTIONS_TABLE:
            with self._lock:
                gen = self._index_gen
                look = [i for i in cols["id"] if i not in self._pending_meta]
            confirmed = self._confirm_committed(look) if look else {}
            with self._lock:
                if gen != self._index_gen:
                    # A flush moved ids from the tail to the table meanwhile (it indexes
                    # them before it trims the tail): look those up again.
                    late = [i for i in cols["id"]
                            if i not in confirmed and i not in self._pending_meta]  # fmt: skip
                    confirmed |= self._confirm_committed_locked(late)
                existing = self._check_repeats(cols, confirmed)
                keep, ids, waits, dupes = self._dedupe(cols["id"], confirmed)
                if dupes:
                    cols = select(cols, keep)
                    tables[spec.name] = cols
                if feedback is not None:
                    skip = set(dupes)
                    fb_keep = [c not in skip for c in feedback["completion_id"]]
                    feedback = select(feedback, fb_keep) if skip else feedback
                    if any(fb_keep):
                        tables[FEEDBACK_TABLE.name] = feedback
                if not ids:
                    return combine(waits, WriteResult(None, 0, dupes, existing))
                ack = self._wal.append(RECORD_FORMAT, encode_tables(tables), (tables, ids))
                self._last_ack = ack
                for id_, uc, sid in zip(ids, cols["use_case"], cols["session_id"], strict=True):
                    self._inflight[id_] = ack
                    self._pending_meta[id_] = Stored(uc, sid)
        else:
            if feedback is not None:
                raise StoreError("feedback rides along with interactions only")
            ack = self._wal.append(RECORD_FORMAT, encode_tables(tables), (tables, ids))
            self._last_ack = ack
        n = num_rows(cols)
        result: Ack[WriteResult] = Ack()

        def _done(f: Ack[int]) -> None:
            exc = f.exception()
            if exc is not None:
                with self._lock:
                    for id_ in ids:
                        self._inflight.pop(id_, None)
                        self._pending_meta.pop(id_, None)
                result.set_exception(exc)
            else:
                result.set_result(WriteResult(f.result(), n, dupes, existing))

        ack.add_done_callback(_done)
        return chain(result, waits) if waits else result

    def _check_repeats(self, cols: Columns, confirmed: dict[str, Stored]) -> dict[str, Stored]:
        """How the ids of ``cols`` already stored (or earlier in ``cols``) were stored;
        IdConflict when one of them is in another use case (caller holds the lock)."""
        existing: dict[str, Stored] = {}
        first: dict[str, Stored] = {}
        bad: list[int] = []
        for i, (id_, uc) in enumerate(zip(cols["id"], cols["use_case"], strict=True)):
            known = confirmed.get(id_) or self._pending_meta.get(id_) or first.get(id_)
            if known is None:
                first[id_] = Stored(uc, cols["session_id"][i])
                continue
            if known.use_case != uc:
                bad.append(i)
            existing.setdefault(id_, known)
        if bad:
            raise IdConflict(bad)
        return existing

    def _dedupe(
        self, ids: list[str], confirmed: dict[str, Stored]
    ) -> tuple[list[bool], list[str], list[Ack[int]], tuple[str, ...]]:
        keep: list[bool] = []
        new: list[str] = []
        dupes: list[str] = []
        seen: set[str] = set()
        waits: list[Ack[int]] = []
        for id_ in ids:
            if id_ in seen or id_ in confirmed or id_ in self._pending_meta:
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

    def _confirm_committed(self, ids: list[str]) -> dict[str, Stored]:
        """Those of ``ids`` in the committed table, with how they were stored: from the
        index, and from a scan of the data files it does not cover yet (if any)."""
        out: dict[str, Stored] = {}
        rest = ids
        with self.current_view(INTERACTIONS_TABLE) as view:
            files = [f.path for f in self._current(INTERACTIONS_TABLE).files]
            if self.index is not None:
                found = self.index.locate(ids)
                out = {i: Stored(x.use_case, x.session_id) for i, x in found.items()}
                rest = [i for i in ids if i not in found]
                files = self.index.unindexed(files)
            if not rest or not files or view is None:
                return out
            scan = self.duck.scan_sql(INTERACTIONS_TABLE, files)
            try:
                t = self.duck.query(
                    Snapshot({}),
                    f"SELECT id, use_case, session_id FROM {scan} WHERE list_contains(?, id)",
                    [rest],
                )
            except StoreError as exc:
                msg = f"could not check ids against the table: {exc.message}"
                raise Unavailable(msg) from exc
        out.update({r["id"]: Stored(r["use_case"], r["session_id"]) for r in t.to_pylist()})
        return out

    def _confirm_committed_locked(self, ids: list[str]) -> dict[str, Stored]:
        """``_confirm_committed`` while holding the store lock (an index lookup; the
        flush that just ran indexed its files before it took the lock)."""
        if self.index is None or not ids:
            return {}
        found = self.index.locate(ids)
        return {i: Stored(x.use_case, x.session_id) for i, x in found.items()}

    def _on_durable(self, records: list[tuple[Record, object]]) -> None:
        with self._lock:
            for record, meta in records:
                tables: dict[str, Columns]
                ids: list[str]
                tables, ids = meta  # type: ignore[misc]
                self._apply(record.lsn, tables, len(record.payload))
                for id_ in ids:
                    self._inflight.pop(id_, None)
                self._durable_lsn = max(self._durable_lsn, record.lsn)
        if self._pending_rows() >= self.options.flush_rows:
            self._kick.set()

    def _apply(self, lsn: int, tables: dict[str, Columns], nbytes: int) -> None:
        share = nbytes // max(len(tables), 1)
        for name, cols in tables.items():
            entry = self._tails[name].append(lsn, cols, share)
            self.metrics.ingested(name, entry.nrows, share)

    def _arrow(self, spec: TableSpec, entries: list[Entry]) -> list[pa.Table]:
        """Arrow tables of ``entries``, converting the not-yet-converted ones in bulk.
        An entry that cannot be converted (validation should make that impossible) is
        moved to ``quarantine/`` instead of blocking every read and flush after it."""
        with self._convert_lock:
            todo = [e for e in entries if e.table is None and not e.quarantined]
            if todo:
                try:
                    convert(spec, todo)
                except CONVERT_ERRORS:
                    for e in todo:
                        try:
                            convert(spec, [e])
                        except CONVERT_ERRORS as exc:
                            self._quarantine(spec, e, exc)
        return [e.table for e in entries if e.table is not None and not e.quarantined]

    def _quarantine(self, spec: TableSpec, entry: Entry, exc: Exception) -> None:
        folder = self.root / "quarantine"
        folder.mkdir(exist_ok=True)
        path = folder / f"{spec.name}-{entry.lsn:020d}.json"
        with open(path, "wb") as f:
            f.write(encode_tables({spec.name: entry.cols}))
            f.flush()
            os.fsync(f.fileno())
        fsync_path(folder)
        log.error(
            "%d %s rows (log record %d) cannot be stored as Arrow (%s); kept in %s",
            entry.nrows, spec.name, entry.lsn, exc, path,
        )  # fmt: skip
        entry.quarantined = True
        with self._lock:
            self._tails[spec.name].remove(entry)
            if spec is INTERACTIONS_TABLE:  # not stored: a retry must be able to store it
                for id_ in entry.cols["id"]:
                    self._pending_meta.pop(id_, None)

    def _pending_bytes(self) -> int:
        return sum(t.nbytes for t in self._tails.values())

    def _pending_rows(self) -> int:
        return sum(t.nrows for t in self._tails.values())

    # -- flushing -----------------------------------------------------------------------
    def _refresh_loop(self) -> None:
        """Shared tables: pick up the other writers' commits every few seconds, on a
        thread of its own, so that neither a slow flush nor maintenance delays it."""
        while not self._stop.wait(SHARED_REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:  # the next round tries again
                log.warning("could not read the other writers' commits: %s", exc)

    def _flush_loop(self) -> None:
        backoff = self.options.flush_interval_s
        refreshed = time.monotonic()
        every = float("inf") if self.shared else REFRESH_S
        while not self._stop.is_set():
            self._kick.wait(backoff)
            self._kick.clear()
            try:
                self.flush()
                self.flush_error = None
                backoff = self.options.flush_interval_s
                if time.monotonic() - refreshed > every:
                    # Commits by other processes (`istore compact`) must reach our
                    # snapshots long before `vacuum` may delete the files they replaced.
                    self.refresh()
                    refreshed = time.monotonic()
            except Exception as exc:  # keep the data in the log and the tail; retry
                self.flush_error = str(exc)
                log.error("flush to the tables failed (will retry): %s", exc)
                backoff = min(backoff * 2, 30.0)

    def flush(self) -> int:
        """Append the in-memory tail to the Delta tables. Returns rows written."""
        written = 0
        with self._flush_lock:
            started = time.perf_counter()
            for spec in TABLES.values():
                written += self._flush_table(spec)
            if written:
                self.metrics.flush_seconds.observe(time.perf_counter() - started)
            with self._lock:
                heads = [t.entries[0].lsn for t in self._tails.values() if t.entries]
                applied = (min(heads) - 1) if heads else self._durable_lsn
            if self._wal is not None:
                self._wal.release(applied)
        return written

    def _flush_table(self, spec: TableSpec) -> int:
        with self._lock:
            entries = list(self._tails[spec.name].entries)
        if not entries:
            return 0
        dt = self.location.open(spec.name)
        done = dt.transaction_version(self.app_id) or 0
        todo = [e for e in entries if e.lsn > done]
        tables = self._arrow(spec, todo) if todo else []
        before = {f.path for f in self._current(spec).files}
        base = dt.version()
        if tables:
            upto = todo[-1].lsn  # past quarantined entries too: they are kept elsewhere
            write_deltalake(
                dt,
                pa.concat_tables(tables),
                partition_by=list(spec.partition_by),
                mode="append",
                writer_properties=writer_properties(),
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=self.app_id, version=upto)],
                    max_commit_retries=COMMIT_RETRIES,
                ),
            )
            self.flushes += 1
            dt = self.location.open(spec.name)
        else:
            upto = entries[-1].lsn if not todo else todo[-1].lsn
        prepared = self._prepare_view(spec, dt)
        if tables:
            # The log segments holding these rows are deleted next: the commit must be
            # on disk first (delta-rs does not fsync local files), even when a refresh
            # already showed this version.
            files = prepared.files if prepared is not None else data_files(self.location, dt, spec)
            new = [f.path for f in files if f.path not in before]
            sync_commit(self.location, spec, dt, new)
            # The index learns the new rows before they leave the tail (``write`` relies
            # on an id being pending or indexed, or its file unindexed and scanned).
            # Only this append's files hold new rows unless another commit (a purge or
            # compaction running beside the flush) came in between: its files hold
            # moved rows, which keep their amended labels.
            if spec is INTERACTIONS_TABLE and prepared is not None:
                moved = prepared.version > base + 1 or self._current(spec).version != base
                self._follow(prepared, new, rewritten=moved)
        flushed_ids: list[str] = []
        with self._lock:
            # One lock hold: the new files appear exactly when the rows leave the tail.
            self._install_view(spec, dt, prepared)
            for e in self._tails[spec.name].trim(upto):
                if spec is INTERACTIONS_TABLE:
                    flushed_ids.extend(e.cols["id"])
            if flushed_ids:
                self._index_gen += 1
                for id_ in flushed_ids:
                    self._pending_meta.pop(id_, None)
        if tables and spec is INTERACTIONS_TABLE:
            self._settle_index()
        elif tables and spec is AMENDMENTS_TABLE and self._keeper is not None:
            self._keeper.amended(self._current(spec))
        return sum(e.nrows for e in todo if not e.quarantined)

    def refresh(self) -> None:
        """Pick up commits made by other processes (other writers, `istore compact`).
        Not during a flush: a view installed between a flush's commit and its trimming
        of the unflushed rows would show those rows twice."""
        deltas = {name: self.delta(spec) for name, spec in TABLES.items()}
        dt = deltas[INTERACTIONS_TABLE.name]
        if dt is not None:
            self._index_ahead(dt)
        with self._flush_lock:
            for name, spec in TABLES.items():
                self._refresh_files_view(spec, deltas[name])

    def _index_ahead(self, dt: DeltaTable) -> None:
        """Index the interactions files of ``dt``'s version that the index does not
        cover yet, before the flush lock is taken to show them: a compaction's or a
        purge's rewrite can be large, and ingest must never wait for it."""
        if self._keeper is None or self.index is None:
            return
        # Only the files added since the current view: what the table held before is
        # the builder's (a few files at a time), never indexed here all at once.
        current = self._current(INTERACTIONS_TABLE)
        if current.version < 0:
            return
        before = {f.path for f in current.files}
        files = data_files(self.location, dt, INTERACTIONS_TABLE)
        self._keeper.ahead(self.index.unindexed(f.path for f in files if f.path not in before))

    # -- reading ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Committed files plus acknowledged rows not yet flushed, captured atomically.
        A write handed to the log before this call is waited for (up to a second), so
        a read sees what was written before it even when the writer did not wait for
        its acknowledgement (the gateway's logging)."""
        last = self._last_ack
        if last is not None and not last.done():
            with contextlib.suppress(Exception):
                last.result(1.0)
        with self._lock:
            state = {
                name: (list(self._tails[name].entries), self._tails[name].cached,
                       self._current(TABLES[name]))
                for name in TABLES
            }  # fmt: skip
            pinned = self.duck.pin(fv.view for _, _, fv in state.values())
        try:
            tables = {}
            for name, (entries, cached, fv) in state.items():
                spec = TABLES[name]
                if cached is None:
                    parts = self._arrow(spec, entries)
                    cached = pa.concat_tables(parts) if parts else spec.schema.empty_table()
                    with self._lock:
                        tail = self._tails[name]
                        if [e.lsn for e in tail.entries] == [e.lsn for e in entries]:
                            tail.cached = cached
                tables[name] = TableSnapshot(spec, fv.version, fv.view, cached, fv.files)
        except BaseException:
            self.duck.unpin(pinned)
            raise
        return self.duck.pin_snapshot(Snapshot(tables), owned=pinned)

    def query(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        snapshot: Snapshot | None = None,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        views: bool = True,
        use_cases: Sequence[str] | None = None,
    ) -> pa.Table:
        """Run SQL on a snapshot. With ``views`` the tables are TEMP views by their
        names (holding only ``use_cases``' rows when given); without, the query names
        files itself (``Duck.scan_sql``) and the pending rows as ``_pending_<table>``,
        which skips binding every file."""
        return self.duck.query(
            snapshot or self.snapshot(),
            sql,
            params,
            timeout_s=timeout_s,
            max_rows=max_rows,
            views=views,
            use_cases=use_cases,
        )

    def snapshot_at(self, versions: dict[str, int] | None = None) -> Snapshot:
        """The committed tables (no unflushed rows), at ``versions`` (Delta time travel;
        default: the current versions), for reproducible reads such as exports. Erasure
        wins over reproducibility: the current deletions and labels (the amendments,
        flushed or not) always apply, and rows that left a table since (retention,
        purge) are left out of an older version, although its files remain until
        vacuum."""
        unknown = sorted(set(versions or {}) - set(TABLES))
        if unknown:
            raise ValidationFailed(f"as_of: no table {unknown[0]!r}", param="as_of")
        live = self.snapshot()  # the current amendments, with the unflushed ones
        tables: dict[str, TableSnapshot] = {}
        owned: list[str | None] = []
        try:
            for name, spec in TABLES.items():
                if spec is AMENDMENTS_TABLE:
                    tables[name] = live.tables[name]
                    continue
                if not self.location.is_table(name):
                    tables[name] = TableSnapshot(spec, -1, None, spec.schema.empty_table(), ())
                    continue
                now = self.location.open(name)
                want = (versions or {}).get(name)
                if want is not None and not 0 <= want <= now.version():
                    raise ValidationFailed(
                        f"as_of: {name} is at version {now.version()}; {want} does not exist",
                        param="as_of",
                    )
                keep = None
                if want is None or want == now.version():
                    dt = now
                    files = data_files(self.location, dt, spec)
                else:
                    try:
                        dt = self.location.open(name, version=want)
                    except Exception as exc:  # delta-rs has its own errors for a lost version
                        raise ValidationFailed(
                            f"as_of: {name} has no version {want} ({exc})", param="as_of"
                        ) from None
                    files = data_files(self.location, dt, spec)
                    current = [f.path for f in data_files(self.location, now, spec)]
                    keep = survivors(spec, [f.path for f in files], current)
                version = dt.version()
                view = self.duck.files_view(spec, version, [f.path for f in files])
                owned.append(view)
                empty = spec.schema.empty_table()
                tables[name] = TableSnapshot(spec, version, view, empty, files, keep)
        except BaseException:
            self.duck.unpin(owned)
            raise
        return self.duck.pin_snapshot(Snapshot(tables), owned=owned)

    def stream(
        self, sql: str, params: Sequence[Any] | None, snapshot: Snapshot, batch_rows: int = 4096
    ) -> Iterator[pa.RecordBatch]:
        """The result of ``sql`` on ``snapshot`` in batches, without holding it all."""
        cur = self.duck.cursor(snapshot, True, None, sql)
        try:
            reader = cur.sql(sql, params=list(params) if params else None).to_arrow_reader(
                batch_rows
            )
            yield from reader
        finally:
            cur.close()

    def settle(self, ids: Sequence[str], timeout: float = 10.0) -> None:
        """Wait until the writes of ``ids`` still in flight (appended, not yet fsynced)
        are resolved, so a reference made right after a write (feedback on a gateway
        call, which logs without waiting) finds it. Failures are the writer's concern."""
        with self._lock:
            acks = [a for a in map(self._inflight.get, ids) if a is not None]
        for ack in acks:
            with contextlib.suppress(Exception):
                ack.result(timeout)

    def candidates(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that may be stored (pending, indexed, or possibly in a file
        the index does not cover yet): a fast negative for everything else."""
        if self.index is None:
            return list(ids)
        with self._lock:
            pending = [i for i in ids if i in self._pending_meta]
            files = [f.path for f in self._current(INTERACTIONS_TABLE).files]
        rest = [i for i in ids if i not in set(pending)]
        if self.index.unindexed(files):
            return pending + rest
        return pending + list(self.index.locate(rest))

    # -- lifecycle (store.lifecycle) ------------------------------------------------------
    @contextlib.contextmanager
    def maintenance(self) -> Iterator[None]:
        """One maintenance job (retention, purge, compaction) of this process at a
        time. It does not keep the flusher out: the long work (reading and rewriting
        Parquet) runs beside appends, and only the installation of its result takes
        the flush lock for a moment (``delete_where``, ``refresh``)."""
        with self._maintenance_lock:
            yield

    def committed(
        self, spec: TableSpec, select: str, where: str = "TRUE", order_by: str = ""
    ) -> pa.Table:
        """``SELECT select FROM <committed files of spec> WHERE where``: raw rows,
        deleted ones included (no amendments applied, no unflushed rows)."""
        order = f" ORDER BY {order_by}" if order_by else ""
        with self.current_view(spec) as view:
            if view is None:
                return pa.table({})
            return self.duck.query(
                Snapshot({}), f'SELECT {select} FROM "{view}" WHERE {where}{order}'
            )

    def delete_where(self, spec: TableSpec, cond: str, why: str = "deleted") -> int:
        """Delete the committed rows of ``spec`` matching ``cond`` (SQL that DuckDB and
        Delta both read) with a Delta delete, which rewrites the files holding them.
        Returns the rows removed.

        Without the flush lock: the delete names the day partitions it rewrites, so an
        append to another day (the flusher's, normally today) does not conflict with it.
        Days the unflushed rows fall in are deleted on their own; when an append did
        land in a partition being rewritten, Delta refuses the delete's commit (never
        the append's) and it runs again, the last attempt holding the flush lock."""
        days = self._days_matching(spec, cond)
        if not days:
            return 0
        started = time.perf_counter()
        hot = self._hot_days(spec)
        n = 0
        for group in (sorted(days - hot), sorted(days & hot)):
            if group:
                n += self._delete_days(spec, cond, group)
        self.metrics.deleted(spec.name, why, n)
        self.metrics.timer("delete").observe(time.perf_counter() - started)
        return n

    def _days_matching(self, spec: TableSpec, cond: str) -> set[str]:
        t = self.committed(spec, "DISTINCT CAST(day AS VARCHAR) AS d", cond)
        return {d for d in t.column("d").to_pylist() if d} if t.num_columns else set()

    def _hot_days(self, spec: TableSpec) -> set[str]:
        """The days the flusher may append to next: today's and those of the rows of
        ``spec`` not flushed yet."""
        epoch = 719_163  # date(1970, 1, 1).toordinal()
        with self._lock:
            entries = list(self._tails[spec.name].entries)
        days = {int(time.time() // 86_400)}
        for e in entries:
            days.update(d for d in e.cols.get("day", ()) if isinstance(d, int))
        return {date.fromordinal(epoch + d).isoformat() for d in days}

    def _delete_days(self, spec: TableSpec, cond: str, days: list[str]) -> int:
        where = "day IN (" + ", ".join(f"'{d}'" for d in days) + f") AND ({cond})"
        before = self._current(spec).version
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            last = attempt == DELETE_ATTEMPTS
            try:
                with self._flush_lock if last else contextlib.nullcontext():
                    m = self.location.open(spec.name).delete(
                        where, writer_properties=writer_properties()
                    )
                break
            except CommitFailedError as exc:
                if last:
                    raise
                log.info("%s: a delete met a concurrent append, again (%s)", spec.name, exc)
        self._adopt(spec, before)
        return int(m.get("num_deleted_rows") or 0)

    def _adopt(self, spec: TableSpec, since: int) -> None:
        """Show this process's own maintenance commit: its files made durable and (the
        interactions) indexed first, then the view installed under the flush lock,
        which a flush holds from its commit to the trimming of its rows."""
        dt = self.location.open(spec.name)
        current = {f.path for f in self._current(spec).files}
        new = [f.path for f in data_files(self.location, dt, spec) if f.path not in current]
        sync_commit(self.location, spec, dt, new, since=since)
        if spec is INTERACTIONS_TABLE:
            self._index_ahead(dt)
        with self._flush_lock:
            self._refresh_files_view(spec, dt)

    def files_views(self) -> dict[str, FilesView]:
        """Per table: what is currently read (the views are not pinned for the caller:
        use ``current_view`` to query one)."""
        with self._lock:
            return dict(self._files_views)

    def rotate_log(self) -> None:
        """Close the log segment being written, so that it is deleted once applied."""
        if self._wal is not None:
            self._wal.rotate()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "writer": self.app_id,  # the Delta app transaction of this log
                "durable_lsn": self._durable_lsn,
                "pending_rows": self._pending_rows(),
                "pending_bytes": self._pending_bytes(),
                "flush_error": self.flush_error,
                "wal_error": self._wal.last_error if self._wal else None,
                # What the last start found in the log: damaged frames were skipped
                # (their positions here), every intact frame after them replayed.
                "wal_recovery": self.recovery.as_dict(),
                "versions": {n: v.version for n, v in self._files_views.items()},
                "index": self._index_status(),
            }

    def api_keys(self) -> Document:
        """The data root's ``keys.json`` (shared by every node: ``store.state``)."""
        return self.state.document("keys.json")

    def retention_rules(self) -> Document:
        """The data root's ``retention.json`` (shared by every node)."""
        return self.state.document("retention.json")

    def sweep_index(self) -> dict[str, int]:
        """Drop what the index holds of data files that left the table (maintenance)."""
        if self.index is None:
            return {}
        return self.index.sweep(stop=self.maintenance_stop)

    def _index_status(self) -> dict[str, Any] | None:
        if self._keeper is not None:
            return self._keeper.status()
        return self.index.status() if self.index is not None else None

    def delta(self, spec: TableSpec) -> DeltaTable | None:
        return self.location.open_if_exists(spec.name)

    # -- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting writes, flush what is acknowledged, release the lock."""
        self.maintenance_stop.set()
        if self._wal is not None:
            self._wal.close()
        self._stop.set()
        self._kick.set()
        if self._refresher is not None:
            self._refresher.join()
        if self._flusher is not None:
            self._flusher.join()
            try:
                self.flush()
            except Exception as exc:
                log.error("final flush failed, the write-ahead log keeps the data: %s", exc)
        if not self._maintenance_lock.acquire(timeout=MAINTENANCE_GRACE_S):
            # A maintenance step still in a Delta operation (it stops at its next
            # chunk): what it has not committed is not in the tables. Leave DuckDB and
            # the index open for it rather than pull them away; the process is ending.
            log.warning("closing with a maintenance operation still running")
            self._release_lock()
            return
        try:
            if self._keeper is not None:
                self._keeper.join()
            if self.index is not None:
                self.index.close()
            self.duck.close()
        finally:
            self._maintenance_lock.release()
        self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
