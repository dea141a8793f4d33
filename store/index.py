"""The on-disk index: where each interaction lives, and which rows carry each label.

Point reads (``GET /interactions/{id}``), idempotent retries and label lookups must
not cost a scan of the table, so every committed interaction is indexed in SQLite
(``<state>/index.sqlite``, WAL mode; shared by the writers of one node):

- ``rows``: id → use case, session id, created_at (µs), and where the row is: a data
  file (``files.fid``) and its row number in the file;
- ``labels``: (use case, hash of key=value, created_at, file, row) — one posting per
  label of each row, newest first within a (use case, label) pair;
- ``files``: the data files indexed, ``live`` while the table's current version
  names them; ``meta``: the format and the table version the index reflects.

**Derived, never trusted blindly.** The Delta table is the truth; the index follows
its file list (``sync``): files the current version names but the index does not are
read and indexed; files the index knows but the version no longer names (compacted,
purged, expired) are marked dead, and their rows and postings are ignored until
``sweep`` deletes them (maintenance, once the dead files hold a quarter of the rows).
So a crash between a commit and its indexing, a lost index
file, or a corrupt one (rebuilt) only costs time. Readers ask ``unindexed()`` which
files to scan the old way, and check a row found through the index is the one they
asked for. Opening checks the whole file (``quick_check``, ~0.6 s per 1M rows) unless
the last writer closed it cleanly and its size is what its header says: start-up after
a clean stop does not grow with the table. Postings are a superset of the truth (hash
collisions, the labels an interaction had before an amendment): lookups re-check the
filter on the rows.

The index work runs on the flusher's thread, after each commit and before the rows
leave the in-memory tail, so an id is always either pending, indexed, or in a file
``unindexed()`` names."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger("istore.index")

FORMAT = "2"
FILE = "index.sqlite"
SEP = chr(31)  # between a label's key and value in its hash
ADD_FILES = 32  # data files indexed per transaction
ADD_ROWS = 50_000  # rows (and postings) turned into Python values at a time
RAREST_CAP = 20_000  # postings counted per label to choose which one a lookup walks
READER_CACHE_KIB = 256  # SQLite's page cache of each reading thread's connection
# ``sweep``: when, and how much a transaction deletes.
SWEEP_SHARE = 0.25  # dead files' rows, as a share of the live files' rows
SWEEP_MIN_ROWS = 100_000
SWEEP_CHUNK = 20_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS files (fid INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, "
    "live INTEGER NOT NULL, n INTEGER)",
    "CREATE TABLE IF NOT EXISTS names (nid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, uc INTEGER NOT NULL, session TEXT, "
    "ts INTEGER NOT NULL, fid INTEGER NOT NULL, rn INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS labels (uc INTEGER NOT NULL, kv INTEGER NOT NULL, "
    "ts INTEGER NOT NULL, fid INTEGER NOT NULL, rn INTEGER NOT NULL, "
    "PRIMARY KEY (uc, kv, ts, fid, rn)) WITHOUT ROWID",
    # The amendments data files whose label changes are postings already.
    "CREATE TABLE IF NOT EXISTS amended (path TEXT PRIMARY KEY)",
)


def _executemany(sql: str, rows: list[Any], db: sqlite3.Connection) -> None:
    db.executemany(sql, rows)


def label_hash(key: str, value: str) -> int:
    """The 63-bit hash of a label, as ``_POSTINGS_SQL`` computes it in DuckDB."""
    digest = hashlib.md5((key + SEP + value).encode()).digest()
    return int.from_bytes(digest[8:], "little") >> 1


# What indexing a data file reads (DuckDB, over ``Duck.scan_sql(…, filename, row_number)``).
ROWS_SQL = (
    "SELECT id, use_case, session_id, epoch_us(created_at) AS ts, filename, "
    "file_row_number AS rn FROM {scan}"
)
POSTINGS_SQL = (
    "SELECT use_case, (md5_number_lower(k || chr(31) || v) >> 1)::BIGINT AS kv, ts, "
    "filename, rn FROM (SELECT use_case, epoch_us(created_at) AS ts, filename, "
    "file_row_number AS rn, unnest(map_keys(labels)) AS k, unnest(map_values(labels)) AS v "
    "FROM {scan} WHERE labels IS NOT NULL)"
)


@dataclass(frozen=True)
class Located:
    """Where a committed interaction is, and what its first write's ack said."""

    id: str
    use_case: str
    session_id: str | None
    ts: int  # created_at, µs since the epoch
    path: str
    rn: int


