"""Filters over interactions, defined once and compiled to SQL with parameters.

The HTTP list and query, stats, labels, export and the Python API
(``Reader.interactions``) all take a ``Filter`` (query-string names, see
``filter_from_kwargs``) or an expression of them (``And``/``Or``/``Not``, from the JSON
filter body, see ``parse_expr``); nothing else builds WHERE clauses."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from store.duck import DataFile
from store.errors import ValidationFailed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_unix(value: float) -> datetime:
    """Unix seconds, or milliseconds past 2e10 (pydantic's rule, also used for ingest)."""
    return datetime.fromtimestamp(value / 1000 if abs(value) > 2e10 else value, UTC)


_MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)


def _z(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | float | int | datetime, param: str) -> datetime:
    """ISO-8601 (naive = UTC), unix seconds, or unix milliseconds (past 2e10), within
    the years 1900 to 9999 (what the store keeps)."""
    ts = _parse_time(value, param)
    try:
        ok = _MIN_TIME <= ts.astimezone(UTC) < _MAX_TIME
    except OverflowError:
        ok = False
    if not ok:
        raise ValidationFailed(f"{param}: {value!r} is outside 1900 to 9999 (UTC)", param=param)
    return ts


def _parse_time(value: str | float | int | datetime, param: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    bad = ValidationFailed(
        f"{param}: {value!r} is not an ISO-8601 time or unix seconds in range", param=param
    )
    if isinstance(value, int | float):
        try:
            return _from_unix(value)
        except (ValueError, OverflowError, OSError):
            raise bad from None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        try:
            return _from_unix(seconds)
        except (ValueError, OverflowError, OSError):
            raise bad from None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_label(expr: str, param: str = "label") -> tuple[str, tuple[str, ...]]:
    """``key:value`` or ``key:v1|v2`` (any of the values)."""
    key, sep, values = expr.partition(":")
    if not sep or not key:
        raise ValidationFailed(
            f"{param}: {expr!r} is not of the form key:value (or key:v1|v2)", param=param
        )
    return key, tuple(values.split("|"))


_OPS = (">=", "<=", "!=", ">", "<", "=")


def parse_feedback(expr: str, param: str = "feedback") -> tuple[str, str, float]:
    """``metric>=x`` (or ``>``, ``<``, ``<=``, ``=``, ``!=``): interactions that have
    feedback on ``metric`` with such a value. ``true``/``false`` mean 1/0."""
    for op in _OPS:
        metric, sep, value = expr.partition(op)
        if sep:
            break
    text = value.strip().lower()
    number: float | None
    if text in ("true", "false"):
        number = 1.0 if text == "true" else 0.0
    else:
        try:
            number = float(text)
        except ValueError:
            number = None
    if (
        not sep
        or not metric.strip()
        or metric.strip()[-1] in "<>=!"
        or number is None
        or number != number
    ):
        raise ValidationFailed(
            f"{param}: {expr!r} is not of the form metric>=number (operators: >=, >, <=, <, =, !=)",
            param=param,
        )
    return metric.strip(), op, number


@dataclass(frozen=True)
class Filter:
    use_case: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()  # AND over keys, OR within a key
    has_label: tuple[str, ...] = ()
    no_label: tuple[str, ...] = ()
    since: datetime | None = None  # "from", inclusive
    until: datetime | None = None  # "to", exclusive
    session_id: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    feedback: tuple[tuple[str, str, float], ...] = ()  # AND: (metric, op, value)
    search: tuple[str, ...] = ()  # AND: case-insensitive substrings

    @property
    def needs_feedback(self) -> bool:
        return bool(self.feedback)

    def prune(self, files: Sequence[DataFile]) -> list[str]:
        """The paths of the files that can hold matching rows, by partition values
        (use case and day), so a query opens only those."""
        # Partitions are UTC days.
        lo = self.since.astimezone(UTC).date() if self.since is not None else None
        hi = self.until.astimezone(UTC).date() if self.until is not None else None
        out = []
        for f in files:
            part = f.partition
            if self.use_case and "use_case" in part and part["use_case"] not in self.use_case:
                continue
            day = part.get("day")
            if day is not None and ((lo and day < lo) or (hi and day > hi)):
                continue
            out.append(f.path)
        return out

    def where(self) -> tuple[str, list[Any]]:
        """A SQL condition over the ``interactions`` view, and its parameters."""
        conds: list[str] = []
        params: list[Any] = []

        def any_of(column: str, values: tuple[str, ...]) -> None:
            if len(values) == 1:
                conds.append(f'"{column}" = ?')
                params.append(values[0])
            elif values:
                conds.append(f'list_contains(?, "{column}")')
                params.append(list(values))

        any_of("use_case", self.use_case)
        any_of("model", self.model)
        any_of("session_id", self.session_id)
        any_of("user", self.user)
        any_of("source", self.source)
        any_of("status", self.status)
        any_of("id", self.ids)
        for key, values in self.labels:
            conds.append("list_contains(?, map_extract_value(labels, ?))")
            params.extend([list(values), key])
        for key in self.has_label:
            conds.append("coalesce(map_contains(labels, ?), false)")
            params.append(key)
        for key in self.no_label:
            conds.append("NOT coalesce(map_contains(labels, ?), false)")
            params.append(key)
        if self.since is not None:
            conds.append("created_at >= ?")
            params.append(self.since)
        if self.until is not None:
            conds.append("created_at < ?")
            params.append(self.until)
        for metric, op, value in self.feedback:
            conds.append(
                f"id IN (SELECT completion_id FROM feedback WHERE metric = ? AND value {op} ?)"
            )
            params.extend([metric, value])
        for text in self.search:
            # In message texts (not roles or JSON keys) or the completion. The cheap test
            # on the JSON text (the term as JSON writes it) runs first; only rows that
            # pass it are parsed.
            escaped = orjson.dumps(text).decode()[1:-1]
            conds.append(
                "(contains(lower(messages), lower(?)) "
                "AND contains(lower(message_text(messages)), lower(?))) "
                "OR contains(lower(completion), lower(?))"
            )
            params.extend([escaped, text, text])
        return (" AND ".join(f"({c})" for c in conds) if conds else "TRUE"), params


@dataclass(frozen=True)
class And:
    parts: tuple[Expr, ...]

    def where(self) -> tuple[str, list[Any]]:
        return _join("AND", self.parts, "TRUE")

    def prune(self, files: Sequence[DataFile]) -> list[str]:
        kept = set(f.path for f in files)
        for p in self.parts:
            kept &= set(p.prune(files))
        return [f.path for f in files if f.path in kept]

    @property
    def needs_feedback(self) -> bool:
        return any(p.needs_feedback for p in self.parts)


@dataclass(frozen=True)
class Or:
    parts: tuple[Expr, ...]

    def where(self) -> tuple[str, list[Any]]:
        return _join("OR", self.parts, "FALSE")

    def prune(self, files: Sequence[DataFile]) -> list[str]:
        kept: set[str] = set()
        for p in self.parts:
            kept |= set(p.prune(files))
        return [f.path for f in files if f.path in kept]

    @property
    def needs_feedback(self) -> bool:
        return any(p.needs_feedback for p in self.parts)


@dataclass(frozen=True)
class Not:
    part: Expr

    def where(self) -> tuple[str, list[Any]]:
        sql, params = self.part.where()
        # NULL-safe: a row the inner condition cannot decide is "not matched" → kept.
        return f"NOT coalesce(({sql}), false)", params

    def prune(self, files: Sequence[DataFile]) -> list[str]:
        return [f.path for f in files]

    @property
    def needs_feedback(self) -> bool:
        return self.part.needs_feedback


Expr = Filter | And | Or | Not


def _join(op: str, parts: tuple[Expr, ...], empty: str) -> tuple[str, list[Any]]:
    if not parts:
        return empty, []
    sqls, params = [], []
    for p in parts:
        sql, ps = p.where()
        sqls.append(f"({sql})")
        params.extend(ps)
    return f" {op} ".join(sqls), params


def files_by_day(expr: Expr, files: Sequence[DataFile], *, newest_first: bool = False
                 ) -> dict[Any, list[str]]:  # fmt: skip
    """The paths of the files ``expr`` can touch, grouped by their UTC day partition,
    days in order (a file without a day partition sorts first)."""
    keep = set(expr.prune(files))
    by_day: dict[Any, list[str]] = {}
    for f in files:
        if f.path in keep:
            by_day.setdefault(f.partition.get("day"), []).append(f.path)
    days = sorted(by_day, key=lambda d: (d is not None, d), reverse=newest_first)
    return {d: by_day[d] for d in days}


def must_labels(expr: Expr) -> list[tuple[str, tuple[str, ...]]]:
    """The label conditions every match must meet (from ``label=`` filters joined by
    AND), for the label index; conditions under OR/NOT are left out."""
    if isinstance(expr, Filter):
        return list(expr.labels)
    if isinstance(expr, And):
        return [c for p in expr.parts for c in must_labels(p)]
    return []


def restrict(expr: Expr, use_cases: tuple[str, ...] | None) -> Expr:
    """``expr`` limited to ``use_cases`` (None: unlimited)."""
    if use_cases is None:
        return expr
    return And((expr, Filter(use_case=use_cases)))


FILTER_NAMES = frozenset({
    "use_case", "model", "label", "has_label", "no_label", "from", "to", "session_id", "user",
    "source", "status", "feedback", "search",
})  # fmt: skip
_ALIASES = {"since": "from", "until": "to", "id": "id"}


def _tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else value
    if isinstance(values, list | tuple) and all(isinstance(v, str) for v in values):
        for v in values:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationFailed(f"{name}: not valid UTF-8 text", param=name) from None
        return tuple(values)
    raise ValidationFailed(f"{name}: must be a string or a list of strings", param=name)


def filter_from_kwargs(kw: dict[str, Any], prefix: str = "") -> Filter:
    """A Filter from the API's names (``from``/``to``, ``label="k:v"``, ``feedback=
    "m>=x"`` …); each value a string or a list of them. ``prefix``: where ``kw`` is in
    the request, for error messages."""
    known = FILTER_NAMES | set(_ALIASES)
    unknown = sorted(set(kw) - known)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ValidationFailed(
            f"{where}: unknown filter. Valid filters are: {', '.join(sorted(FILTER_NAMES))}",
            param=where,
        )

    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    def values(name: str) -> tuple[str, ...]:
        return _tuple(kw.get(name), at(name))

    def one_time(name: str, alias: str) -> datetime | None:
        value = kw.get(name, kw.get(alias))
        if value is None:
            return None
        if isinstance(value, list | tuple):
            if len(value) != 1:
                raise ValidationFailed(f"{at(name)}: give one time", param=at(name))
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, str | int | float | datetime):
            raise ValidationFailed(f"{at(name)}: must be a time", param=at(name))
        return parse_time(value, at(name))

    search = values("search")
    if any(not s for s in search):
        raise ValidationFailed(f"{at('search')}: must not be empty", param=at("search"))
    since, until = one_time("from", "since"), one_time("to", "until")
    if since is not None and until is not None and until <= since:
        # An empty range matches nothing: a mistake (the two swapped), never a question.
        raise ValidationFailed(
            f"{at('to')}: must be after from ({_z(since)}), got "
            f"{_z(until)}; from is inclusive, to exclusive",
            param=at("to"),
        )
    for name, n, most in (
        ("label", len(values("label")) + len(values("has_label")) + len(values("no_label")),
         MAX_LABEL_CONDITIONS),
        ("feedback", len(values("feedback")), MAX_FEEDBACK_CONDITIONS),
        ("search", len(search), MAX_SEARCH_TERMS),
    ):  # fmt: skip
        _at_most(n, most, at(name))
    return Filter(
        use_case=values("use_case"),
        model=values("model"),
        labels=tuple(parse_label(x, at("label")) for x in values("label")),
        has_label=values("has_label"),
        no_label=values("no_label"),
        since=since,
        until=until,
        session_id=values("session_id"),
        user=values("user"),
        source=values("source"),
        status=values("status"),
        ids=values("id"),
        feedback=tuple(parse_feedback(x, at("feedback")) for x in values("feedback")),
        search=search,
    )


