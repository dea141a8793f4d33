"""``/api/v1/interactions``: ingest (one, array, NDJSON), list with filters, get by id."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Ingest, Read
from api.body import JSONResponse, read_body
from api.filters import query_filter
from ingest import pipeline
from ingest.models import BatchAck, IngestAck
from ingest.parse import Limits, parse_located
from service.keys import OPEN, Principal
from store.ack import wait
from store.engine import Store
from store.filters import Filter
from store.reader import Reader

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


async def ingest_body(
    store: Store,
    body: bytes,
    ctype: str,
    principal: Principal = OPEN,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Parse one ingest body, write it through the ingest pipeline, wait until it is
    durable and answer (the route and the fast lane)."""
    parse = partial(parse_located, body, ctype, limits=limits or Limits())
    if len(body) > 256 << 10:
        items, wheres, single = await run_in_threadpool(parse)
    else:
        items, wheres, single = parse()
    submit = partial(pipeline.submit, store, items, source="api", use_cases=principal.use_cases,
                     wheres=wheres, new_session=single)  # fmt: skip
    sub = await run_in_threadpool(submit) if len(items) > _INLINE_ITEMS else submit()
    return pipeline.answer(sub.batch, await wait(sub.ack), single=single)


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
    ack = await ingest_body(state.store, body, ctype, principal, state.settings.limits())
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
