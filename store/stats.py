"""Aggregates over filtered interactions: stats by group, label keys, use cases.

Each reads only the files the filter can touch (``Expr.prune``) plus the unflushed
rows, in one snapshot, and runs one DuckDB query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from store.duck import Duck, Snapshot, effective, sql_str
from store.errors import ValidationFailed
from store.filters import Expr, restrict
from store.schema import INTERACTIONS_TABLE

MAX_GROUPS = 10_000  # rows of a stats answer
TIME_BUCKETS = ("hour", "day", "week", "month")
COLUMNS = ("use_case", "model", "source", "status", "user", "session_id", "ab_campaign")

_SIMPLE = {
    "count": "count(*)",
    "sum_prompt_tokens": "sum(b.usage.prompt_tokens)",
    "sum_completion_tokens": "sum(b.usage.completion_tokens)",
    "sum_tokens": "sum(b.usage.total_tokens)",
    "avg_latency_ms": "avg(b.latency_ms)",
    "avg_ttft_ms": "avg(b.ttft_ms)",
    "error_rate": "avg(CASE WHEN b.status = 'error' THEN 1.0 ELSE 0.0 END)",
}
for _q in (50, 90, 95, 99):
    _SIMPLE[f"p{_q}_latency_ms"] = f"quantile_cont(b.latency_ms, {_q / 100})"
    _SIMPLE[f"p{_q}_ttft_ms"] = f"quantile_cont(b.ttft_ms, {_q / 100})"
METRICS = tuple(_SIMPLE) + (
    "avg_feedback:<metric>", "count_feedback:<metric>", "std_feedback:<metric>",
)  # fmt: skip


@dataclass(frozen=True)
class Base:
    """SQL for the filtered interactions of a snapshot, as a CTE named ``b``."""

    sql: str
    params: list[Any]


def base(snap: Snapshot, expr: Expr, use_cases: tuple[str, ...] | None) -> Base:
    expr = restrict(expr, use_cases)
    where, params = expr.where()
    t = snap.tables[INTERACTIONS_TABLE.name]
    cols = ", ".join(f'"{c}"' for c in INTERACTIONS_TABLE.columns)
    parts = [f"SELECT {cols} FROM {effective(snap, 'interactions', t.pending_name)} WHERE {where}"]
    args = list(params)
    files = expr.prune(t.files)
    if files:
        scan = Duck.scan_sql(INTERACTIONS_TABLE, files)
        parts.append(f"SELECT {cols} FROM {effective(snap, 'interactions', scan)} WHERE {where}")
        args += params
    return Base(" UNION ALL ".join(parts), args)


def _names(values: list[str], allowed: str, param: str) -> list[str]:
    out: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if not name:
                continue
            if "\x00" in name or len(name) > 200:
                raise ValidationFailed(
                    f"{param}: {name[:40]!r} is not a valid {allowed}", param=param
                )
            if name in out:
                raise ValidationFailed(f"{param}: {name!r} is given twice", param=param)
            out.append(name)
    return out


def _group_sql(name: str) -> str:
    if name in COLUMNS:
        return f'b."{name}"'
    if name == "day":  # the partition column: no per-row work
        return 'b."day"'
    if name in TIME_BUCKETS:  # formatted after grouping (``_bucket``), not per row
        return f"date_trunc('{name}', b.created_at)"
    if name.startswith("label:") and len(name) > 6:
        return f"map_extract_value(b.labels, {sql_str(name[6:])})"
    raise ValidationFailed(
        f"group_by: unknown group {name!r}. Groups: {', '.join(COLUMNS + TIME_BUCKETS)}, "
        "label:<key>",
        param="group_by",
    )


def stats(
    store: Any,
    expr: Expr,
    group_by: list[str],
    metrics: list[str],
    *,
    use_cases: tuple[str, ...] | None = None,
    timeout_s: float | None = 30.0,
) -> dict[str, Any]:
    """``{"group_by", "metrics", "data": [{group..., metric...}], "truncated"}``."""
    groups = _names(group_by, "group", "group_by")
    wanted = _names(metrics, "metric", "metrics") or ["count"]
    if len(groups) > 5:
        raise ValidationFailed("group_by: at most 5 groups", param="group_by")
    select = [f'{_group_sql(g)} AS "g{i}"' for i, g in enumerate(groups)]
    feedback: list[str] = []
    for i, m in enumerate(wanted):
        kind, _, metric = m.partition(":")
        if m in _SIMPLE:
            select.append(f'{_SIMPLE[m]} AS "m{i}"')
        elif kind in ("avg_feedback", "count_feedback", "std_feedback") and metric:
            if metric not in feedback:
                feedback.append(metric)
            j = feedback.index(metric)
            if kind == "avg_feedback":
                select.append(f'sum(f.s{j}) / nullif(sum(f.c{j}), 0) AS "m{i}"')
            elif kind == "std_feedback":  # sample standard deviation of the values
                n, s_, q = f"sum(f.c{j})", f"sum(f.s{j})", f"sum(f.q{j})"
                select.append(
                    f"sqrt(greatest(({q} - {s_} * {s_} / nullif({n}, 0)) / nullif({n} - 1, 0),"
                    f' 0)) AS "m{i}"'
                )
            else:
                select.append(f'coalesce(sum(f.c{j}), 0) AS "m{i}"')
        else:
            raise ValidationFailed(
                f"metrics: unknown metric {m!r}. Metrics: {', '.join(METRICS)}", param="metrics"
            )
    snap = store.snapshot()
    b = base(snap, expr, use_cases)
    sql = f"WITH b AS ({b.sql})"
    params = list(b.params)
    join = ""
    if feedback:
        cols = ", ".join(
            f"sum(value) FILTER (WHERE metric = {sql_str(m)}) AS s{j}, "
            f"count(*) FILTER (WHERE metric = {sql_str(m)}) AS c{j}, "
            f"sum(value * value) FILTER (WHERE metric = {sql_str(m)}) AS q{j}"
            for j, m in enumerate(feedback)
        )
        sql += (
            f", f AS (SELECT completion_id, {cols} FROM feedback "
            f"WHERE list_contains(?, metric) GROUP BY completion_id)"
        )
        params.append(feedback)
        join = " LEFT JOIN f ON f.completion_id = b.id"
    order = ", ".join(f'"g{i}" NULLS LAST' for i in range(len(groups)))
    sql += f" SELECT {', '.join(select)} FROM b{join}"
    if groups:
        keys = ", ".join(f'"g{i}"' for i in range(len(groups)))
        sql += f" GROUP BY {keys} ORDER BY {order}"
    sql += f" LIMIT {MAX_GROUPS + 1}"
    table = store.query(
        sql,
        params,
        snapshot=snap,
        views=bool(feedback),
        use_cases=use_cases,
        timeout_s=timeout_s,
    )
    rows = table.to_pylist()
    truncated = len(rows) > MAX_GROUPS
    data = []
    for r in rows[:MAX_GROUPS]:
        item = {g: _bucket(r[f"g{i}"]) if g in TIME_BUCKETS else r[f"g{i}"]
                for i, g in enumerate(groups)}  # fmt: skip
        item.update({m: _num(r[f"m{i}"]) for i, m in enumerate(wanted)})
        data.append(item)
    return {"group_by": groups, "metrics": wanted, "data": data, "truncated": truncated}


def _bucket(x: Any) -> str | None:
    """A time bucket's start as ``YYYY-MM-DDTHH:MM:SSZ`` (a date is its midnight, UTC)."""
    if x is None:
        return None
    if isinstance(x, datetime):
        return x.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{x.isoformat()}T00:00:00Z"