MAX_DEPTH = 16
# Conditions a filter may hold (all its and/or/not branches together): each label or
# feedback condition costs a join or a subquery, so hundreds of them cost minutes of
# planning (and the index's lookups a too-deep SQLite expression).
MAX_LABEL_CONDITIONS = 64
MAX_FEEDBACK_CONDITIONS = 16
MAX_SEARCH_TERMS = 16


def _at_most(n: int, most: int, param: str) -> None:
    if n > most:
        raise ValidationFailed(
            f"{param}: at most {most} conditions of this kind in one filter, got {n}", param=param
        )


def _conditions(expr: Expr) -> tuple[int, int, int]:
    """Label, feedback and search conditions in ``expr``, over all its branches."""
    if isinstance(expr, Filter):
        return (len(expr.labels) + len(expr.has_label) + len(expr.no_label),
                len(expr.feedback), len(expr.search))  # fmt: skip
    parts = (expr.part,) if isinstance(expr, Not) else expr.parts
    counts = [_conditions(p) for p in parts]
    return tuple(sum(c[i] for c in counts) for i in range(3))  # type: ignore[return-value]


def parse_expr(raw: Any, where: str = "filter", depth: int = 0) -> Expr:
    """A JSON filter: ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}``, or an
    object of filters (``{"use_case": "a", "label": ["k:v"]}``, all must hold)."""
    expr = _parse_expr(raw, where, depth)
    if depth == 0:
        labels, feedback, search = _conditions(expr)
        _at_most(labels, MAX_LABEL_CONDITIONS, f"{where}.label")
        _at_most(feedback, MAX_FEEDBACK_CONDITIONS, f"{where}.feedback")
        _at_most(search, MAX_SEARCH_TERMS, f"{where}.search")
    return expr


