"""Reading interactions back: list with filters and keyset pagination, get by id,
sandboxed SQL. Rows come back in the API's shape (JSON fields parsed, the
completion as it was sent)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from store.duck import Duck, Result, Snapshot, TableSnapshot, effective, use_case_condition
from store.engine import Store
from store.errors import NotFound, ValidationFailed
from store.filters import (
    Expr,
    decode_cursor,
    encode_cursor,
    files_by_day,
    filter_from_kwargs,
    must_labels,
    restrict,
)
from store.jsonutil import loads
from store.sandbox import check_select
from store.schema import INTERACTIONS_TABLE, SQL_VIEWS

MAX_LIMIT = 1000

_LIST_COLUMNS = (
    "id, created_at, use_case, model, messages, completion, completion_message, labels, "
    'session_id, "user", ab_campaign, source, usage, latency_ms, ttft_ms, params, status, error'
)


# What the first phase of a page finds: where each row is (file and row number).
_HIT = "id, created_at, filename, file_row_number AS rn"


def _micros(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _pending_label_changes(snap: Snapshot) -> bool:
    """Whether label amendments wait in the tail (the index learns them at the flush)."""
    t = snap.tables.get("amendments")
    if t is None or t.pending.num_rows == 0:
        return False
    return "labels" in t.pending.column("action").to_pylist()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_api(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row → the interaction object clients sent (and more)."""
    out = dict(row)
    out.pop("day", None)
    out["created_at"] = _iso(row["created_at"])
    out["messages"] = loads(row["messages"])
    message = out.pop("completion_message", None)
    if message is not None:
        out["completion"] = loads(message)
    labels = row.get("labels")
    out["labels"] = dict(labels) if labels is not None else None
    if row.get("params") is not None:
        out["params"] = loads(row["params"])
    return out


@dataclass
class Page:
    data: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None


