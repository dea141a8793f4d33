"""The data lifecycle: deletion that really deletes, and retention.

**Deletion** has two steps.

1. *Hide at once.* ``delete`` resolves a filter (or ids) to the interactions it
   matches now and appends one tombstone per interaction (``amendments`` rows with
   ``action = 'delete'``, ids only: never the filter, which may name the person)
   through the write-ahead log. Every read path applies the tombstones
   (``store.duck.effective``): list, get, stats, SQL, export, stored completions; the
   feedback and comparisons of a deleted interaction are hidden with it.
2. *Remove.* ``purge`` (run by ``istore compact``/``vacuum`` and the server's
   maintenance job) rewrites the Parquet files that still hold tombstoned rows (a Delta
   delete) in ``interactions``, ``feedback``, ``comparisons`` and the label amendments,
   then closes the write-ahead-log segment in use so the segments holding the original
   writes are deleted as soon as they are applied. ``vacuum`` then deletes the files
   the rewrite replaced once they are older than its retention window: after
   ``istore vacuum --retention-hours 0 --force`` no byte of a deleted interaction is
   left under the data root. (Delta statistics, which copy column values into the
   transaction log, are only kept for columns that hold no personal data:
   ``STATS_COLUMNS``.)

**Retention** (``retention.json`` with the data, shared by every node of the root:
``store.state``; ``istore retention set``): rows of a use case older than its
``retention_days`` (or the default) are deleted from every table by ``apply_retention``
(the server runs it on its maintenance schedule)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from store.errors import Unavailable, ValidationFailed
from store.filters import Expr, restrict
from store.ids import uuid7_many
from store.rows import Columns
from store.schema import (
    AMENDMENTS_TABLE,
    COMPARISONS_TABLE,
    FEEDBACK_TABLE,
    INTERACTIONS_TABLE,
    TABLES,
    check_use_case,
)
from store.state import Document, document

if TYPE_CHECKING:
    from store.engine import Store

log = logging.getLogger("istore.lifecycle")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = 2000  # ids per Delta delete predicate
RETENTION_FILE = "retention.json"
MAX_DAYS = 36_500  # a century: every cutoff stays a valid timestamp


def _now_us() -> int:
    return (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)


def tombstones(pairs: list[tuple[str, str]]) -> Columns:
    """``amendments`` rows that delete the interactions ``(id, use_case)``."""
    now = _now_us()
    day = now // 86_400_000_000
    n = len(pairs)
    return {
        "id": uuid7_many(n),
        "created_at": [now] * n,
        "completion_id": [p[0] for p in pairs],
        "use_case": [p[1] for p in pairs],
        "action": ["delete"] * n,
        "labels": [None] * n,
        "day": [day] * n,
    }


def chunks(pairs: list[tuple[str, str]], size: int = 50_000) -> list[list[tuple[str, str]]]:
    """Tombstones go to the log in records of ``size`` (each a few MB), never one
    unbounded record."""
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def matching(store: Store, expr: Expr, use_cases: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """The visible (not yet deleted) interactions ``expr`` matches now: (id, use case)."""
    where, params = restrict(expr, use_cases).where()
    rows = store.query(
        f"SELECT id, use_case FROM interactions WHERE {where}",
        params,
        use_cases=use_cases,
        max_rows=None,
    ).to_pylist()
    return [(r["id"], r["use_case"]) for r in rows]


def _quote_list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def purge(store: Store) -> dict[str, int]:
    """Rewrite away every tombstoned interaction and what belongs to it; rows removed
    per table. The tail not yet flushed stays hidden and goes at the next purge."""
    store.flush()
    removed: dict[str, int] = {}
    with store.maintenance():
        # Only the tombstoned ids still in some file: one join per table and column,
        # so a run with nothing left to remove costs a few scans, however many
        # tombstones there are.
        gone: dict[str, Any] = {}  # id → the earliest day a row naming it is in
        with store.current_view(AMENDMENTS_TABLE) as tomb:
            if tomb is not None:
                dead = f"(SELECT completion_id FROM \"{tomb}\" WHERE action = 'delete')"
                for spec, cols, extra in _LINKED:
                    for col in cols:
                        cond = f"{col} IN {dead}" + (f" AND {extra}" if extra else "")
                        t = store.committed(spec, f"DISTINCT {col} AS x, day", cond)
                        if not t.num_columns:
                            continue
                        for x, day in zip(t.column("x").to_pylist(),
                                          t.column("day").to_pylist(), strict=True):  # fmt: skip
                            if x is not None:
                                gone[x] = min(gone.get(x, day), day)
        if gone:
            # In day order: each chunk's deletes then rewrite the files of a few days,
            # not of every day (``Store.delete_where`` names the days it rewrites).
            ids = sorted(gone, key=lambda x: (gone[x], x))
            removed = _delete_ids(store, ids, "deleted")
        store.rotate_log()
    store.flush()  # releases the log segments the rotation closed
    if any(removed.values()):
        log.info("purged deleted interactions: %s", removed)
    return removed


def plan_purge(store: Store) -> dict[str, int]:
    """The rows per table ``purge`` would remove now (deleted interactions and what
    names them, still in the files), removing nothing."""
    store.flush()
    counts: dict[str, int] = {}
    with store.current_view(AMENDMENTS_TABLE) as tomb:
        if tomb is None:
            return counts
        dead = f"(SELECT completion_id FROM \"{tomb}\" WHERE action = 'delete')"
        for spec, cols, extra in _LINKED:
            cond = "(" + " OR ".join(f"{c} IN {dead}" for c in cols) + ")"
            t = store.committed(spec, "count(*) AS n", cond + (f" AND {extra}" if extra else ""))
            counts[spec.name] = int(t.column("n")[0].as_py() or 0) if t.num_columns else 0
    return counts


_LINKED = (
    (INTERACTIONS_TABLE, ("id",), ""),
    (FEEDBACK_TABLE, ("completion_id",), ""),
    (COMPARISONS_TABLE, ("preferred_id", "other_id"), ""),
    (AMENDMENTS_TABLE, ("completion_id",), "action = 'labels'"),
)


def _delete_ids(store: Store, ids: list[str], why: str) -> dict[str, int]:
    """Delete interactions ``ids`` with the feedback, comparisons and label amendments
    that name them (their tombstones stay). Call inside ``store.maintenance()``; each
    Delta delete runs beside ingest (``Store.delete_where``)."""
    removed: dict[str, int] = {}
    for spec, cols, extra in _LINKED:
        n = 0
        for i in range(0, len(ids), _CHUNK):
            if store.maintenance_stop.is_set():  # the node stops: the next run goes on
                raise Unavailable("maintenance stopped: the server is shutting down")
            quoted = _quote_list(ids[i : i + _CHUNK])
            cond = " OR ".join(f"{c} IN ({quoted})" for c in cols)
            if extra:
                cond = f"({cond}) AND {extra}"
            n += store.delete_where(spec, cond, why)
        removed[spec.name] = n
    return removed


# -- retention ---------------------------------------------------------------------------
_UNREAD = object()


@dataclass
class Retention:
    """Days to keep, per use case, and a default for the others (None: forever)."""

    default_days: float | None = None
    use_cases: dict[str, float] = field(default_factory=dict)
    # The version of the document this policy was read from: ``save`` writes only if
    # nobody changed it since (another node, another command).
    _read_at: object = field(default=_UNREAD, repr=False, compare=False)

    @classmethod
    def load(cls, source: str | Path | Document) -> Retention:
        """The rules of ``source``: a folder holding ``retention.json``, or the shared
        document (``SharedState.document``)."""
        doc = document(source, RETENTION_FILE)
        stamp, data = doc.read()
        policy = cls()
        policy._read_at = stamp
        if data is None:
            return policy
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed(
                f"{doc.where}: not valid JSON ({exc}); days must be numbers"
            ) from None
        if not isinstance(raw, dict):
            raise ValidationFailed(f"{doc.where}: must hold an object")
        policy.set(None, raw.get("default_days"))  # checked like `istore retention set`
        for uc, days in (raw.get("use_cases") or {}).items():
            policy.set(uc, days)
        return policy

    def save(self, target: str | Path | Document) -> None:
        doc = document(target, RETENTION_FILE)
        data = orjson.dumps(
            {"default_days": self.default_days, "use_cases": self.use_cases},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
        if self._read_at is _UNREAD:
            for edit in doc.edits():
                edit.new = data
        else:
            doc.write_if(self._read_at, data)

    def set(self, use_case: str | None, days: float | None) -> None:
        if days is not None and not 0 < days <= MAX_DAYS:
            raise ValidationFailed(
                f"days: must be a number of days from more than 0 to {MAX_DAYS}", param="days"
            )
        if use_case is None:
            self.default_days = days
            return
        try:
            check_use_case(use_case)
        except ValueError as exc:
            raise ValidationFailed(f"use_case: {exc}", param="use_case") from None
        if days is None:
            self.use_cases.pop(use_case, None)
        else:
            self.use_cases[use_case] = days

    def conditions(self, now: datetime) -> list[tuple[str, str]]:
        """(description, Delta predicate) per rule: rows to delete."""
        out = []
        for uc, days in sorted(self.use_cases.items()):
            cutoff = _ts(now - timedelta(days=days))
            out.append((f"{uc}: older than {days:g} days",
                        f"use_case = '{uc}' AND created_at < {cutoff}"))  # fmt: skip
        if self.default_days is not None:
            cutoff = _ts(now - timedelta(days=self.default_days))
            others = _quote_list(sorted(self.use_cases))
            cond = f"created_at < {cutoff}"
            if others:
                cond = f"(use_case IS NULL OR use_case NOT IN ({others})) AND {cond}"
            out.append((f"default: older than {self.default_days:g} days", cond))
        return out


def _ts(t: datetime) -> str:
    """A timestamp literal that DuckDB and Delta's DataFusion both compare correctly."""
    return "'" + t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"


