"""``/api/v1/interactions``: ingest (one, array, NDJSON), list with filters, get by id."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Ingest, Read
from api.body import JSONResponse, read_body
from api.filters import query_filter
from api.keys import OPEN, Principal
from ingest.models import BatchAck, IngestAck
from ingest.normalize import Batch, build_batch
from ingest.parse import Limits, parse_located
from store.ack import wait
from store.engine import IdConflict, Store, WriteResult
from store.filters import Filter
from store.reader import Reader
from store.schema import INTERACTIONS_TABLE

router = APIRouter(tags=["interactions"])

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/InteractionIn"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/InteractionIn"}},
                    ]
                }
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}

# Threshold above which parsing runs off the event loop (large batches).
_INLINE_ITEMS = 64


async def persist(store: Store, batch: Batch, wheres: list[str] | None = None) -> WriteResult:
    """Durably store a batch: interactions first, then the feedback of those that were
    new. The result names the ids that were already stored (idempotent repeats).
    An id stored in another use case is a 409 naming the item (``wheres``)."""
    try:
        ack = store.write(INTERACTIONS_TABLE, batch.interactions(), feedback=batch.feedback())
    except IdConflict as exc:
        where = wheres[exc.positions[0]] if wheres else ""
        exc.param = f"{where}.id" if where else "id"
        raise
    return await wait(ack)


async def ingest_body(
    store: Store,
    reader: Reader,
    body: bytes,
    ctype: str,
    principal: Principal = OPEN,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Validate, persist and acknowledge one ingest body (the route and the fast lane)."""
    parse = partial(parse_located, body, ctype, limits=limits or Limits())
    if len(body) > 256 << 10:
        items, wheres, single = await run_in_threadpool(parse)
    else:
        items, wheres, single = parse()
    if principal.use_cases is not None:
        for item, where in zip(items, wheres, strict=True):
            principal.check_use_case(item["use_case"], f"{where}.use_case" if where else "use_case")
    if len(items) > _INLINE_ITEMS:
        batch = await run_in_threadpool(build_batch, items, source="api")
    else:
        batch = build_batch(items, source="api", new_session=single)
    result = await persist(store, batch, wheres)
    if single and result.duplicate_ids:  # a repeat: answered as the first write was
        first = result.existing[batch.ids[0]]
        return {"completion_id": batch.ids[0], "session_id": first.session_id,
                "feedback_ids": []}  # fmt: skip
    if single:
        return {
            "completion_id": batch.ids[0],
            "session_id": batch.session_ids[0],
            "feedback_ids": batch.feedback_ids[0],
        }
    # accepted = new + repeats: a repeat (an id already stored, or twice in the body)
    # stores nothing, and the answer says so rather than hiding it in "accepted".
    return {"accepted": len(batch.ids), "new": result.stored,
            "repeats": len(result.duplicate_ids), "completion_ids": batch.ids}  # fmt: skip


@router.post(
    "/interactions",
    status_code=201,
    response_model=IngestAck | BatchAck,
    openapi_extra=_BODY_SCHEMA,
    summary="Log interactions (one object, a JSON array, or NDJSON)",
)
async def ingest(request: Request, principal: Ingest) -> JSONResponse:
    # Normally answered by api.fastlane before FastAPI routing; same behaviour here.
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    ctype = request.headers.get("content-type", "application/json")
    ack = await ingest_body(
        state.store, state.reader, body, ctype, principal, state.settings.limits()
    )
    return JSONResponse(ack, status_code=201)


@router.get("/interactions", summary="List interactions, newest first, with filters")
def list_interactions(
    request: Request,
    principal: Read,
    flt: Annotated[Filter, Depends(query_filter("limit", "order", "after"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    order: Annotated[
        Literal["asc", "desc"], Query(description="desc: newest first (default); asc: oldest first")
    ] = "desc",
    after: Annotated[str | None, Query(description="Cursor from next_cursor")] = None,
) -> JSONResponse:
    reader: Reader = request.app.state.reader
    visible = principal.visible(flt.use_case)
    page = reader.page(flt, limit=limit, order=order, after=after, use_cases=visible)
    return JSONResponse(
        {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        }
    )


@router.get("/interactions/{interaction_id}", summary="One interaction with its feedback")
def get_interaction(request: Request, principal: Read, interaction_id: str) -> JSONResponse:
    reader: Reader = request.app.state.reader
    return JSONResponse(reader.get(interaction_id, use_cases=principal.visible(None)))
