"""The console's writes (feedback, labels, bulk labels, replay, comparisons) and its
downloads (SQL results, exports).

Each write is checked by ``security.check_write`` (same origin, CSRF token, the API's
scope) and then runs the API's own code: the curation functions of
``api.routes.curation``, and the feedback and comparison routes themselves, called with
the JSON body the API would receive. Forms are posted as
``application/x-www-form-urlencoded`` (htmx, or a plain form without JavaScript: then
the answer is a redirect back to the page)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.body import read_body
from api.routes import curation
from api.routes import export as export_api
from api.routes import feedback as feedback_api
from api.routes import sql as sql_api
from console import views
from console.pages import LIST_PARAMS, Links, _filter, feedback_metrics, ui
from console.render import page
from console.security import HEADERS, Viewer, check_write
from store import stats as agg
from store.errors import StoreError, ValidationFailed
from store.filters import FILTER_NAMES, filter_from_kwargs, parse_label
from store.reader import Reader

router = APIRouter(include_in_schema=False)
FORM_LIMIT = 1 << 20


async def form_items(request: Request) -> list[tuple[str, str]]:
    body = await read_body(request, FORM_LIMIT)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("the form is not UTF-8", param="body") from None
    return parse_qsl(text, keep_blank_values=True, max_num_fields=2000)


async def form(request: Request) -> dict[str, str]:
    return dict(await form_items(request))


def _htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


async def _call(request: Request, route: Any, principal: Any, payload: Any) -> Any:
    """Call an API route that reads its JSON body itself, with ``payload`` as the body."""
    body = orjson.dumps(payload)
    scope = dict(request.scope)
    scope["headers"] = [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]  # fmt: skip
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    inner = Request(scope, receive)
    return orjson.loads((await route(inner, principal)).body)


def _back(request: Request, interaction_id: str) -> Response:
    return RedirectResponse(f"/ui/interactions/{quote(interaction_id, safe='')}", 303,
                            headers=HEADERS)  # fmt: skip


async def _item(request: Request, v: Viewer, interaction_id: str) -> dict[str, Any]:
    reader: Reader = request.app.state.reader
    return await run_in_threadpool(reader.get, interaction_id,  # type: ignore[no-any-return]
                                   use_cases=v.principal.visible(None))  # fmt: skip


def _value(text: str) -> bool | float:
    t = text.strip().lower()
    if t in ("true", "up", "yes"):
        return True
    if t in ("false", "down", "no"):
        return False
    try:
        return float(t)
    except ValueError:
        raise ValidationFailed(f"value: a number, true or false, got {text[:40]!r}",
                               param="value") from None  # fmt: skip


@router.post("/ui/interactions/{interaction_id}/feedback")
@ui
async def add_feedback(request: Request, v: Viewer, interaction_id: str) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"))
    payload: dict[str, Any] = {"completion_id": interaction_id, "metric": f.get("metric", ""),
                               "value": _value(f.get("value", ""))}  # fmt: skip
    if f.get("reason", "").strip():
        payload["reason"] = f["reason"]
    if v.principal.name:
        payload["user_id"] = v.principal.name
    await _call(request, feedback_api.add_feedback, v.principal, payload)
    if not _htmx(request):
        return _back(request, interaction_id)
    item = await _item(request, v, interaction_id)
    return page(request, v, "_feedback.html", item=item,
                metrics=feedback_metrics(request.app.state, v.principal.visible(None)))  # fmt: skip


@router.post("/ui/interactions/{interaction_id}/labels")
@ui
async def edit_labels(request: Request, v: Viewer, interaction_id: str) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"))
    changes: dict[str, str | None] = {}
    if f.get("remove"):
        changes[f["remove"]] = None
    elif f.get("key", "").strip():
        changes[f["key"].strip()] = f.get("value", "")
    else:
        raise ValidationFailed("key: give a label key", param="key")
    item = await curation.patch_labels(request.app.state, v.principal, interaction_id, changes)
    if not _htmx(request):
        return _back(request, interaction_id)
    return page(request, v, "_labels.html", item=item, links=Links([]))


@router.post("/ui/interactions/{interaction_id}/replay")
@ui
async def replay(request: Request, v: Viewer, interaction_id: str) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"))
    original = await _item(request, v, interaction_id)
    new = await curation.replay(request.app.state, v.principal, interaction_id,
                                f.get("model", ""))  # fmt: skip
    if not _htmx(request):
        return _back(request, new["id"])
    return page(request, v, "_replay.html", original=original, new=new,
                left=views.completion_turn(original.get("completion")),
                right=views.completion_turn(new.get("completion")), done=None)  # fmt: skip


@router.post("/ui/comparison")
@ui
async def compare(request: Request, v: Viewer) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"))
    choice = f.get("choice", "")
    a, b = f.get("a", ""), f.get("b", "")
    payload: dict[str, Any] = {"metric": f.get("metric") or "preference"}
    if choice == "a":
        payload.update(preferred_completion=a, other_completion=b)
    elif choice == "b":
        payload.update(preferred_completion=b, other_completion=a)
    elif choice in ("good", "bad"):
        payload.update(preferred_completion=a, other_completion=b, tied=choice)
    else:
        raise ValidationFailed("choice: a, b, good or bad", param="choice")
    if v.principal.name:
        payload["user_id"] = v.principal.name
    result = await _call(request, feedback_api.add_comparison, v.principal, payload)
    if not _htmx(request):
        return _back(request, a)
    return page(request, v, "_compared.html", choice=choice, comparison_id=result["comparison_id"])


# -- bulk labels ----------------------------------------------------------------------------
def _changes(set_: list[str], unset: list[str]) -> tuple[dict[str, str], list[str]]:
    out = {}
    for text in set_:
        key, values = parse_label(text, "set")
        if len(values) != 1:
            raise ValidationFailed(f"set: {text!r} must be key:value", param="set")
        out[key] = values[0]
    return out, [u.strip() for u in unset if u.strip()]


@router.get("/ui/bulk-label")
@ui
async def bulk_confirm(request: Request, v: Viewer) -> Response:
    """How many interactions the list's filter matches, and what will change: confirm."""
    flt = _filter(request, {"set", "unset", "limit", "order", "after"})
    q = request.query_params
    set_, unset = _changes([s for s in q.getlist("set") if s.strip()], q.getlist("unset"))
    visible = v.principal.visible(flt.use_case)
    res = await run_in_threadpool(agg.stats, request.app.state.store, flt, [], ["count"],
                                  use_cases=visible)  # fmt: skip
    links = Links(list(q.multi_items()))
    return page(request, v, "bulk.html", count=int(res["data"][0]["count"]), set_=set_,
                unset=unset, links=links, filters=links.active(), done=None)  # fmt: skip


