"""Canonical interaction dicts → rows of the store's schema (``store.schema``), as the
JSON-native column lists the store's write-ahead log takes (``store.rows``).

A canonical dict comes from ``ingest.fastpath.canonical`` or
``InteractionIn.canonical``: aliases resolved, ``created_at`` a datetime or None,
messages exactly as the client sent them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from store.ids import uuid7_many
from store.jsonutil import dumps
from store.rows import Columns
from store.schema import FEEDBACK, INTERACTIONS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


_dump = dumps


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


def completion_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(
        t for p in content if isinstance(p, dict) and isinstance(t := p.get("text"), str)
    )


def _micros(ts: datetime | None, now: int) -> int:
    """Microseconds since the epoch, UTC (naive times are UTC)."""
    if ts is None:
        return now
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _US


class Batch:
    """The rows of one ingest request, ready for the store."""

    def __init__(self, fresh_ids: list[str] | None = None) -> None:
        # Reversed, so pop() hands ids out in increasing order: rows of a batch sort by
        # (created_at, id) in the order they were sent.
        self._fresh = (fresh_ids or [])[::-1]
        self._received = 0
        self.ids: list[str] = []
        self.session_ids: list[str | None] = []
        self.feedback_ids: list[list[str]] = []
        self._cols: dict[str, list[Any]] = {n: [] for n in INTERACTIONS.names}
        self._fb: dict[str, list[Any]] = {n: [] for n in FEEDBACK.names}

    def add(self, item: dict[str, Any], *, source: str, now: int, new_session: bool) -> None:
        c = self._cols
        id_ = item["id"] or self._new_id()
        # Rows without a time get the time of receipt, a microsecond apart in the order
        # sent, so that (created_at, id) keeps a batch's order whatever its ids are.
        created = _micros(item["created_at"], now + self._received)
        self._received += item["created_at"] is None
        session = item["session_id"] or (self._new_id() if new_session else None)
        completion = item["completion"]
        completion_message = None
        if isinstance(completion, dict):
            completion_message = _dump(completion)
            completion = completion_text(completion.get("content"))
        labels = item["labels"]
        params = item["params"]
        c["id"].append(id_)
        c["created_at"].append(created)
        c["use_case"].append(item["use_case"])
        c["model"].append(item["model"])
        c["messages"].append(_dump(item["messages"]))
        c["completion"].append(completion)
        c["completion_message"].append(completion_message)
        c["labels"].append(labels)
        c["session_id"].append(session)
        c["user"].append(item["user"])
        c["ab_campaign"].append(item["ab_campaign"])
        c["source"].append(source)
        c["usage"].append(item["usage"])
        c["latency_ms"].append(_float(item["latency_ms"]))
        c["ttft_ms"].append(_float(item["ttft_ms"]))
        c["params"].append(_dump(params) if params is not None else None)
        c["status"].append(item["status"])
        c["error"].append(item["error"])
        c["day"].append(created // _DAY_US)
        self.ids.append(id_)
        self.session_ids.append(session)
        fids: list[str] = []
        for fb in item["feedbacks"]:
            fid = self._new_id()
            fcreated = _micros(fb.get("created_at"), now)
            f = self._fb
            f["id"].append(fid)
            f["created_at"].append(fcreated)
            f["completion_id"].append(id_)
            f["use_case"].append(item["use_case"])
            f["metric"].append(fb["metric"])
            f["value"].append(float(fb["value"]))
            f["reason"].append(fb.get("reason"))
            f["details"].append(fb.get("details"))
            f["user_id"].append(fb.get("user_id"))
            f["day"].append(fcreated // _DAY_US)
            fids.append(fid)
        self.feedback_ids.append(fids)

    def _new_id(self) -> str:
        if not self._fresh:
            self._fresh = uuid7_many(64)[::-1]
        return self._fresh.pop()

    def interactions(self) -> Columns:
        return self._cols

    def feedback(self) -> Columns | None:
        """The inline feedback rows (the store drops those of duplicate interactions)."""
        return self._fb if self._fb["id"] else None


def build_batch(
    items: Sequence[dict[str, Any]], *, source: str, new_session: bool = False
) -> Batch:
    """Rows for ``items``. ``new_session``: give each interaction without a session_id
    a new one (Adaptive does so for a single logged interaction)."""
    now = (datetime.now(UTC) - _EPOCH) // _US
    need = sum(1 for x in items if not x["id"])
    if new_session:
        need += sum(1 for x in items if not x["session_id"])
    batch = Batch(uuid7_many(need))
    for item in items:
        batch.add(item, source=source, now=now, new_session=new_session)
    return batch