@dataclass(frozen=True)
class Hit:
    """A row a label lookup may match (to be re-checked against the filter)."""

    ts: int
    path: str
    rn: int


class Index:
    """One node's index of the interactions table (see the module docstring)."""

    def __init__(self, folder: Path, table_uri: str, *, readonly: bool = False) -> None:
        self.path = Path(folder) / FILE
        self.table_uri = table_uri
        self.readonly = readonly
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._names: dict[str, int] = {}
        self._name_of: dict[int, str] = {}
        self._paths: dict[int, str] = {}  # live files: fid → path
        self._fids: dict[str, int] = {}  # live files: path → fid
        self.rebuilt = False
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_for_writing()
        self._load_files()

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
        else:
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.isolation_level = None  # explicit transactions
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            # One per thread (the server's pool has dozens): a small page cache each, so
            # that their memory does not follow the index's size; pages come from the
            # operating system's cache.
            db.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        return db

    def _open_for_writing(self) -> None:
        """Open (or make) the index; a file of another format or table, or one SQLite
        cannot read, is replaced by an empty index (``sync`` fills it again)."""
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute("PRAGMA synchronous = NORMAL")  # derived data: speed
            for stmt in _SCHEMA:
                self._writer.execute(stmt)
            columns = {r[1] for r in self._writer.execute("PRAGMA table_info(files)")}
            if "n" not in columns:  # an index made before files counted their rows
                self._writer.execute("ALTER TABLE files ADD COLUMN n INTEGER")
            meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
            if meta and (meta.get("format") != FORMAT or meta.get("table") != self.table_uri):
                raise sqlite3.DatabaseError(f"index of another format or table: {meta}")
            if not (meta.get("clean") == "1" and self._whole()):
                # After a crash (or a file whose size is not what its header says): read
                # every page. O(size): ~0.6 s per 1M rows, so a clean close skips it.
                self._writer.execute("PRAGMA quick_check(1)").fetchone()
            if not meta:
                self._set_meta(format=FORMAT, table=self.table_uri, version="-1")
            self._set_meta(clean="0")  # until close() says otherwise
        except sqlite3.DatabaseError as exc:
            log.warning("the index at %s is unusable (%s): rebuilding it", self.path, exc)
            with contextlib.suppress(Exception):
                self._writer.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.rebuilt = True
            self._open_for_writing()

    def _set_meta(self, **values: str) -> None:
        self._writer.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def _whole(self) -> bool:
        """The file is as long as its header says (a truncated copy is not)."""
        pages = self._writer.execute("PRAGMA page_count").fetchone()[0]
        size = self._writer.execute("PRAGMA page_size").fetchone()[0]
        return bool(self.path.stat().st_size == pages * size)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
        if not self.readonly:
            with self._write_lock:
                with contextlib.suppress(sqlite3.Error):
                    self._set_meta(clean="1")
                    # Everything into the main file, so that its size matches its header
                    # at the next open even while other threads' connections linger.
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._writer.close()

    # -- what is indexed ---------------------------------------------------------------
    def _load_files(self) -> None:
        self._load_paths()
        try:
            names = self._reader().execute("SELECT nid, name FROM names").fetchall()
        except sqlite3.Error:  # a read-only handle on a missing or half-made index
            names = []
        self._name_of = dict(names)
        self._names = {n: i for i, n in names}

    def _load_paths(self) -> None:
        try:
            rows = self._reader().execute("SELECT fid, path FROM files WHERE live").fetchall()
        except sqlite3.Error:
            rows = []
        self._paths = dict(rows)
        self._fids = {p: f for f, p in rows}

    def version(self) -> int:
        row = self._reader().execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else -1

    def unindexed(self, files: Iterable[str]) -> list[str]:
        """Those of ``files`` the index does not cover (to be scanned instead)."""
        return [f for f in files if f not in self._fids]

    # -- keeping up with the table -----------------------------------------------------
    def retire(self, files: Iterable[str]) -> int:
        """Mark dead the files the table's current version no longer names."""
        if self.readonly:
            return 0
        with self._write_lock:
            self._load_files()
            now = set(files)
            gone = [p for p in self._fids if p not in now]
            if gone:
                self._transaction(
                    lambda db: db.executemany(
                        "UPDATE files SET live = 0 WHERE path = ?", [(p,) for p in gone]
                    )
                )
                self._load_files()
            return len(gone)

    def add(self, paths: Sequence[str], read: Any, *, newer: bool = True) -> int:
        """Index the data files ``paths`` not indexed yet, ``ADD_FILES`` a transaction; ``read``
        (sql_template, paths) → Arrow table runs the index's queries on DuckDB.
        Returns the rows indexed.

        A file the index retired is never indexed again (a builder's list can be older
        than a compaction: reviving the file would point its ids back at it, and they
        would be lost when it is retired again). ``newer``: the files are new to the
        table (a flush, a rewrite, another writer's commit) and an id they hold moves to
        them; otherwise (the builder catching up on older files) an id keeps the live
        file it is indexed in."""
        if self.readonly:
            return 0
        with self._write_lock:
            self._load_files()
            wanted = [p for p in dict.fromkeys(paths) if p not in self._fids]
            retired = self._retired(wanted)
            todo = [p for p in wanted if p not in retired]
            done = 0
            # Memory is bounded by a group of files and a slice of rows, not by what is
            # indexed at once (a whole table after a compaction or at a first start).
            for g in range(0, len(todo), ADD_FILES):
                new = todo[g : g + ADD_FILES]
                rows, postings = read(ROWS_SQL, new), read(POSTINGS_SQL, new)
                self._transaction(partial(self._add_files, new, rows, postings, newer))
                done += rows.num_rows
            self._load_files()
            return int(done)

    def _retired(self, paths: list[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            out.update(p for (p,) in self._writer.execute(
                f"SELECT path FROM files WHERE NOT live AND path IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall())  # fmt: skip
        return out

    def mark(self, version: int) -> None:
        """Record that the index covers every file of table version ``version``."""
        if not self.readonly:
            with self._write_lock:
                self._transaction(lambda db: self._set_meta(version=str(version)))

    def _transaction(self, work: Any) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            work(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _intern(self, db: sqlite3.Connection, names: Iterable[str]) -> None:
        missing = sorted(set(names) - set(self._names))
        if missing:
            db.executemany("INSERT OR IGNORE INTO names (name) VALUES (?)", [(n,) for n in missing])
            for nid, name in db.execute("SELECT nid, name FROM names").fetchall():
                self._names[name] = nid
                self._name_of[nid] = name

    def _add_files(
        self,
        paths: list[str],
        rows: pa.Table,
        postings: pa.Table,
        newer: bool,
        db: sqlite3.Connection,
    ) -> None:
        db.executemany(
            "INSERT INTO files (path, live) VALUES (?, 1) ON CONFLICT(path) DO UPDATE SET live = 1",
            [(p,) for p in paths],
        )
        fids = dict(db.execute(
            f"SELECT path, fid FROM files WHERE path IN ({','.join('?' * len(paths))})", paths
        ).fetchall())  # fmt: skip
        for off in range(0, max(rows.num_rows, postings.num_rows), ADD_ROWS):
            self._insert(db, rows.slice(off, ADD_ROWS), postings.slice(off, ADD_ROWS), fids, newer)
        counts = Counter(rows.column("filename").to_pylist())
        db.executemany(
            "UPDATE files SET n = ? WHERE fid = ?", [(counts.get(p, 0), fids[p]) for p in paths]
        )

    def _insert(
        self,
        db: sqlite3.Connection,
        rows: pa.Table,
        postings: pa.Table,
        fids: dict[str, int],
        newer: bool = True,
    ) -> None:
        ucs = rows.column("use_case").to_pylist()
        self._intern(db, ucs)
        names = self._names
        # A row that moved (compaction, a purge's rewrite) points to its new file; an
        # older file the builder reaches late takes only ids no live file holds.
        only = "" if newer else " WHERE rows.fid NOT IN (SELECT fid FROM files WHERE live)"
        db.executemany(
            "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "uc = excluded.uc, session = excluded.session, ts = excluded.ts, "
            "fid = excluded.fid, rn = excluded.rn" + only,
            zip(
                rows.column("id").to_pylist(),
                (names[u] for u in ucs),
                rows.column("session_id").to_pylist(),
                rows.column("ts").to_pylist(),
                (fids[f] for f in rows.column("filename").to_pylist()),
                rows.column("rn").to_pylist(),
                strict=True,
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?)",
            zip(
                (names[u] for u in postings.column("use_case").to_pylist()),
                postings.column("kv").to_pylist(),
                postings.column("ts").to_pylist(),
                (fids[f] for f in postings.column("filename").to_pylist()),
                postings.column("rn").to_pylist(),
                strict=True,
            ),
        )

    def add_labels(self, amended: Sequence[tuple[str, dict[str, str] | None]]) -> None:
        """Postings for labels an interaction was given later (amendments), so label
        lookups still find it (its old postings stay: lookups re-check)."""
        if self.readonly or not amended:
            return
        with self._write_lock:
            found = self.locate([i for i, _ in amended])
            out: list[tuple[int, int, int, int, int]] = []
            for id_, labels in amended:
                loc = found.get(id_)
                if loc is None or not labels:
                    continue
                uc = self._names[loc.use_case]
                fid = self._fids[loc.path]
                out.extend((uc, label_hash(k, v), loc.ts, fid, loc.rn) for k, v in labels.items())
            if out:
                self._transaction(
                    lambda db: db.executemany(
                        "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?)", out
                    )
                )

    def amended_files(self) -> set[str]:
        return {p for (p,) in self._reader().execute("SELECT path FROM amended").fetchall()}

    def mark_amended(self, paths: Sequence[str]) -> None:
        if not self.readonly and paths:
            with self._write_lock:
                self._transaction(lambda db: db.executemany(
                    "INSERT OR IGNORE INTO amended VALUES (?)", [(p,) for p in paths]
                ))  # fmt: skip

    def sweep(self, force: bool = False, stop: threading.Event | None = None) -> dict[str, int]:
        """Delete the rows and postings of dead files (after compaction, purge,
        retention), then the files; returns what was removed.

        Postings are keyed by label, not by file, so this reads them all: it runs
        only once the dead files hold ``SWEEP_SHARE`` of the live rows (or with
        ``force``), which keeps its cost proportional to what was rewritten, and
        in chunks of ``SWEEP_CHUNK`` entries, each read and deleted in one short
        transaction (other writers of this index, ``--workers``, may move the same
        ids meanwhile: an entry is deleted only while it still names a dead file).
        ``stop`` (the node stopping) ends it between chunks: the files stay dead and
        the next sweep goes on."""
        none = {"files": 0, "rows": 0, "labels": 0}
        if self.readonly:
            return none
        with self._write_lock:
            db = self._writer
            dead_files = db.execute("SELECT fid, n FROM files WHERE NOT live").fetchall()
            if not dead_files:
                return none
            live_rows = db.execute("SELECT coalesce(sum(n), 0) FROM files WHERE live").fetchone()[0]
        dead_rows = sum(n for _, n in dead_files if n is not None)
        unknown = any(n is None for _, n in dead_files)  # files indexed before counts
        if not (force or unknown or dead_rows >= max(SWEEP_MIN_ROWS, SWEEP_SHARE * live_rows)):
            return {**none, "waiting_files": len(dead_files)}
        dead = {fid for fid, _ in dead_files}
        counts = {"files": 0, "rows": 0, "labels": 0}
        for table, key in (("rows", ("id",)), ("labels", ("uc", "kv", "ts", "fid", "rn"))):
            removed = self._sweep_table(table, key, dead, stop)
            if removed is None:
                return {**counts, "stopped": 1}
            counts[table] = removed
        gone = [(fid,) for fid in sorted(dead)]
        with self._write_lock:
            self._transaction(
                partial(_executemany, "DELETE FROM files WHERE fid = ? AND NOT live", gone)
            )
        counts["files"] = len(gone)
        return counts

    def _sweep_table(
        self, table: str, key: tuple[str, ...], dead: set[int], stop: threading.Event | None
    ) -> int | None:
        """Delete ``table``'s entries whose ``fid`` is in ``dead``, reading it in key
        order a chunk at a time; None when ``stop`` was set first."""
        cols = ", ".join(key)
        after: tuple[Any, ...] | None = None
        removed = 0
        while True:
            if stop is not None and stop.is_set():
                return None
            where = f"WHERE ({cols}) > ({','.join('?' * len(key))}) " if after else ""
            select = f"SELECT {cols}, fid FROM {table} {where}ORDER BY {cols} LIMIT ?"
            cond = " AND ".join(f"{c} = ?" for c in key)
            with self._write_lock:
                db = self._writer
                db.execute("BEGIN IMMEDIATE")
                try:
                    chunk = db.execute(select, [*(after or ()), SWEEP_CHUNK]).fetchall()
                    gone = [r for r in chunk if r[-1] in dead]
                    # The fid again: only an entry that still names the dead file.
                    db.executemany(f"DELETE FROM {table} WHERE {cond} AND fid = ?", gone)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            removed += len(gone)
            if len(chunk) < SWEEP_CHUNK:
                return removed
            after = tuple(chunk[-1][: len(key)])

    # -- lookups -----------------------------------------------------------------------
    def locate(self, ids: Sequence[str]) -> dict[str, Located]:
        """The committed interactions among ``ids`` that live files hold."""
        if not ids:
            return {}
        out: dict[str, Located] = {}
        db = self._reader()
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            rows = db.execute(
                "SELECT id, uc, session, ts, fid, rn FROM rows "
                f"WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            paths = self._live_paths({r[4] for r in rows})
            if not {r[1] for r in rows} <= self._name_of.keys():  # names committed since
                self._load_files()
            for id_, uc, session, ts, fid, rn in rows:
                path = paths.get(fid)
                if path is not None:
                    out[id_] = Located(id_, self._name_of[uc], session, ts, path, rn)
        return out

    def _live_paths(self, fids: set[int]) -> dict[int, str]:
        """The paths of those of ``fids`` that are live files. A file whose rows were
        just committed by another thread (``add`` indexes a rewrite in several
        transactions and reloads the file list after them) is not in ``_paths`` yet:
        the list is read again, or the rows moved to it would look lost for a while
        (the 30-minute soak of 2026-11-30 got a 404 for an acknowledged id)."""
        if not fids <= self._paths.keys():
            self._load_paths()
        paths = self._paths
        return {f: paths[f] for f in fids if f in paths}

    def candidates(
        self,
        conds: Sequence[tuple[str, Sequence[str]]],
        *,
        use_cases: Sequence[str] | None,
        since: int | None,
        until: int | None,
        desc: bool,
        limit: int,
        before: tuple[int, int, int] | None = None,
    ) -> tuple[list[Hit], tuple[int, int, int] | None]:
        """Up to ``limit`` rows (newest first when ``desc``) whose postings meet every
        (key, any of values) in ``conds``, within [since, until) (µs) and past
        ``before``, the position a previous call returned. Returns the hits and the
        position to continue from (None when there are no more)."""
        if use_cases is None:
            ucs = list(self._names.values())
        else:
            ucs = [self._names[u] for u in use_cases if u in self._names]
        if not ucs or not conds:
            return [], None
        first, *rest = self._rarest_first(conds, ucs, since, until)
        args: list[Any] = []
        order = "DESC" if desc else "ASC"
        kvs = [label_hash(first[0], v) for v in first[1]]
        where = [f"p.uc IN ({','.join('?' * len(ucs))})", f"p.kv IN ({','.join('?' * len(kvs))})"]
        args += ucs + kvs
        if since is not None:
            where.append("p.ts >= ?")
            args.append(since)
        if until is not None:
            where.append("p.ts < ?")
            args.append(until)
        if before is not None:
            op = "<" if desc else ">"
            where.append(f"(p.ts, p.fid, p.rn) {op} (?, ?, ?)")
            args += list(before)
        for key, values in rest:
            hs = [label_hash(key, v) for v in values]
            where.append(
                "EXISTS (SELECT 1 FROM labels q WHERE q.uc = p.uc AND q.kv IN "
                f"({','.join('?' * len(hs))}) AND q.ts = p.ts AND q.fid = p.fid AND q.rn = p.rn)"
            )
            args += hs
        sql = (
            f"SELECT DISTINCT p.ts, p.fid, p.rn FROM labels p WHERE {' AND '.join(where)} "
            f"ORDER BY p.ts {order}, p.fid {order}, p.rn {order} LIMIT ?"
        )
        out: list[Hit] = []
        found = self._reader().execute(sql, [*args, limit]).fetchall()
        paths = self._live_paths({f for _, f, _ in found})
        for ts, fid, rn in found:
            path = paths.get(fid)
            if path is not None:  # postings of dead files wait for the sweep
                out.append(Hit(ts, path, rn))
        return out, (tuple(found[-1]) if len(found) == limit else None)  # type: ignore[return-value]

    def _rarest_first(
        self,
        conds: Sequence[tuple[str, Sequence[str]]],
        ucs: list[int],
        since: int | None,
        until: int | None,
    ) -> list[tuple[str, Sequence[str]]]:
        """``conds`` with the one with the fewest postings (counted up to
        ``RAREST_CAP``) first: the lookup walks that one and probes the others, so
        "use case + a common label + a rare one" reads the rare one's postings only."""
        if len(conds) < 2:
            return list(conds)
        db = self._reader()
        sizes = []
        for key, values in conds:
            hs = [label_hash(key, v) for v in values]
            sql = (f"SELECT count(*) FROM (SELECT 1 FROM labels WHERE uc IN "
                   f"({','.join('?' * len(ucs))}) AND kv IN ({','.join('?' * len(hs))})"
                   " AND ts >= ? AND ts < ? LIMIT ?)")  # fmt: skip
            lo = since if since is not None else -(2**63)
            hi = until if until is not None else 2**63 - 1
            sizes.append(db.execute(sql, [*ucs, *hs, lo, hi, RAREST_CAP]).fetchone()[0])
        return [c for _, c in sorted(zip(sizes, conds, strict=True), key=lambda sc: sc[0])]

    def fid(self, path: str) -> int:
        return self._fids[path]

    def status(self) -> dict[str, Any]:
        return {"files": len(self._fids), "version": self.version(), "rebuilt": self.rebuilt}

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        yield self._reader()
