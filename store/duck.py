"""DuckDB over the store: one sandboxed in-process database, views per snapshot.

The database can read the tables' folders and nothing else on the machine
(``enable_external_access=false`` with ``allowed_directories``, then the
configuration is locked), so the same connection serves internal queries and
user SQL. Every setting a cursor must inherit is given when the database is opened
(a ``SET`` on the base connection does not reach the cursors). A query runs on its
own cursor with TEMP views named like the tables, each the union of the snapshot's
committed Parquet files and the acknowledged rows still in the write-ahead log.
DuckDB spills to a folder of its own under the store's state root, bounded in size.
User SQL (``sandboxed``) is checked twice (``store.sandbox``) and runs under a
``QueryGuard`` until its result is read.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from store.errors import InvalidQuery, StoreError
from store.guard import QueryGuard
from store.sandbox import check_plan, check_tables
from store.schema import SQL_VIEWS, TableSpec

MAX_RESULT_BYTES = 256 << 20
# Memory the process may gain outside DuckDB's tracked memory while a user query runs.
MAX_UNTRACKED_BYTES = 1 << 30


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def use_case_condition(use_cases: Sequence[str]) -> str:
    """SQL keeping only the rows of ``use_cases`` (none when it is empty)."""
    if not use_cases:
        return "false"
    return "use_case IN (" + ", ".join(sql_str(u) for u in use_cases) + ")"


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# Helpers for SQL over the views (documented in the README), also used by filters.
MACROS = (
    # label(labels, 'topic') → the value, or NULL
    "CREATE MACRO label(l, k) AS map_extract_value(l, k)",
    # message_text(messages) → the text of every message (string contents and text
    # parts), one per line; not roles, tool calls or other JSON keys
    "CREATE MACRO message_text(m) AS array_to_string(list_concat("
    "list_transform(list_filter(json_extract(m, '$[*].content'), "
    "lambda x: json_type(x) = 'VARCHAR'), lambda x: x->>'$'), "
    "json_extract_string(m, '$[*].content[*].text')), chr(10))",
    # last_user_message(messages) → the text of the last user message
    "CREATE MACRO last_user_message(m) AS message_text(json_extract("
    "list_filter(json_extract(m, '$[*]'), lambda x: x->>'role' = 'user')[-1:], '$'))",
)


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a Delta version, with its partition values."""

    path: str
    partition: dict[str, Any]


@dataclass(frozen=True)
class TableSnapshot:
    spec: TableSpec
    version: int  # Delta table version (-1: no commit yet)
    files_view: str | None  # view over the committed files, None when there are none
    pending: pa.Table  # acknowledged rows not yet in Delta
    files: tuple[DataFile, ...] = ()
    # An older version read today: SQL on ``id`` that rows must satisfy (those still in
    # the table), since its files outlive deletions until vacuum. None: every row.
    keep: str | None = None

    @property
    def pending_name(self) -> str:
        return f"_pending_{self.spec.name}"


@dataclass(frozen=True)
class FilesView:
    """What the store reads of one table: a Delta version, the DuckDB view over its
    files (None while it has none; pinned for as long as this is current) and the
    files with their partition values."""

    version: int
    view: str | None
    files: tuple[DataFile, ...]


NO_FILES = FilesView(-1, None, ())


@dataclass(frozen=True)
class Snapshot:
    tables: dict[str, TableSnapshot]

    @property
    def versions(self) -> dict[str, int]:
        return {name: t.version for name, t in self.tables.items()}