def apply_retention(
    store: Store, policy: Retention, now: datetime | None = None, *, dry_run: bool = False
) -> dict[str, int]:
    """Delete every row older than its use case's window, in every table; rows per table.
    ``dry_run``: count them and delete nothing (``plan_retention``)."""
    rules = policy.conditions(now or datetime.now(UTC))
    removed: dict[str, int] = {}
    if not rules:
        return removed
    store.flush()
    if dry_run:
        return plan_retention(store, rules)
    with store.maintenance():
        for _, cond in rules:
            # The interactions past the window, and what names them (whatever its age).
            t = store.committed(INTERACTIONS_TABLE, "id", cond, order_by="day, id")
            ids = t.column("id").to_pylist() if t.num_columns else []
            for name, n in _delete_ids(store, ids, "retention").items():
                removed[name] = removed.get(name, 0) + n
            # Then every other table's own rows past the window.
            for spec in TABLES.values():
                if "use_case" in spec.columns and spec is not INTERACTIONS_TABLE:
                    n = store.delete_where(spec, cond, "retention")
                    removed[spec.name] = removed.get(spec.name, 0) + n
    if any(removed.values()):
        log.info("retention deleted %s", removed)
    return removed


def plan_retention(store: Store, rules: list[tuple[str, str]]) -> dict[str, int]:
    """The rows per table ``apply_retention`` would delete under ``rules``, deleting
    nothing: per table, its rows past the window or naming an interaction that is (the
    two sets counted once). Rules are per use case and disjoint, so their counts add."""
    counts: dict[str, int] = {}
    with store.current_view(INTERACTIONS_TABLE) as view:
        for _, cond in rules:
            old = f'(SELECT id FROM "{view}" WHERE {cond})' if view is not None else "(NULL)"
            for spec in TABLES.values():
                if spec is INTERACTIONS_TABLE:
                    where = cond
                else:
                    own = [cond] if "use_case" in spec.columns else []
                    linked = [
                        "("
                        + " OR ".join(f"{c} IN {old}" for c in cols)
                        + ")"
                        + (f" AND {extra}" if extra else "")
                        for linked_spec, cols, extra in _LINKED
                        if linked_spec is spec
                    ]
                    if not own and not linked:
                        continue
                    where = " OR ".join(f"({w})" for w in own + linked)
                t = store.committed(spec, "count(*) AS n", where)
                n = int(t.column("n")[0].as_py() or 0) if t.num_columns else 0
                counts[spec.name] = counts.get(spec.name, 0) + n
    return counts


def retention_summary(policy: Retention) -> dict[str, Any]:
    return {"default_days": policy.default_days, "use_cases": dict(policy.use_cases)}