@router.post("/ui/bulk-label")
@ui
async def bulk_apply(request: Request, v: Viewer) -> Response:
    items = await form_items(request)
    fields = dict(items)
    check_write(request, v, fields.get("csrf"))
    filters: dict[str, list[str]] = {}
    for k, val in items:
        if k in FILTER_NAMES:
            filters.setdefault(k, []).append(val)
    kw: dict[str, Any] = {k: (vals[0] if k in ("from", "to") else vals)
                          for k, vals in filters.items()}  # fmt: skip
    flt = filter_from_kwargs(kw)
    set_, unset = _changes([val for k, val in items if k == "set"],
                           [val for k, val in items if k == "unset"])  # fmt: skip
    result = await curation.bulk_label(request.app.state, v.principal, flt, set_, unset)
    links = Links([(k, val) for k, val in items if k in LIST_PARAMS])
    return page(request, v, "bulk.html", count=result["matched"], set_=set_, unset=unset,
                links=links, filters=links.active(), done=result)  # fmt: skip


# -- SQL ------------------------------------------------------------------------------------
@router.post("/ui/sql")
@ui
async def run_sql(request: Request, v: Viewer) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"), scope="read")
    state = request.app.state
    error = None
    table = None
    truncated = False
    try:
        body = sql_api.SqlRequest(sql=f.get("sql", ""))
        table, truncated = await run_in_threadpool(
            state.reader.run_sql, body.sql, timeout_s=state.settings.sql_timeout_s,
            max_rows=min(state.settings.sql_max_rows, 1000), use_cases=v.principal.visible(None),
        )  # fmt: skip
    except StoreError as exc:
        error = exc.message
    except ValueError as exc:  # pydantic: empty or too long
        error = str(exc).splitlines()[-1] if str(exc) else "invalid SQL"
    if table is not None and table.nbytes > SHOWN_BYTES:
        error = (
            f"the result is {table.nbytes >> 20} MiB, more than the page shows "
            f"({SHOWN_BYTES >> 20} MiB): select fewer rows or columns, or download it"
        )
        table = None
    columns = table.column_names if table is not None else []
    # Python values and their text off the event loop: a result within the budget can
    # still be a million nested values.
    cells = await run_in_threadpool(_cells, table) if table is not None else []
    return page(request, v, "_sql_result.html", error=error, columns=columns, rows=cells,
                truncated=truncated)  # fmt: skip


SHOWN_BYTES = 8 << 20  # what the SQL page renders; downloads have the API's limits
SHOWN_CHARS = 10_000  # of one cell


def _cells(table: Any) -> list[list[str]]:
    columns = table.column_names
    return [[_cell(r[c]) for c in columns] for r in table.to_pylist()]


def _cell(x: Any) -> str:
    if x is None:
        return "NULL"
    if isinstance(x, str):
        text = x
    else:
        try:
            text = orjson.dumps(x, default=str).decode()
        except TypeError:
            text = str(x)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " …"


@router.post("/ui/sql/download")
@ui
async def download_sql(request: Request, v: Viewer) -> Response:
    f = await form(request)
    check_write(request, v, f.get("csrf"), scope="read")
    fmt = f.get("format", "csv")
    if fmt not in ("csv", "parquet", "json", "ndjson", "arrow"):
        raise ValidationFailed("format: csv or parquet", param="format")
    body = sql_api.SqlRequest(sql=f.get("sql", ""))
    resp: Response = await run_in_threadpool(
        sql_api.run_sql,
        request,
        v.principal,
        body,
        fmt,  # type: ignore[arg-type]
    )
    name = f"result.{fmt}"
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


# -- export download ------------------------------------------------------------------------
@router.get("/ui/export/download")
@ui
async def download_export(request: Request, v: Viewer) -> Response:
    """The API's export route itself, with the console's viewer and the page's choices."""
    flt = _filter(request, {"format", "metric", "include_errors"})
    q = request.query_params
    resp: Response = await export_api.export(
        request, v.principal, flt, format=q.get("format", "openai"),
        include_errors=q.get("include_errors") == "true", include_feedback=False,
        metric=q.get("metric") or None, min_margin=0.0, comparisons=True, dedupe=False,
        max_examples=None, split=None, part=None, min_turns=None, max_chars=None, as_of=None,
    )  # fmt: skip
    ext = "parquet" if q.get("format") == "parquet" else "jsonl"
    resp.headers["Content-Disposition"] = f'attachment; filename="export.{ext}"'
    for k, val in HEADERS.items():
        if k != "Cache-Control":
            resp.headers[k] = val
    return resp