def _num(x: Any) -> Any:
    """Decimals (DuckDB sums of integers) as int or float for JSON."""
    if x is None or isinstance(x, int | float):
        return x
    f = float(x)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def labels(
    store: Any,
    expr: Expr,
    *,
    top: int = 10,
    key: str | None = None,
    use_cases: tuple[str, ...] | None = None,
    timeout_s: float | None = 30.0,
) -> list[dict[str, Any]]:
    """Label keys with their interaction counts, distinct values and top values."""
    snap = store.snapshot()
    b = base(snap, expr, use_cases)
    only = f"WHERE e.key = {sql_str(key)}" if key is not None else ""
    sql = (
        f"WITH b AS ({b.sql}), "
        "kv AS (SELECT unnest(map_entries(b.labels)) AS e FROM b), "
        f"v AS (SELECT e.key AS key, e.value AS value, count(*) AS n FROM kv {only} GROUP BY ALL) "
        "SELECT key, value, n, (sum(n) OVER (PARTITION BY key))::BIGINT AS total, "
        "count(*) OVER (PARTITION BY key) AS distinct_values, "
        "row_number() OVER (PARTITION BY key ORDER BY n DESC, value) AS rank "
        f"FROM v QUALIFY rank <= {int(top)} ORDER BY total DESC, key, rank"
    )
    rows = store.query(sql, b.params, snapshot=snap, views=False, timeout_s=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for r in rows.to_pylist():
        item = out.setdefault(
            r["key"],
            {"key": r["key"], "count": r["total"], "distinct_values": r["distinct_values"],
             "top_values": []},
        )  # fmt: skip
        item["top_values"].append({"value": r["value"], "count": r["n"]})
    return list(out.values())


def use_cases(
    store: Any,
    expr: Expr,
    *,
    use_cases: tuple[str, ...] | None = None,
    timeout_s: float | None = 30.0,
) -> list[dict[str, Any]]:
    """Use cases with their counts, time span and models."""
    snap = store.snapshot()
    b = base(snap, expr, use_cases)
    sql = (
        f"WITH b AS ({b.sql}) SELECT use_case, model, count(*) AS n, "
        "min(created_at) AS first_at, max(created_at) AS last_at FROM b GROUP BY ALL "
        "ORDER BY use_case, n DESC, model NULLS LAST"
    )
    rows = store.query(sql, b.params, snapshot=snap, views=False, timeout_s=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for r in rows.to_pylist():
        item = out.setdefault(
            r["use_case"],
            {"use_case": r["use_case"], "count": 0, "first_at": r["first_at"],
             "last_at": r["last_at"], "models": []},
        )  # fmt: skip
        item["count"] += r["n"]
        item["first_at"] = min(item["first_at"], r["first_at"])
        item["last_at"] = max(item["last_at"], r["last_at"])
        item["models"].append({"model": r["model"], "count": r["n"]})
    for item in out.values():
        for k in ("first_at", "last_at"):
            item[k] = _iso(item[k])
    return list(out.values())


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
