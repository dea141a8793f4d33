"""The statement checker of user SQL: what a query may name, read and call.

Two independent checks, both on DuckDB's own structures, never on the text:

1. ``check_select`` + ``check_tables`` walk the parsed statement
   (``json_serialize_sql``): exactly one plain SELECT; every table it reads is an
   allowed view or a CTE *in scope* where it is named; every function is on the
   reviewed allow-list (``store.sql_functions``); no SHOW / DESCRIBE / SUMMARIZE, no
   qualified names, no forms the walker does not know. CTE scoping follows DuckDB's
   binder, checked against it in ``tests/test_sql_attacks.py``: a CTE is visible in
   the CTEs declared after it and in the query's body, never in earlier CTE bodies,
   and in its own body only in the recursive term of a ``WITH RECURSIVE … UNION``
   (anywhere else its own name reads the real table of that name).
2. ``check_plan`` reads the physical plan DuckDB will run (``EXPLAIN``) on the cursor
   that will run it, after views and macros are expanded: every operator that
   produces rows from outside the query must be a scan of the store's own files or
   rows, or one of the allowed table functions. A mistake in the first check (a
   macro that expands to a catalog function, a scoping rule DuckDB changes) is
   caught here, not shipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import duckdb
import orjson

from store.errors import InvalidQuery
from store.sql_functions import INTERNAL_PREFIX, allowed_function, allowed_table_function

_IDENT = re.compile(r"^[a-z][a-z0-9_]*\Z")

_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"})
_TABLE_REFS = frozenset(
    {"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST", "PIVOT"}
)
_EXPRESSIONS = frozenset(
    {"BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION",
     "CONSTANT", "FUNCTION", "LAMBDA", "LAMBDA_REF", "OPERATOR", "PARAMETER",
     "POSITIONAL_REFERENCE", "STAR", "SUBQUERY", "TYPE", "WINDOW"}
)  # fmt: skip
# Dicts that are neither: modifiers, orders, literals, arguments, CTE entries …
_PLAIN_TYPES = re.compile(
    r"^(?:[A-Z_]+_MODIFIER|ORDER_[A-Z_]+|ASCENDING|DESCENDING|[A-Z_]+_TYPE_INFO)\Z"
)

_SHOW = {
    "SHOW": "SHOW",
    "SHOW_SPECIAL": "SHOW",
    "DESCRIBE": "DESCRIBE",
    "SUMMARY": "SUMMARIZE",
}


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


def check_tables(db: duckdb.DuckDBPyConnection, sql: str, allowed: Iterable[str]) -> None:
    """Every table ``sql`` reads is one of ``allowed`` or a CTE in scope, and every
    function it calls is allowed (see the module docstring)."""
    row = db.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    if row is None:
        raise InvalidQuery("SQL does not parse", param="sql")
    try:
        tree = orjson.loads(row[0])
    except orjson.JSONDecodeError:  # orjson stops at 1024 levels: far beyond real queries
        raise InvalidQuery("the query is nested too deeply", param="sql") from None
    if tree.get("error"):
        raise InvalidQuery(f"SQL does not parse: {tree.get('error_message')}", param="sql")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise InvalidQuery("exactly one SELECT statement is allowed", param="sql")
    _Walk({a.lower() for a in allowed}).run(statements[0]["node"])


class _Walk:
    """An iterative walk (no recursion limit to trip) carrying the CTE names in scope."""

    def __init__(self, views: set[str]) -> None:
        self.views = views
        self.stack: list[tuple[Any, frozenset[str]]] = []

    def run(self, root: Any) -> None:
        if not isinstance(root, dict) or root.get("type") not in _QUERY_NODES:
            raise InvalidQuery("only plain SELECT statements are allowed", param="sql")
        self.stack.append((root, frozenset()))
        while self.stack:
            node, scope = self.stack.pop()
            if isinstance(node, list):
                self.stack.extend((v, scope) for v in node)
            elif isinstance(node, dict):
                self._visit(node, scope)

    def _push(self, node: dict[str, Any], scope: frozenset[str], skip: tuple[str, ...]) -> None:
        self.stack.extend((v, scope) for k, v in node.items() if k not in skip)

    def _visit(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        cls = node.get("class")
        kind = node.get("type") if isinstance(node.get("type"), str) else None
        if cls is not None:
            if cls not in _EXPRESSIONS:
                self._refuse(f"expressions of kind {cls} are not supported")
            if cls in ("FUNCTION", "WINDOW"):
                self._function(node)
            self._push(node, scope, ())
        elif kind in _QUERY_NODES:
            self._query(node, scope)
        elif kind in _TABLE_REFS:
            self._table_ref(node, scope)
        elif kind == "SHOW_REF":
            what = _SHOW.get(str(node.get("show_type")), "SHOW")
            self._refuse(f"{what} is not allowed")
        elif isinstance(kind, str) and not _PLAIN_TYPES.match(kind):
            self._refuse(f"{kind.lower().replace('_', ' ')} is not supported")
        else:
            self._push(node, scope, ())

    def _query(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        entries = (node.get("cte_map") or {}).get("map") or []
        declared: list[str] = []
        for entry in entries:
            name = str(entry.get("key", "")).lower()
            value = entry.get("value") or {}
            body_scope = scope | frozenset(declared)  # the CTEs before it, not after
            body = value.get("query_node")
            if (
                isinstance(body, dict)
                and body.get("type") == "RECURSIVE_CTE_NODE"
                and str(body.get("cte_name", "")).lower() == name
            ):
                # Its own name means itself only in the recursive term.
                self.stack.append((body.get("right"), body_scope | {name}))
                self._push(body, body_scope, ("right",))
            else:
                self.stack.append((body, body_scope))
            self._push(value, body_scope, ("query_node",))
            declared.append(name)
        self._push(node, scope | frozenset(declared), ("cte_map",))

    def _table_ref(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        kind = node["type"]
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", "")).lower()
            qualified = node.get("schema_name") or node.get("catalog_name")
            plain = _IDENT.match(name) is not None and not name.startswith("_")
            if qualified or not plain or (name not in self.views and name not in scope):
                self._refuse(f"unknown table {node.get('table_name')!r}")
            if node.get("at_clause"):
                self._refuse("time travel (AT …) is not supported")
        elif kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            name = str(fn.get("function_name", "?"))
            if (
                fn.get("class") != "FUNCTION"
                or fn.get("schema")
                or fn.get("catalog")
                or not allowed_table_function(name)
            ):
                self._refuse(f"table function {name}() is not allowed")
            self._push(fn, scope, ("function_name",))
            self._push(node, scope, ("function",))
            return
        elif kind == "PIVOT":
            for p in node.get("pivots") or []:
                if isinstance(p, dict) and p.get("pivot_enum"):
                    self._refuse("PIVOT over an ENUM type is not supported")
        self._push(node, scope, ())

    def _function(self, node: dict[str, Any]) -> None:
        name = str(node.get("function_name", ""))
        if node.get("schema") or node.get("catalog"):
            raise InvalidQuery(f"function {name}() must be called by its plain name", param="sql")
        if name.startswith(INTERNAL_PREFIX) or not allowed_function(name):
            raise InvalidQuery(
                f"function {name}() is not allowed in SQL over the views", param="sql"
            )

    def _refuse(self, why: str) -> None:
        raise InvalidQuery(
            f"{why}; SQL may read the views {', '.join(sorted(self.views))} only", param="sql"
        )


# Physical operators that read rows from outside the query, and those we allow: the
# views' Parquet scans and registered unflushed rows, and the row-computing functions.
_SOURCES_ALLOWED = frozenset(
    {"READ_PARQUET", "PARQUET_SCAN", "PYTHON_ARROW_SCAN", "ARROW_SCAN", "RANGE",
     "GENERATE_SERIES", "UNNEST", "JSON_EACH", "JSON_TREE"}
)  # fmt: skip
# Leaves that hold rows the query itself made (constants, CTEs, VALUES, joins' sides).
_SOURCES_INTERNAL = frozenset(
    {"DUMMY_SCAN", "EMPTY_RESULT", "COLUMN_DATA_SCAN", "CTE_SCAN", "REC_CTE_SCAN",
     "RECURSIVE_CTE_SCAN", "DELIM_SCAN", "CHUNK_SCAN", "EXPRESSION_SCAN"}
)  # fmt: skip


def check_plan(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    """The plan ``cur`` would run for ``sql`` reads only the store's rows (see module
    docstring). Raises DuckDB's own errors for SQL that does not bind."""
    rows = cur.execute("EXPLAIN (FORMAT json) " + sql).fetchall()
    try:
        plans = [orjson.loads(r[1]) for r in rows]
    except orjson.JSONDecodeError:
        raise InvalidQuery("the query is nested too deeply", param="sql") from None
    stack: list[Any] = list(plans)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        children = node.get("children") or []
        stack.extend(children)
        name = str(node.get("name", ""))
        if children or not name:
            continue
        if name in _SOURCES_INTERNAL:
            continue
        extra = node.get("extra_info") if isinstance(node.get("extra_info"), dict) else {}
        fn = str(extra.get("Function", name)) if extra else name
        if name not in _SOURCES_ALLOWED and fn not in _SOURCES_ALLOWED:
            raise InvalidQuery(
                f"the query reads {fn.lower()}, which SQL over the views may not", param="sql"
            )
