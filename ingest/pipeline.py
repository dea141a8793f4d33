"""The one way interactions enter the store, whoever sends them: the REST route and its
fast lane, the gateway, ``istore import``, the OpenTelemetry receiver.

    canonical items → (use cases allowed?) → rows (``build_batch``) → ``store.write``
    → an ``Ack`` that resolves once the rows are durable → the answer (``answer``)

Callers differ only in how they get canonical items (``ingest.parse``,
``ingest.formats``, the gateway's call, OTLP spans) and in whether they wait for the
ack (the REST API does, before its 201; the gateway answers its client first and
counts logging failures). A new ingest format adds a way to make canonical items and
calls ``submit``; nothing else changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.normalize import Batch, build_batch
from store.ack import Ack
from store.engine import IdConflict, Store, WriteResult
from store.errors import require_use_case
from store.schema import INTERACTIONS_TABLE


@dataclass(frozen=True)
class Submitted:
    """A batch handed to the store; ``ack`` resolves when it is durable."""

    batch: Batch
    ack: Ack[WriteResult]


def submit(
    store: Store,
    items: Sequence[dict[str, Any]],
    *,
    source: str,
    use_cases: frozenset[str] | None = None,
    wheres: Sequence[str] | None = None,
    new_session: bool = False,
) -> Submitted:
    """Check, convert and write canonical ``items``. ``use_cases``: what the caller may
    write (None: any). ``wheres``: each item's place in the request, for error params.
    ``new_session``: give items without a session a new one (Adaptive does so for a
    single logged interaction)."""
    if use_cases is not None:
        for i, item in enumerate(items):
            where = wheres[i] if wheres else ""
            param = f"{where}.use_case" if where else "use_case"
            require_use_case(use_cases, item["use_case"], param)
    batch = build_batch(list(items), source=source, new_session=new_session)
    try:
        ack = store.write(INTERACTIONS_TABLE, batch.interactions(), feedback=batch.feedback())
    except IdConflict as exc:
        where = wheres[exc.positions[0]] if wheres else ""
        exc.param = f"{where}.id" if where else "id"
        raise
    return Submitted(batch, ack)


def answer(batch: Batch, result: WriteResult, *, single: bool) -> dict[str, Any]:
    """What the API acknowledges: one interaction's ids (a repeat answered as the first
    write was), or a batch's counts of new and repeated interactions."""
    if single:
        id_ = batch.ids[0]
        if id_ in result.existing:
            return {"completion_id": id_, "session_id": result.existing[id_].session_id,
                    "feedback_ids": []}  # fmt: skip
        return {"completion_id": id_, "session_id": batch.session_ids[0],
                "feedback_ids": batch.feedback_ids[0]}  # fmt: skip
    # accepted = new + repeats: a repeat (an id already stored, or twice in the body)
    # stores nothing, and the answer says so rather than hiding it in "accepted".
    return {"accepted": len(batch.ids), "new": result.stored,
            "repeats": len(result.duplicate_ids), "completion_ids": batch.ids}  # fmt: skip