@dataclass
class Result:
    """A running query's rows as Arrow batches (at most ``max_rows``), read once.
    ``truncated`` is known once the batches are exhausted; ``check()`` raises when the
    query's deadline or memory ceiling was crossed, for code that works on the rows."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    guard: QueryGuard
    truncated: bool = False
    rows: int = 0

    def check(self) -> None:
        self.guard.check()


def _readable(d: str | Path) -> str:
    """An ``allowed_directories`` entry: a resolved local folder, or a URL prefix."""
    text = str(d)
    if "://" in text:
        return text.rstrip("/") + "/"
    return str(Path(text).resolve()) + "/"


class Duck:
    def __init__(
        self,
        readable_dirs: Sequence[str | Path],
        *,
        filesystem: Any = None,
        memory_limit: str = "2GB",
        threads: int = 2,
        temp_dir: str | Path | None = None,
        temp_limit: str = "4GB",
        max_untracked_bytes: int = MAX_UNTRACKED_BYTES,
        metadata_cache: bool = False,
    ) -> None:
        self.temp_dir = _own_temp_dir(temp_dir)
        self.max_untracked_bytes = max_untracked_bytes
        self._db = duckdb.connect(
            config={
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "memory_limit": memory_limit,
                "threads": threads,
                # Given here (or SET GLOBAL), not SET: a cursor starts from the
                # database's settings, not from the base connection's session.
                "python_enable_replacements": False,
                "temp_directory": str(self.temp_dir),
                "max_temp_directory_size": temp_limit,
            }
        )
        if filesystem is not None:  # object storage, read through pyarrow (fsspec)
            self._db.register_filesystem(filesystem)
        dirs = ", ".join(sql_str(_readable(d)) for d in readable_dirs)
        self._scrub = _scrubber(
            [*(_readable(d) for d in readable_dirs), *(str(d) for d in readable_dirs),
             str(self.temp_dir), str(self.temp_dir.resolve())]
        )  # fmt: skip
        for macro in MACROS:
            self._db.execute(macro)
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")
        # DuckDB keeps every Parquet footer it read (~30 KB a file) until memory runs
        # short: with a flush a second and compactions, files come and go and the cache
        # grew without end (the soak: +80 MB in 10 minutes). Locally a footer is read
        # again from the page cache in microseconds; on object storage a read is a round
        # trip, so there it is kept (bounded by ``memory_limit``: DuckDB evicts it).
        self._db.execute(f"SET GLOBAL parquet_metadata_cache = {str(metadata_cache).lower()}")
        self._db.execute(f"SET allowed_directories = [{dirs}]")
        self._db.execute("SET enable_external_access = false")
        self._db.execute("SET lock_configuration = true")
        self._lock = threading.Lock()
        # Views over the files of a table version, each pinned by whoever reads it: the
        # store's current state, and every live snapshot. A view is dropped only when
        # nothing pins it, so no read ever finds its view gone. Unpins are queued (a
        # snapshot's finalizer may run anywhere, even inside this lock) and applied by
        # the next ``files_view``.
        self._pins: dict[str, int] = {}
        self._unpinned: deque[str] = deque()

    @staticmethod
    def scan_sql(
        spec: TableSpec, files: Sequence[str], *, filename: bool = False, row_number: bool = False
    ) -> str:
        """``read_parquet`` over some of a table's files, partition columns typed."""
        hive = ", ".join(
            f"{sql_str(c)}: {'DATE' if c == 'day' else 'VARCHAR'}" for c in spec.partition_by
        )
        file_list = "[" + ", ".join(sql_str(f) for f in files) + "]"
        extra = ", filename = true" if filename else ""
        extra += ", file_row_number = true" if row_number else ""
        return (
            f"read_parquet({file_list}, hive_partitioning = true, hive_types = {{{hive}}}{extra})"
        )

    def files_view(self, spec: TableSpec, version: int, files: Sequence[str]) -> str | None:
        """The view over one Delta version's ``files``, created once, returned pinned
        for the caller (who unpins it when done)."""
        if not files:
            return None
        name = f"_{spec.name}_v{version}"
        cols = ", ".join(_quote(c) for c in spec.columns)
        body = f"SELECT {cols} FROM {self.scan_sql(spec, files)}"
        with self._lock:
            self._collect()
            if name not in self._pins:
                cur = self._db.cursor()
                try:
                    cur.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS {body}")
                finally:
                    cur.close()
                self._pins[name] = 0
            self._pins[name] += 1
        return name

    def pin(self, names: Iterable[str | None]) -> list[str]:
        """Pin existing views (they stay until as many ``unpin``s); the names pinned."""
        out = [n for n in names if n is not None]
        with self._lock:
            for n in out:
                self._pins[n] += 1
        return out

    def unpin(self, names: Iterable[str | None]) -> None:
        """Release pins; safe from any thread and from finalizers (no lock taken)."""
        self._unpinned.extend(n for n in names if n is not None)

    def pin_snapshot(self, snapshot: Snapshot, owned: Iterable[str | None] = ()) -> Snapshot:
        """Keep ``snapshot``'s views for as long as it lives: pins its views (those in
        ``owned`` are already pinned for it) and releases them when it is collected."""
        owned = {n for n in owned if n is not None}
        extra = self.pin(
            t.files_view for t in snapshot.tables.values() if t.files_view not in owned
        )
        weakref.finalize(snapshot, self.unpin, [*owned, *extra])
        return snapshot

    def _collect(self) -> None:
        """Apply queued unpins; drop the views nobody pins (caller holds the lock)."""
        cur = None
        try:
            while self._unpinned:
                name = self._unpinned.popleft()
                left = self._pins.get(name, 0) - 1
                if left > 0:
                    self._pins[name] = left
                    continue
                self._pins.pop(name, None)
                cur = cur or self._db.cursor()
                cur.execute(f"DROP VIEW IF EXISTS {_quote(name)}")
        finally:
            if cur is not None:
                cur.close()

    def view_count(self) -> int:
        with self._lock:
            self._collect()
            return len(self._pins)

    def memory_bytes(self) -> int:
        """What DuckDB's buffer manager holds now (for /metrics)."""
        with self._lock:
            cur = self._db.cursor()
            try:
                row = cur.execute(
                    "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
                ).fetchall()
            finally:
                cur.close()
        return int(row[0][0])

    def raw_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor without views, for internal queries that name their files."""
        return self._db.cursor()

    def cursor(
        self,
        snapshot: Snapshot,
        views: bool = True,
        use_cases: Sequence[str] | None = None,
        sql: str | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """A cursor whose TEMP views show exactly ``snapshot`` (only the rows of
        ``use_cases`` when given: what a use-case-limited API key may see). Without
        ``views`` only the pending rows are registered (``_pending_<table>``), for
        internal queries that name their files themselves (see ``scan_sql``).
        With ``sql``, only the tables it may name are set up (each costs ~0.3 ms)."""
        cur = self._db.cursor()
        only = "" if use_cases is None else f" WHERE {use_case_condition(use_cases)}"
        named = _named_tables(snapshot, sql)
        for name, t in snapshot.tables.items():  # all first: views may read several
            if name in named:
                cur.register(t.pending_name, t.pending)
        for name, t in snapshot.tables.items():
            pending = t.pending_name
            if not views or name not in named:
                continue
            cols = ", ".join(_quote(c) for c in t.spec.columns)
            body = f"SELECT {cols} FROM {_quote(pending)}"
            if t.files_view is not None:
                body = f"SELECT {cols} FROM {_quote(t.files_view)} UNION ALL {body}"
            body = f"SELECT * FROM {effective(snapshot, name, f'({body})')}"
            if only:
                body = f"SELECT * FROM ({body}){only}"
            cur.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS {body}")
        return cur

    def query(
        self,
        snapshot: Snapshot,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        views: bool = True,
        use_cases: Sequence[str] | None = None,
        sandboxed: bool = False,
    ) -> pa.Table:
        """The whole result as one table (``max_rows`` + 1 rows at most, so callers
        see that there were more). ``sandboxed``: user SQL, checked and guarded."""
        peek = None if max_rows is None else max_rows + 1
        with self.stream(
            snapshot, sql, params, timeout_s=timeout_s, max_rows=peek, views=views,
            use_cases=use_cases, sandboxed=sandboxed,
            batch_rows=1_000_000 if peek is None else min(peek, 100_000),
        ) as result:  # fmt: skip
            batches, size = [], 0
            for b in result.batches:
                batches.append(b)
                size += b.nbytes
                if max_rows is not None and size > MAX_RESULT_BYTES:
                    raise InvalidQuery(
                        f"the result is larger than {MAX_RESULT_BYTES >> 20} MiB; "
                        "select fewer rows or columns",
                        param="sql",
                    )
            return pa.Table.from_batches(batches, schema=result.schema)

    @contextlib.contextmanager
    def stream(
        self,
        snapshot: Snapshot,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        views: bool = True,
        use_cases: Sequence[str] | None = None,
        sandboxed: bool = False,
        batch_rows: int = 2048,
    ) -> Iterator[Result]:
        """Run ``sql`` and hand out its rows batch by batch while the query's guard
        (deadline; with ``sandboxed`` also the memory ceiling) keeps watching: the
        caller's work on the rows (encoding) counts against the same limits. After
        ``max_rows`` rows the batches stop and ``truncated`` tells whether more
        followed."""
        cur = self.cursor(snapshot, views, use_cases, sql)
        probe_cur, tracked = self._tracked_probe() if sandboxed else (None, None)
        guard = QueryGuard(
            cur,
            timeout_s=timeout_s,
            tracked_bytes=tracked,
            max_untracked_bytes=self.max_untracked_bytes if sandboxed else None,
        )
        try:
            guard.start()
            with _mapped(guard, self._scrub):
                if sandboxed:
                    check_plan(cur, sql)
                reader = cur.sql(sql, params=list(params) if params else None).to_arrow_reader(
                    batch_rows
                )
            result = Result(reader.schema, iter(()), guard)
            result.batches = _limited(reader, result, max_rows, self._scrub)
            yield result
        finally:
            guard.close()
            cur.close()
            if probe_cur is not None:
                probe_cur.close()

    def _tracked_probe(self) -> tuple[duckdb.DuckDBPyConnection, Callable[[], int]]:
        cur = self._db.cursor()

        def tracked() -> int:
            row = cur.execute(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
            ).fetchone()
            return int(row[0]) if row else 0

        return cur, tracked

    def check_tables(self, sql: str, allowed: Iterable[str]) -> None:
        cur = self._db.cursor()
        try:
            check_tables(cur, sql, allowed)
        finally:
            cur.close()

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _mapped(guard: QueryGuard, scrub: Callable[[str], str]) -> Iterator[None]:
    """DuckDB's and Arrow's errors as the store's: the guard's own when it stopped the
    query, otherwise a 400 with what DuckDB said (about the user's SQL), the store's
    file paths scrubbed out (a path names other use cases' partitions). DuckDB's
    errors reach us through Arrow's C stream as plain ``OSError``s."""
    try:
        yield
    except (duckdb.Error, pa.ArrowException, OSError, RecursionError) as exc:
        if guard.reason is not None:
            raise guard.error() from exc
        text = scrub(str(exc))
        if isinstance(exc, duckdb.InterruptException):
            raise StoreError(text) from exc
        if isinstance(exc, duckdb.PermissionException):
            raise InvalidQuery(
                f"not allowed: {text}. SQL may read the views " + ", ".join(SQL_VIEWS) + " only",
                param="sql",
            ) from exc
        if isinstance(exc, duckdb.OutOfMemoryException):  # not DuckDB's advice to SET …
            raise InvalidQuery(
                "the query needs more memory or spill space than allowed "
                "(ISTORE_QUERY_MEMORY_LIMIT, ISTORE_QUERY_TEMP_LIMIT): " + text.split("\n")[0],
                param="sql",
            ) from exc
        if isinstance(exc, RecursionError):
            raise InvalidQuery("the query or its result is nested too deeply", param="sql") from exc
        raise InvalidQuery(text, param="sql") from exc


def _scrubber(paths: Iterable[str]) -> Callable[[str], str]:
    """Replaces every path under ``paths`` in a message with ``<a file of the store>``."""
    roots = sorted({p.rstrip("/") for p in paths if p.strip("/")}, key=len, reverse=True)
    if not roots:
        return lambda text: text
    pattern = re.compile("(?:" + "|".join(re.escape(r) for r in roots) + r")[^\s'\"\],)]*")
    return lambda text: pattern.sub("<a file of the store>", text)


def _limited(
    reader: pa.RecordBatchReader, result: Result, limit: int | None, scrub: Callable[[str], str]
) -> Iterator[pa.RecordBatch]:
    """``reader``'s batches up to ``limit`` rows; then sets ``result.truncated``."""
    while True:
        with _mapped(result.guard, scrub):
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
        if limit is not None and result.rows + batch.num_rows >= limit:
            keep = limit - result.rows
            more = batch.num_rows > keep or _more(reader, result.guard, scrub)
            if keep:
                result.rows += keep
                yield batch.slice(0, keep)
            result.truncated = more
            return
        if batch.num_rows:
            result.rows += batch.num_rows
            yield batch


def _more(reader: pa.RecordBatchReader, guard: QueryGuard, scrub: Callable[[str], str]) -> bool:
    """Whether ``reader`` holds another row."""
    while True:
        with _mapped(guard, scrub):
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return False
        if batch.num_rows:
            return True


def _own_temp_dir(parent: str | Path | None) -> Path:
    """A spill folder only this process uses (``duckdb-<pid>-…``) under ``parent``,
    after removing those of processes that are gone; the system's temporary folder
    when ``parent`` cannot be written (a read-only handle)."""
    if parent is not None:
        base = Path(parent)
        try:
            base.mkdir(parents=True, exist_ok=True)
            for old in base.glob("duckdb-*"):
                pid = old.name.split("-")[1] if old.name.count("-") >= 2 else ""
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            return Path(tempfile.mkdtemp(prefix=f"duckdb-{os.getpid()}-", dir=base))
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=f"istore-duckdb-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _named_tables(snapshot: Snapshot, sql: str | None) -> set[str]:
    """The tables ``sql`` may read: those whose name appears in it (any case), and the
    amendments whenever a table they change does. Everything when ``sql`` is None."""
    if sql is None:
        return set(snapshot.tables)
    text = sql.lower()
    named = {name for name in snapshot.tables if name in text}
    if named & {"interactions", "feedback", "comparisons"}:
        named.add("amendments")
    return named


def survivors(spec: TableSpec, old: Sequence[str], now: Sequence[str]) -> str | None:
    """The ``keep`` condition of an older version (files ``old``) read when the table
    has files ``now``: a row is kept unless its file is gone and its id is in none of
    the files added since (the rewrites of deletions, compactions, later appends)."""
    current = set(now)
    gone = [f for f in old if f not in current]
    if not gone:
        return None
    before = set(old)
    added = [f for f in now if f not in before]
    cond = f"_k.id NOT IN (SELECT id FROM {Duck.scan_sql(spec, gone)})"
    if added:
        cond += f" OR _k.id IN (SELECT id FROM {Duck.scan_sql(spec, added)})"
    return f"({cond})"


def amendments_sql(snapshot: Snapshot) -> str | None:
    """Per interaction id: its latest replacement labels and whether it is deleted;
    None when nothing was ever amended (then reads skip the join)."""
    t = snapshot.tables.get("amendments")
    if t is None or (t.files_view is None and t.pending.num_rows == 0):
        return None
    cols = "completion_id, created_at, action, labels"
    src = f"SELECT {cols} FROM {_quote(t.pending_name)}"
    if t.files_view is not None:
        src = f"SELECT {cols} FROM {_quote(t.files_view)} UNION ALL {src}"
    return (
        "(SELECT completion_id AS id, "
        "arg_max(labels, created_at) FILTER (WHERE action = 'labels') AS labels, "
        f"bool_or(action = 'delete') AS deleted FROM ({src}) GROUP BY completion_id)"
    )


def effective(snapshot: Snapshot, table: str, relation: str) -> str:
    """``relation`` (rows of ``table``) as reads must see them: interactions with their
    latest labels and without the deleted ones; feedback and comparisons without those
    of deleted interactions. ``relation`` is anything that can follow FROM."""
    t = snapshot.tables.get(table)
    if t is not None and t.keep is not None:
        relation = f"(SELECT * FROM {relation} AS _k WHERE {t.keep})"
    amend = amendments_sql(snapshot)
    if amend is None or table not in ("interactions", "feedback", "comparisons"):
        return relation
    if table == "interactions":
        return (
            "(SELECT _r.* REPLACE (coalesce(_a.labels, _r.labels) AS labels) "
            f"FROM {relation} AS _r LEFT JOIN {amend} AS _a ON _a.id = _r.id "
            "WHERE _a.deleted IS NOT TRUE)"
        )
    gone = f"(SELECT id FROM {amend} WHERE deleted)"
    refs = ("completion_id",) if table == "feedback" else ("preferred_id", "other_id")
    keep = " AND ".join(f"(_r.{c} IS NULL OR _r.{c} NOT IN {gone})" for c in refs)
    return f"(SELECT * FROM {relation} AS _r WHERE {keep})"
