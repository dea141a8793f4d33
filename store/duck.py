"""DuckDB over the store: one sandboxed in-process database, views per snapshot.

The database can read the tables' folders and nothing else on the machine
(``enable_external_access=false`` with ``allowed_directories``, then the
configuration is locked), so the same connection serves internal queries and
user SQL. A query runs on its own cursor with TEMP views named like the tables,
each the union of the snapshot's committed Parquet files and the acknowledged rows
still in the write-ahead log.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from store.errors import InvalidQuery, QueryTimeout, StoreError
from store.schema import SQL_VIEWS, TableSpec

MAX_RESULT_BYTES = 256 << 20


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
class Snapshot:
    tables: dict[str, TableSnapshot]

    @property
    def versions(self) -> dict[str, int]:
        return {name: t.version for name, t in self.tables.items()}


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
    ) -> None:
        self._db = duckdb.connect(
            config={
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "memory_limit": memory_limit,
                "threads": threads,
            }
        )
        if filesystem is not None:  # object storage, read through pyarrow (fsspec)
            self._db.register_filesystem(filesystem)
        dirs = ", ".join(sql_str(_readable(d)) for d in readable_dirs)
        for macro in MACROS:
            self._db.execute(macro)
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")
        self._db.execute("SET python_enable_replacements = false")
        self._db.execute("SET parquet_metadata_cache = true")
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
        only = ""
        if use_cases is not None:
            only = "(" + ", ".join(sql_str(u) for u in use_cases) + ")" if use_cases else ""
            only = f" WHERE use_case IN {only}" if only else " WHERE false"
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
    ) -> pa.Table:
        cur = self.cursor(snapshot, views, use_cases, sql)
        timer = None
        timed_out = threading.Event()
        if timeout_s:

            def _stop() -> None:
                timed_out.set()
                cur.interrupt()

            timer = threading.Timer(timeout_s, _stop)
            timer.daemon = True
            timer.start()
        try:
            rel = cur.sql(sql, params=list(params) if params else None)
            if max_rows is None:
                return rel.to_arrow_table()
            reader = rel.to_arrow_reader(min(max_rows + 1, 100_000))
            batches, n, size = [], 0, 0
            for b in reader:
                batches.append(b)
                n += b.num_rows
                size += b.nbytes
                if size > MAX_RESULT_BYTES:
                    raise InvalidQuery(
                        f"the result is larger than {MAX_RESULT_BYTES >> 20} MiB; "
                        "select fewer rows or columns",
                        param="sql",
                    )
                if n > max_rows:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
            return table.slice(0, max_rows + 1)
        except duckdb.InterruptException as exc:
            if timed_out.is_set():
                raise QueryTimeout(f"the query ran longer than {timeout_s:g} s") from exc
            raise StoreError(str(exc)) from exc
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
            raise InvalidQuery(str(exc), param="sql") from exc
        except duckdb.PermissionException as exc:
            raise InvalidQuery(
                f"not allowed: {exc}. SQL may read the views " + ", ".join(SQL_VIEWS) + " only",
                param="sql",
            ) from exc
        except duckdb.OutOfMemoryException as exc:
            raise InvalidQuery(f"the query needs more memory than allowed: {exc}") from exc
        except duckdb.Error as exc:
            raise InvalidQuery(str(exc), param="sql") from exc
        finally:
            if timer is not None:
                timer.cancel()
            cur.close()

    def check_tables(self, sql: str, allowed: Iterable[str]) -> None:
        cur = self._db.cursor()
        try:
            check_tables(cur, sql, allowed)
        finally:
            cur.close()

    def close(self) -> None:
        self._db.close()


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


_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
# Scalar functions that would show server configuration.
DENIED_FUNCTIONS = frozenset({"current_setting", "getvariable", "getenv"})
# Table functions that compute rows and touch nothing outside the query.
SAFE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})


def check_tables(db: duckdb.DuckDBPyConnection, sql: str, allowed: Iterable[str]) -> None:
    """Every table the query reads is one of ``allowed`` (or a CTE of the query): no
    table functions (read_parquet, glob, read_text …), no file paths, no other tables.
    Checked on DuckDB's own syntax tree (``json_serialize_sql``)."""
    row = db.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = orjson.loads(row[0]) if row else {"error": True, "error_message": "no result"}
    if tree.get("error"):
        raise InvalidQuery(f"SQL does not parse: {tree.get('error_message')}", param="sql")
    names = {a.lower() for a in allowed}
    try:
        _check_node(tree, frozenset(), names)
    except RecursionError:
        raise InvalidQuery("the query is nested too deeply", param="sql") from None


def _check_node(node: Any, ctes: frozenset[str], names: set[str]) -> None:
    """Walk the syntax tree; a CTE name counts only inside the query that declares it
    (a CTE in a subquery does not make the same name elsewhere read a real table)."""
    if isinstance(node, list):
        for v in node:
            _check_node(v, ctes, names)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict) and cte_map.get("map"):
        ctes = ctes | {str(e["key"]).lower() for e in cte_map["map"]}
    fn_name = str(node.get("function_name", "")).lower()
    if node.get("class") == "FUNCTION" and fn_name in DENIED_FUNCTIONS:
        raise InvalidQuery(f"function {fn_name}() is not allowed", param="sql")
    kind = node.get("type")
    if kind == "TABLE_FUNCTION":
        fn = str((node.get("function") or {}).get("function_name", "?"))
        if fn.lower() not in SAFE_TABLE_FUNCTIONS:
            raise InvalidQuery(
                f"table function {fn}() is not allowed; SQL may read the views "
                f"{', '.join(sorted(names))} only",
                param="sql",
            )
    if kind == "BASE_TABLE":
        name = str(node.get("table_name", "")).lower()
        qualified = node.get("schema_name") or node.get("catalog_name")
        # Plain identifiers only: no paths or globs, and no internal (_…) views,
        # whatever CTE a query names after them.
        plain = _IDENT.match(name) is not None and not name.startswith("_")
        if qualified or not plain or (name not in names and name not in ctes):
            raise InvalidQuery(
                f"unknown table {node.get('table_name')!r}; SQL may read the views "
                f"{', '.join(sorted(names))} only",
                param="sql",
            )
    for v in node.values():
        _check_node(v, ctes, names)


def check_select(sql: str) -> str:
    """Exactly one SELECT (or WITH … SELECT) statement, by DuckDB's own parser."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidQuery(f"SQL does not parse: {exc}", param="sql") from exc
    if len(statements) != 1:
        raise InvalidQuery(f"exactly one statement is allowed, got {len(statements)}", param="sql")
    stmt = statements[0]
    if stmt.type != duckdb.StatementType.SELECT:
        kind = str(stmt.type).rsplit(".", 1)[-1]
        raise InvalidQuery(
            f"only SELECT (or WITH … SELECT) statements are allowed, got {kind}", param="sql"
        )
    return stmt.query.strip().rstrip(";")
