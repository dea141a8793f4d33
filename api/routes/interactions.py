"""``/api/v1/interactions``: ingest (one, array, NDJSON), list with filters, get by id."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Ingest, Read
from api.body import JSONResponse, read_body
from api.keys import OPEN, Principal
from ingest.models import BatchAck, IngestAck
from ingest.normalize import Batch, build_batch
from ingest.parse import Limits, parse_interactions
from store.ack import wait
from store.engine import Store
from store.errors import ValidationFailed
from store.reader import Reader, filter_from_kwargs
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


async def persist(store: Store, batch: Batch) -> tuple[str, ...]:
    """Durably store a batch: interactions first, then the feedback of those that were
    new. Returns the ids that were already stored (idempotent repeats)."""
    ack = store.write(INTERACTIONS_TABLE, batch.interactions(), feedback=batch.feedback())
    return (await wait(ack)).duplicate_ids


async def ingest_body(
    store: Store,
    reader: Reader,
    body: bytes,
    ctype: str,
    principal: Principal = OPEN,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Validate, persist and acknowledge one ingest body (the route and the fast lane)."""
    parse = partial(parse_interactions, body, ctype, limits=limits or Limits())
    if len(body) > 256 << 10:
        items, single = await run_in_threadpool(parse)
    else:
        items, single = parse()
    if principal.use_cases is not None:
        for n, item in enumerate(items):
            principal.check_use_case(
                item["use_case"], "use_case" if single else f"body[{n}].use_case"
            )
    if len(items) > _INLINE_ITEMS:
        batch = await run_in_threadpool(build_batch, items, source="api")
    else:
        batch = build_batch(items, source="api", new_session=single)
    duplicates = await persist(store, batch)
    if single and duplicates:  # a repeat: answer with what is stored, not what was sent
        stored = await run_in_threadpool(reader.get, batch.ids[0])
        return {"completion_id": stored["id"], "session_id": stored["session_id"],
                "feedback_ids": []}  # fmt: skip
    if single:
        return {
            "completion_id": batch.ids[0],
            "session_id": batch.session_ids[0],
            "feedback_ids": batch.feedback_ids[0],
        }
    return {"accepted": len(batch.ids), "completion_ids": batch.ids}


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


LIST_PARAMS = {
    "use_case", "model", "label", "has_label", "no_label", "from", "to", "session_id", "user",
    "source", "status", "limit", "order", "after",
}  # fmt: skip


def check_params(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise ValidationFailed(
            f"{unknown[0]}: unknown query parameter. Valid parameters are: "
            + ", ".join(sorted(allowed)),
            param=unknown[0],
        )


def filters_from_query(request: Request) -> dict[str, Any]:
    q = request.query_params
    out: dict[str, Any] = {}
    for key in ("use_case", "model", "label", "has_label", "no_label", "session_id", "user",
                "source", "status"):  # fmt: skip
        values = q.getlist(key)
        if values:
            out[key] = values
    for key in ("from", "to"):
        if key in q:
            out[key] = q[key]
    return out


@router.get("/interactions", summary="List interactions, newest first, with filters")
def list_interactions(
    request: Request,
    principal: Read,
    use_case: Annotated[list[str] | None, Query(description="Repeatable: any of")] = None,
    model: Annotated[list[str] | None, Query(description="Repeatable: any of")] = None,
    label: Annotated[
        list[str] | None, Query(description="key:value (or key:v1|v2); repeatable: all of")
    ] = None,
    has_label: Annotated[list[str] | None, Query()] = None,
    no_label: Annotated[list[str] | None, Query()] = None,
    from_: Annotated[str | None, Query(alias="from", description="ISO-8601 or unix")] = None,
    to: Annotated[str | None, Query(description="ISO-8601 or unix, exclusive")] = None,
    session_id: Annotated[list[str] | None, Query()] = None,
    user: Annotated[list[str] | None, Query()] = None,
    source: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: Annotated[str | None, Query(description="Cursor from next_cursor")] = None,
) -> JSONResponse:
    check_params(request, LIST_PARAMS)
    reader: Reader = request.app.state.reader
    filters = filters_from_query(request)
    visible = principal.visible(tuple(filters.get("use_case", ())))
    if visible is not None:
        filters["use_case"] = list(visible)
    page = reader.page(filter_from_kwargs(filters), limit=limit, order=order, after=after)
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
