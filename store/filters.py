"""Filters over interactions, defined once and compiled to SQL with parameters.

The HTTP list, the Python API (``Reader.interactions``) and, later, stats and export
all take a ``Filter``; nothing else builds WHERE clauses."""

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


def parse_time(value: str | float | int | datetime, param: str) -> datetime:
    """ISO-8601 (naive = UTC), unix seconds, or unix milliseconds (past 2e10)."""
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
        return (" AND ".join(conds) if conds else "TRUE"), params


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
