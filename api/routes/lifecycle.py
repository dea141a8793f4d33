"""Deletion (admin): ``DELETE /api/v1/interactions/{id}`` and
``POST /api/v1/interactions/delete`` with a filter → ``{"deleted": N}``.

Tombstones hide the interactions at once from every read path; the maintenance job
(and ``istore compact``/``vacuum``) removes them physically (``store.lifecycle``)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Admin
from api.body import JSONResponse, read_body
from store.ack import wait
from store.errors import InvalidRequest, ValidationFailed
from store.filters import Filter, parse_expr
from store.lifecycle import chunks, matching, tombstones
from store.reader import Reader
from store.schema import AMENDMENTS_TABLE

router = APIRouter(tags=["lifecycle"])

_FILTER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "examples": {
                    "a person": {"value": {"user": "alice@example.com"}},
                    "a session before a date": {
                        "value": {"session_id": "s-1", "to": "2026-01-01T00:00:00Z"}
                    },
                    "everything": {"value": {"all": True}},
                },
            }
        },
    }
}


@router.delete(
    "/interactions/{interaction_id}",
    summary="Delete one interaction (hidden at once, physically removed by maintenance)",
)
async def delete_interaction(
    request: Request, principal: Admin, interaction_id: str
) -> JSONResponse:
    reader: Reader = request.app.state.reader
    item = await run_in_threadpool(reader.get, interaction_id, use_cases=principal.visible(None))
    await wait(
        request.app.state.store.write(
            AMENDMENTS_TABLE, tombstones([(item["id"], item["use_case"])])
        )
    )
    return JSONResponse({"deleted": 1})


@router.post(
    "/interactions/delete",
    summary="Delete every interaction a filter matches → {deleted: N}",
    openapi_extra=_FILTER_BODY,
)
async def delete_interactions(request: Request, principal: Admin) -> JSONResponse:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
    if not isinstance(raw, dict):
        raise InvalidRequest('the body must be a filter object, e.g. {"user": "…"}', param="body")
    if raw == {"all": True}:
        expr: Any = Filter()
    elif not raw or "all" in raw:
        raise ValidationFailed(
            'body: give at least one filter ({"user": "…"}, {"session_id": "…"}, '
            'labels, a time range …); {"all": true} alone deletes everything',
            param="body",
        )
    else:
        _no_empty(raw, "")
        expr = parse_expr(raw, "")
    pairs = await run_in_threadpool(matching, state.store, expr, principal.visible(None))
    for chunk in chunks(pairs):
        await wait(state.store.write(AMENDMENTS_TABLE, tombstones(chunk)))
    return JSONResponse({"deleted": len(pairs)})


def _no_empty(raw: Any, where: str) -> None:
    """A null or empty value matches everything (``{"user": null}`` would delete every
    interaction): refuse it wherever it is."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    for key, value in items:
        at = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
        at = at.lstrip(".")
        if value is None or value == [] or value == {}:
            raise ValidationFailed(
                f"{at}: a null or empty value would match every interaction", param=at
            )
        if isinstance(value, dict | list):
            _no_empty(value, at)