class Reader:
    """Read operations over a ``Store`` (writer or read-only)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def page(
        self,
        flt: Expr,
        *,
        limit: int = 50,
        order: str = "desc",
        after: str | None = None,
        use_cases: tuple[str, ...] | None = None,
    ) -> Page:
        """One page of matching interactions. Two phases: find the page's ids reading
        only the filter and sort columns of the files the filter can touch, then read
        the full rows from just the files that hold them. ``use_cases``: what the
        caller may see (the views, e.g. feedback, hold only those)."""
        flt = restrict(flt, use_cases)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit: must be 1 to {MAX_LIMIT}, got {limit}", param="limit")
        if order not in ("asc", "desc"):
            raise ValidationFailed(f"order: must be asc or desc, got {order!r}", param="order")
        where, params = flt.where()
        start = None
        if after:
            ts, id_ = decode_cursor(after)
            op = "<" if order == "desc" else ">"
            where = f"({where}) AND (created_at, id) {op} (?, ?)"
            params += [ts, id_]
            start = ts.astimezone(UTC).date()
        snap = self.store.snapshot()
        t = snap.tables[INTERACTIONS_TABLE.name]
        cursor_ts = decode_cursor(after)[0] if after else None
        hits = self._find_indexed(snap, t, flt, where, params, limit + 1, order, use_cases,
                                  cursor_ts)  # fmt: skip
        if hits is None:
            hits = self._find(snap, t, flt, where, params, limit + 1, order, use_cases, start)
        has_more = len(hits) > limit
        hits = hits[:limit]
        rows = self._fetch(snap, t, hits)
        cursor = encode_cursor(hits[-1]["created_at"], hits[-1]["id"]) if has_more else None
        return Page([to_api(r) for r in rows], has_more, cursor)

    def _find(
        self,
        snap: Snapshot,
        t: TableSnapshot,
        flt: Expr,
        where: str,
        params: list[Any],
        n: int,
        order: str,
        use_cases: tuple[str, ...] | None,
        start: date | None = None,
    ) -> list[dict[str, Any]]:
        """The first ``n`` (id, created_at, filename) in ``order``. Files are read a few
        UTC days at a time, newest first for ``desc`` (oldest for ``asc``), doubling
        the window each round, until ``n`` hits are certain: a day not yet read holds
        only rows older (newer) than every row of the days read. So a lookup whose
        answer is in the last days reads only those days' files. The unflushed rows
        (any day) are in the first round. ``start``: the cursor's day; days before it
        in the walk hold nothing past the cursor and are skipped."""
        desc = order == "desc"
        direction = "DESC" if desc else "ASC"
        by_day = {
            day: paths
            for day, paths in files_by_day(flt, t.files, newest_first=desc).items()
            if start is None or day is None or not (day > start if desc else day < start)
        }
        days = list(by_day)
        pending = effective(snap, "interactions", t.pending_name)
        parts = [
            f"SELECT id, created_at, NULL AS filename, NULL AS rn FROM {pending} WHERE {where}"
        ]
        args = list(params)
        hits: list[dict[str, Any]] = []
        width, i = 1, 0
        while True:
            window = days[i : i + width]
            i += width
            width *= 2
            files = [p for d in window for p in by_day[d]]
            if files:
                scan = Duck.scan_sql(INTERACTIONS_TABLE, files, filename=True, row_number=True)
                scan = effective(snap, "interactions", scan)
                parts.append(f"SELECT {_HIT} FROM {scan} WHERE {where}")
                args += params
            if parts:
                sql = (
                    " UNION ALL ".join(parts)
                    + f" ORDER BY created_at {direction}, id {direction} LIMIT {n}"
                )
                # Feedback filters read the feedback view; otherwise no view is needed.
                found = self.store.query(
                    sql, args, snapshot=snap, views=flt.needs_feedback, use_cases=use_cases
                ).to_pylist()
                merged = hits + found
                merged.sort(key=lambda h: (h["created_at"], h["id"]), reverse=desc)
                hits = merged[:n]
            parts, args = [], []
            if i >= len(days):
                return hits
            # Rows of days not read yet are all beyond this bound (UTC days).
            last = window[-1] if window else None
            if len(hits) >= n and last is not None and None not in days[i:]:
                bound = datetime.combine(last, datetime.min.time(), UTC)
                if not desc:
                    bound += timedelta(days=1)
                if all((h["created_at"] >= bound) if desc else (h["created_at"] < bound)
                       for h in hits):  # fmt: skip
                    return hits

    def _find_indexed(
        self,
        snap: Snapshot,
        t: TableSnapshot,
        flt: Expr,
        where: str,
        params: list[Any],
        n: int,
        order: str,
        use_cases: tuple[str, ...] | None,
        cursor: datetime | None,
    ) -> list[dict[str, Any]] | None:
        """``_find`` through the on-disk index, for filters with label conditions: the
        index names candidate rows newest first (oldest for ``asc``), a batch at a
        time; each batch is checked against the whole filter on just those rows
        (``file_row_number``), until ``n`` match or no candidate is left. The rows not
        in indexed files (the unflushed tail, files the index has not reached) are
        searched whole, once. None: the index cannot answer (no label condition, no
        index, or label changes not flushed yet, which it does not know)."""
        conds = must_labels(flt)
        index = self.store.index
        if not conds or index is None or _pending_label_changes(snap):
            return None
        desc = order == "desc"
        direction = "DESC" if desc else "ASC"
        touched = [p for ps in files_by_day(flt, t.files).values() for p in ps]
        keep = set(touched)
        ucs = sorted({f.partition["use_case"] for f in t.files if f.path in keep})
        unindexed = index.unindexed(touched)
        parts = [f"SELECT id, created_at, NULL AS filename, NULL AS rn FROM "
                 f"{effective(snap, 'interactions', t.pending_name)} WHERE {where}"]  # fmt: skip
        args = list(params)
        if unindexed:
            scan = Duck.scan_sql(INTERACTIONS_TABLE, unindexed, filename=True, row_number=True)
            parts.append(
                f"SELECT {_HIT} FROM {effective(snap, 'interactions', scan)} WHERE {where}"
            )
            args += params
        hits = self._hits(snap, parts, args, direction, n, flt)
        bound = None
        if cursor is not None:
            us = _micros(cursor)
            bound = (None, us + 1) if desc else (us, None)
        pos = None
        batch = max(4 * n, 256)
        found: list[dict[str, Any]] = []
        while ucs:
            cands, pos = index.candidates(
                conds, use_cases=ucs, since=bound[0] if bound else None,
                until=bound[1] if bound else None, desc=desc, limit=batch, before=pos,
            )  # fmt: skip
            by_file: dict[str, list[int]] = {}
            for c in cands:
                if c.path in keep:  # files of this snapshot the filter can touch
                    by_file.setdefault(c.path, []).append(c.rn)
            parts, args = [], []
            for path, rns in sorted(by_file.items()):
                scan = Duck.scan_sql(INTERACTIONS_TABLE, [path], filename=True, row_number=True)
                scan = effective(snap, "interactions", scan)
                rows = ", ".join(str(r) for r in sorted(set(rns)))
                parts.append(f"SELECT {_HIT} FROM {scan} WHERE file_row_number IN ({rows}) "
                             f"AND {where}")  # fmt: skip
                args += params
            if parts:
                found += self._hits(snap, parts, args, direction, n, flt)
            if pos is None:
                break
            if len(found) >= n:
                # Done once the n-th match is strictly past the last candidate read: rows
                # not read yet all have later (earlier, for asc) times, or the same time
                # and an id the order may still put first.
                found.sort(key=lambda h: (h["created_at"], h["id"]), reverse=desc)
                found = found[:n]
                nth = _micros(found[-1]["created_at"])
                if (nth > pos[0]) if desc else (nth < pos[0]):
                    break
            batch = min(batch * 4, 100_000)
        merged = hits + found
        merged.sort(key=lambda h: (h["created_at"], h["id"]), reverse=desc)
        return merged[:n]

    def _hits(self, snap: Snapshot, parts: list[str], args: list[Any], direction: str, n: int,
              flt: Expr) -> list[dict[str, Any]]:  # fmt: skip
        sql = (
            " UNION ALL ".join(parts)
            + f" ORDER BY created_at {direction}, id {direction} LIMIT {n}"
        )
        return self.store.query(sql, args, snapshot=snap, views=flt.needs_feedback).to_pylist()

    def _fetch(
        self, snap: Snapshot, t: TableSnapshot, hits: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Full rows for ``hits`` (id, filename, rn), in the hits' order. Rows of a file
        are read by their row numbers, so only the row groups holding them are read."""
        if not hits:
            return []
        ids = [h["id"] for h in hits]
        by_file: dict[str, list[int]] = {}
        for h in hits:
            if h["filename"] is not None:
                by_file.setdefault(h["filename"], []).append(int(h["rn"]))
        pending = effective(snap, "interactions", t.pending_name)
        parts = [f"SELECT {_LIST_COLUMNS} FROM {pending} WHERE list_contains(?, id)"]
        args: list[Any] = [ids]
        for path, rns in sorted(by_file.items()):
            scan = Duck.scan_sql(INTERACTIONS_TABLE, [path], row_number=True)
            scan = effective(snap, "interactions", scan)
            rows = ", ".join(str(n) for n in sorted(set(rns)))
            parts.append(f"SELECT {_LIST_COLUMNS} FROM {scan} WHERE file_row_number IN ({rows})")
        found = self.store.query(" UNION ALL ".join(parts), args, snapshot=snap, views=False)
        by_id = {r["id"]: r for r in found.to_pylist()}
        return [by_id[i] for i in ids if i in by_id]

    def get(self, id_: str, *, use_cases: tuple[str, ...] | None = None) -> dict[str, Any]:
        """One interaction with its feedback and the comparisons that name it.
        ``use_cases``: what the caller may see (others are not found)."""
        self.store.settle([id_])
        snap = self.store.snapshot()
        rows = self._row(snap, id_, use_cases)
        if not rows:
            raise NotFound(f"no interaction with id {id_!r}", param="id")
        item = to_api(rows[0])
        # Its feedback and comparisons in one query (each query has a fixed cost), read
        # from the files and the unflushed rows directly: no views to set up.
        feedback, comparisons = self._source(snap, "feedback"), self._source(snap, "comparisons")
        if use_cases is not None:  # what the caller may see, as the views would
            cond = use_case_condition(use_cases)
            feedback = f"(SELECT * FROM {feedback} WHERE {cond})"
            comparisons = f"(SELECT * FROM {comparisons} WHERE {cond})"
        links = self.store.query(
            "SELECT (SELECT list(struct_pack(id, created_at, metric, value, reason, details, "
            f"user_id) ORDER BY created_at, id) FROM {feedback} WHERE completion_id = $1) AS fb, "
            "(SELECT list(struct_pack(id, created_at, metric, preferred_id, preferred_text, "
            "preferred_model, other_id, other_text, other_model, tied, user_id) "
            # Two equality scans, not an OR: each one skips row groups by bloom filter.
            f"ORDER BY created_at, id) FROM (SELECT * FROM {comparisons} WHERE preferred_id = $1 "
            f"UNION ALL SELECT * FROM {comparisons} WHERE other_id = $1 "
            "AND preferred_id IS DISTINCT FROM $1)) AS cmp",
            [id_], snapshot=snap, views=False,
        ).to_pylist()[0]  # fmt: skip
        fb = links["fb"] or []
        for f in fb:
            f["created_at"] = _iso(f["created_at"])
        item["feedback"] = fb
        named = links["cmp"] or []
        for c in named:
            c["created_at"] = _iso(c["created_at"])
            c["preferred"] = c["preferred_id"] == id_
        item["comparisons"] = named
        return item

    @staticmethod
    def _source(snap: Snapshot, table: str) -> str:
        """``table``'s rows of ``snap`` as reads see them, without a view: its files
        (``Duck.scan_sql``) and its unflushed rows."""
        t = snap.tables[table]
        parts = [f"SELECT * FROM {effective(snap, table, t.pending_name)}"]
        files = [f.path for f in t.files]
        if files:
            parts.append(f"SELECT * FROM {effective(snap, table, Duck.scan_sql(t.spec, files))}")
        return "(" + " UNION ALL ".join(parts) + ")"

    def _row(
        self, snap: Snapshot, id_: str, use_cases: tuple[str, ...] | None
    ) -> list[dict[str, Any]]:
        """The stored row of ``id_`` (amendments applied), reading as little as the
        index allows: one row of one file when it knows where the row is; else the
        unflushed rows and the files it does not cover yet; else every file."""
        t = snap.tables[INTERACTIONS_TABLE.name]
        index = self.store.index
        only = "" if use_cases is None else " AND list_contains(?, use_case)"
        extra: list[Any] = [] if use_cases is None else [list(use_cases)]
        if index is None:
            return self.store.query(
                f"SELECT {_LIST_COLUMNS} FROM interactions WHERE id = ? LIMIT 1", [id_],
                snapshot=snap, use_cases=use_cases,
            ).to_pylist()  # fmt: skip
        files = {f.path for f in t.files}
        loc = index.locate([id_]).get(id_)
        pending = effective(snap, "interactions", t.pending_name)
        parts = [f"SELECT {_LIST_COLUMNS} FROM {pending} WHERE id = ?{only}"]
        args: list[Any] = [id_, *extra]
        if loc is not None and loc.path in files:
            one = Duck.scan_sql(INTERACTIONS_TABLE, [loc.path], row_number=True)
            scan = effective(snap, "interactions", one)
            parts.append(f"SELECT {_LIST_COLUMNS} FROM {scan} "
                         f"WHERE file_row_number = {int(loc.rn)} AND id = ?{only}")  # fmt: skip
            args += [id_, *extra]
        elif loc is not None:  # moved to files this snapshot does not read yet: scan
            return self.store.query(
                f"SELECT {_LIST_COLUMNS} FROM interactions WHERE id = ? LIMIT 1", [id_],
                snapshot=snap, use_cases=use_cases,
            ).to_pylist()  # fmt: skip
        else:
            unindexed = index.unindexed(files)
            if unindexed:
                scan = effective(snap, "interactions", Duck.scan_sql(INTERACTIONS_TABLE, unindexed))
                parts.append(f"SELECT {_LIST_COLUMNS} FROM {scan} WHERE id = ?{only}")
                args += [id_, *extra]
        sql = " UNION ALL ".join(parts) + " LIMIT 1"
        return self.store.query(sql, args, snapshot=snap, views=False).to_pylist()

    def locate(self, ids: list[str], use_cases: tuple[str, ...] | None = None) -> dict[str, str]:
        """{id: use case} for those of ``ids`` that are stored (acknowledged) and, with
        ``use_cases``, visible to the caller."""
        ids = list(dict.fromkeys(ids))
        self.store.settle(ids)
        maybe = self.store.candidates(ids)
        if not maybe:
            return {}
        marks = ", ".join("?" for _ in maybe)
        rows = self.store.query(
            f"SELECT id, use_case FROM interactions WHERE id IN ({marks})",
            maybe,
            use_cases=use_cases,
        ).to_pylist()
        return {r["id"]: r["use_case"] for r in rows}

    def session_use_case(
        self,
        session_id: str,
        use_case: str | None = None,
        use_cases: tuple[str, ...] | None = None,
    ) -> str | None:
        """The use case of a stored session (within ``use_case`` when given, among
        ``use_cases`` the caller may see), or None."""
        where, args = "session_id = ?", [session_id]
        if use_case is not None:
            where, args = where + " AND use_case = ?", [*args, use_case]
        rows = self.store.query(
            f"SELECT use_case FROM interactions WHERE {where} ORDER BY use_case LIMIT 1",
            args,
            use_cases=use_cases,
        ).to_pylist()
        return rows[0]["use_case"] if rows else None

    def run_sql(
        self,
        sql: str,
        *,
        timeout_s: float | None = 30.0,
        max_rows: int | None = 100_000,
        use_cases: tuple[str, ...] | None = None,
    ) -> tuple[pa.Table, bool]:
        """Run one read-only SELECT. Returns the rows and whether they were cut at
        max_rows. ``use_cases``: the views hold only these use cases' rows."""
        query = self._checked(sql)
        table = self.store.duck.query(
            self.store.snapshot(), query, timeout_s=timeout_s, max_rows=max_rows,
            use_cases=use_cases, sandboxed=True,
        )  # fmt: skip
        truncated = max_rows is not None and table.num_rows > max_rows
        if truncated:
            table = table.slice(0, max_rows)
        return table, truncated

    @contextlib.contextmanager
    def sql_result(
        self,
        sql: str,
        *,
        timeout_s: float | None = 30.0,
        max_rows: int | None = 100_000,
        use_cases: tuple[str, ...] | None = None,
    ) -> Iterator[Result]:
        """One read-only SELECT whose rows are read batch by batch while its time and
        memory limits still hold (for encoding them: ``store.output``)."""
        query = self._checked(sql)
        with self.store.duck.stream(
            self.store.snapshot(), query, timeout_s=timeout_s, max_rows=max_rows,
            use_cases=use_cases, sandboxed=True,
        ) as result:  # fmt: skip
            yield result

    def _checked(self, sql: str) -> str:
        query = check_select(sql)
        self.store.duck.check_tables(query, SQL_VIEWS)
        return query

    # -- notebook API (SPEC: Python API) --------------------------------------------------
    def sql(self, sql: str, *, timeout_s: float | None = None) -> pl.DataFrame:
        """One read-only SELECT as a polars DataFrame (no row limit)."""
        table, _ = self.run_sql(sql, timeout_s=timeout_s, max_rows=None)
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        return df

    def interactions(self, **filters: Any) -> pl.LazyFrame:
        """The interactions matching ``filters`` (same names as the HTTP API) as a LazyFrame."""
        flt = filter_from_kwargs(filters)
        where, params = flt.where()
        table = self.store.query(f"SELECT * FROM interactions WHERE {where}", params)
        return pl.from_arrow(table).lazy()  # type: ignore[union-attr]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(path: str | Path) -> Reader:  # noqa: A001 - SPEC names it store.open
    """A read-only handle on a data root (works beside a running server)."""
    return Reader(Store(path, writable=False))
