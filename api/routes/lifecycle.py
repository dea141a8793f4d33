"""Deletion and maintenance (admin): ``DELETE /api/v1/interactions/{id}``,
``POST /api/v1/interactions/delete`` with a filter → ``{"deleted": N}`` (or, with
``dry_run=true``, ``{"dry_run": true, "would_delete": N}`` and nothing deleted), and
``POST /api/v1/maintenance`` to run retention, the purge, compaction and vacuum now.

Tombstones hide the interactions at once from every read path; the maintenance job
(and ``istore compact``/``vacuum``) removes them physically (``store.lifecycle``)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Admin
from api.body import JSONResponse, read_body
from api.filters import check_params
from service.maintenance import STEPS, MaintenanceJob
from store.ack import wait
from store.errors import Forbidden, InvalidRequest, Unavailable, ValidationFailed
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
                    "a person": {"value": {"filter": {"user": "alice@example.com"}}},
                    "a session before a date": {
                        "value": {"filter": {"session_id": "s-1", "to": "2026-01-01T00:00:00Z"}}
                    },
                    "an expression": {
                        "value": {"filter": {"or": [{"user": "a"}, {"label": "gdpr:erase"}]}}
                    },
                    "everything": {"value": {"all": True}},
                    "the older form (filters at the top)": {"value": {"user": "alice@example.com"}},
                },
            }
        },
    }
}
_DRY_RUN = Query(description="Count what would be deleted; delete nothing.")


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
    description='The body is `{"filter": …}` as for POST /interactions/query (filters, '
    "and `and`/`or`/`not` of them), or the filters themselves at the top level; "
    '`{"all": true}` deletes everything. `dry_run=true` counts and deletes nothing.',
    openapi_extra=_FILTER_BODY,
)
async def delete_interactions(
    request: Request, principal: Admin, dry_run: Annotated[bool, _DRY_RUN] = False
) -> JSONResponse:
    state = request.app.state
    check_params(request, {"dry_run"})
    body = await read_body(request, state.settings.max_body_bytes)
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
    expr = delete_filter(raw)
    pairs = await run_in_threadpool(matching, state.store, expr, principal.visible(None))
    if dry_run:
        return JSONResponse({"dry_run": True, "would_delete": len(pairs)})
    for chunk in chunks(pairs):
        await wait(state.store.write(AMENDMENTS_TABLE, tombstones(chunk)))
    return JSONResponse({"deleted": len(pairs)})


def delete_filter(raw: Any) -> Any:
    """The filter of a bulk delete body: ``{"filter": {…}}`` (the form of
    ``/interactions/query``) or the filters at the top level (the first form);
    ``{"all": true}`` (in either place) for everything, nothing empty or null."""
    if not isinstance(raw, dict):
        raise InvalidRequest('the body must be an object: {"filter": {"user": "…"}}', param="body")
    where = ""
    if "filter" in raw:
        if len(raw) != 1:
            extra = sorted(set(raw) - {"filter"})[0]
            raise ValidationFailed(
                f"{extra}: unknown field beside filter; a delete body is "
                '{"filter": {…}} (dry_run is a query parameter: ?dry_run=true)',
                param=extra,
            )
        raw, where = raw["filter"], "filter"
        if not isinstance(raw, dict):
            raise ValidationFailed("filter: must be an object of filters", param="filter")
    if raw == {"all": True}:
        return Filter()
    if not raw or "all" in raw:
        at = where or "body"
        raise ValidationFailed(
            f'{at}: give at least one filter ({{"user": "…"}}, {{"session_id": "…"}}, '
            'labels, a time range …); {"all": true} alone deletes everything',
            param=at,
        )
    _no_empty(raw, where)
    return parse_expr(raw, where)


@router.post(
    "/maintenance",
    summary="Run maintenance now: retention, purge of deleted rows, compaction, vacuum",
    description="What the server otherwise does every ISTORE_MAINTENANCE_INTERVAL_S. "
    "`steps` (repeatable or comma-separated): " + ", ".join(STEPS) + " (default: all). "
    "`dry_run=true`: what retention, the purge and vacuum would delete, deleting nothing.",
)
async def run_maintenance(
    request: Request,
    principal: Admin,
    dry_run: Annotated[bool, _DRY_RUN] = False,
    steps: Annotated[list[str] | None, Query(description=", ".join(STEPS))] = None,
) -> JSONResponse:
    check_params(request, {"dry_run", "steps"})
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if body.strip():
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
        if raw != {}:
            raise ValidationFailed(
                "body: none is needed; steps and dry_run are query parameters "
                "(?steps=retention&dry_run=true)",
                param="body",
            )
    if principal.use_cases is not None:
        raise Forbidden(
            "maintenance covers every use case: use an admin key that is not limited to "
            "some use cases",
            code="insufficient_scope",
        )
    wanted = tuple(s.strip() for v in steps or [",".join(STEPS)] for s in v.split(",") if s)
    bad = [s for s in wanted if s not in STEPS]
    if bad or not wanted:
        raise ValidationFailed(
            f"steps: must be some of {', '.join(STEPS)}, got {(bad or [''])[0]!r}",
            param="steps",
        )
    state = request.app.state
    if not state.store.writable:
        raise Unavailable("this server does not write to its data root", retry_after=60)
    job: MaintenanceJob | None = state.maintenance
    if job is None:  # the schedule is off (ISTORE_MAINTENANCE_INTERVAL_S=0): a one-off
        settings = state.settings
        job = MaintenanceJob(state.store, 0, settings.vacuum_retention_hours)
    result = await run_in_threadpool(job.run_once, wanted, dry_run=dry_run)
    ordered = tuple(s for s in STEPS if s in wanted)
    return JSONResponse({"steps": list(ordered), **result})


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