def _parse_expr(raw: Any, where: str, depth: int) -> Expr:
    if depth > MAX_DEPTH:
        raise ValidationFailed(f"{where}: nested deeper than {MAX_DEPTH}", param=where)
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{where}: must be an object", param=where)
    logic = [k for k in ("and", "or", "not") if k in raw]
    if logic:
        if len(raw) != 1:
            raise ValidationFailed(
                f"{where}: {logic[0]!r} must be the only key of its object", param=where
            )
        key = logic[0]
        value = raw[key]
        if key == "not":
            return Not(_parse_expr(value, f"{where}.not", depth + 1))
        if not isinstance(value, list):
            raise ValidationFailed(f"{where}.{key}: must be a list", param=f"{where}.{key}")
        parts = tuple(_parse_expr(v, f"{where}.{key}[{i}]", depth + 1) for i, v in enumerate(value))
        return And(parts) if key == "and" else Or(parts)
    return filter_from_kwargs(raw, where)


def encode_cursor(created_at: datetime, id_: str) -> str:
    us = (created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(orjson.dumps([us, id_])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        us, id_ = orjson.loads(raw)
        return _EPOCH + timedelta(microseconds=int(us)), str(id_)
    except (ValueError, TypeError, OverflowError, orjson.JSONDecodeError):
        raise ValidationFailed("after: not a cursor returned by this API", param="after") from None
