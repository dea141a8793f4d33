"""The console's pages (GET): overview, interactions, one conversation, a session,
labels, SQL, export; and signing in and out.

Each page reads through the code the API uses (``Reader.page``/``get``,
``store.stats``, ``Reader.run_sql``, ``store.export.Exporter``) with the viewer's
principal, so a key limited to use cases sees here exactly what it sees over the API.
The interactions page takes exactly the query parameters of ``GET
/api/v1/interactions`` and checks them with the same functions (``api.filters``); an
empty parameter (a blank field of the filter form) is dropped by a redirect, so the
address bar always holds a URL the API accepts."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.errors import status_of
from api.filters import check_params, filters_from_query
from console import overview as ov
from console import views
from console.render import page
from console.security import (
    HEADERS,
    SESSION_COOKIE,
    SESSION_HOURS,
    SignInRequired,
    Viewer,
    check_write,
    cookie_args,
    same_origin,
    sessions_of,
    viewer,
)
from store import stats as agg
from store.errors import NotFound, StoreError, Unauthorized, ValidationFailed
from store.filters import FILTER_NAMES, Filter, filter_from_kwargs
from store.reader import MAX_LIMIT, Reader

router = APIRouter(include_in_schema=False)

LIST_PARAMS = FILTER_NAMES | {"limit", "order", "after"}
REPEATABLE = ("search", "use_case", "model", "label", "has_label", "no_label", "session_id",
              "user", "source", "status", "feedback")  # fmt: skip
VIEWS = ("interactions", "feedback", "comparisons", "outcomes")
Handler = Callable[..., Awaitable[Response]]


def ui(fn: Handler) -> Handler:
    """A console handler: resolves the viewer, turns errors into HTML (and a missing
    session into the sign-in page)."""

    @functools.wraps(fn)
    async def wrapper(request: Request, **kw: Any) -> Response:
        v: Viewer | None = None
        try:
            v = viewer(request)
            v.principal.require("read")
            return await fn(request, v, **kw)
        except SignInRequired:
            target = "/ui/login?" + urlencode({"next": _here(request)})
            if request.headers.get("hx-request"):
                return Response(status_code=401, headers={**HEADERS, "HX-Redirect": target})
            return RedirectResponse(target, status_code=303, headers=HEADERS)
        except StoreError as exc:
            return page(request, v, "error.html", status=status_of(exc), error=exc,
                        fragment=bool(request.headers.get("hx-request")))  # fmt: skip

    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "v"]
    wrapper.__signature__ = inspect.signature(fn).replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def _here(request: Request) -> str:
    q = request.url.query
    return request.url.path + (f"?{q}" if q else "")


def _items(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _clean(request: Request) -> Response | None:
    """A redirect to the same URL without empty parameters, when it has some."""
    items = _items(request)
    kept = [(k, val) for k, val in items if val.strip() != ""]
    if len(kept) == len(items):
        return None
    q = urlencode(kept)
    return RedirectResponse(request.url.path + (f"?{q}" if q else ""), 303, headers=HEADERS)


def _filter(request: Request, extra: set[str]) -> Filter:
    check_params(request, FILTER_NAMES | extra)
    return filter_from_kwargs(filters_from_query(request))


class Links:
    """URLs of the list page with one filter more or less (never a cursor)."""

    def __init__(self, items: list[tuple[str, str]], base: str = "/ui/interactions") -> None:
        self.items = [(k, v) for k, v in items if k != "after"]
        self.base = base

    def url(self, items: list[tuple[str, str]]) -> str:
        return self.base + ("?" + urlencode(items) if items else "")

    def add(self, name: str, value: str) -> str:
        if (name, value) in self.items:
            return self.url(self.items)
        return self.url([*self.items, (name, value)])

    def remove(self, name: str, value: str) -> str:
        return self.url([kv for kv in self.items if kv != (name, value)])

    def active(self) -> list[tuple[str, str]]:
        return [kv for kv in self.items if kv[0] in FILTER_NAMES]

    def first(self, name: str) -> str:
        return next((v for k, v in self.items if k == name), "")

    def query(self) -> str:
        return urlencode([kv for kv in self.items if kv[0] in FILTER_NAMES])


class Cached:
    """A value recomputed at most every ``ttl`` seconds per key (lists for the forms)."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        value = make()
        self._values[key] = (time.monotonic(), value)
        return value


_USE_CASES = Cached(300.0)  # a scan of every row: the filter form's choices may lag
_METRICS = Cached(300.0)
_COLUMNS = Cached(600.0)


def use_case_list(state: Any, visible: tuple[str, ...] | None) -> list[dict[str, Any]]:
    return _USE_CASES.get(  # type: ignore[no-any-return]
        visible, lambda: agg.use_cases(state.store, Filter(), use_cases=visible)
    )


def feedback_metrics(state: Any, visible: tuple[str, ...] | None) -> list[str]:
    def make() -> list[str]:
        table, _ = state.reader.run_sql(
            "SELECT metric, count(*) AS n FROM feedback GROUP BY metric ORDER BY n DESC, metric",
            max_rows=50, use_cases=visible,
        )  # fmt: skip
        return [str(m) for m in table.column("metric").to_pylist()]

    return _METRICS.get(visible, make)  # type: ignore[no-any-return]


def _page_feedback(state: Any, ids: list[str], visible: tuple[str, ...] | None) -> dict[str, Any]:
    """Per interaction of a page: its feedback, summarised per metric."""
    if not ids:
        return {}
    rows = state.store.query(
        "SELECT completion_id, metric, value FROM feedback WHERE list_contains(?, completion_id)",
        [ids], use_cases=visible,
    ).to_pylist()  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["completion_id"], []).append(r)
    return {k: views.feedback_summary(v) for k, v in by.items()}


def _row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        **item,
        "prompt": views.excerpt(views.first_user(item.get("messages"))),
        "answer": views.excerpt(views.completion_text(item.get("completion"))),
    }


def _gateway_models(state: Any, use_case: str) -> list[str] | None:
    """Model keys a replay may use for ``use_case`` (its own first), or None when the
    gateway has no routing file or does not route this use case."""
    try:
        routing = state.gateway.current()
    except StoreError:
        return None
    uc = routing.use_cases.get(use_case) or routing.use_cases.get("*")
    if uc is None:
        return None
    own = [m for m in [uc.default_model, *(arm for arm, _ in uc.split)] if m]
    return list(dict.fromkeys(own + sorted(routing.models)))


# -- pages ----------------------------------------------------------------------------------
@router.get("/ui/")
@ui
async def overview_page(request: Request, v: Viewer) -> Response:
    if (r := _clean(request)) is not None:
        return r
    state = request.app.state
    flt = _filter(request, {"range", "split", "metric", "bucket"})
    q = request.query_params
    range_ = q.get("range", "7d")
    split = (q.getlist("split") or ["use_case"])[-1]  # the label-key field wins
    visible = v.principal.visible(flt.use_case)
    metrics = await run_in_threadpool(feedback_metrics, state, visible)
    metric = q.get("metric") or (metrics[0] if metrics else None)
    data = await run_in_threadpool(ov.build, state.store, flt, range_, split, metric, visible,
                                   datetime.now(UTC), q.get("bucket"))  # fmt: skip
    keep = [kv for kv in _items(request) if kv[0] in ("range", "split", "metric", "bucket")]
    links = Links([kv for kv in _items(request) if kv not in keep], base="/ui/")
    links.items += keep  # chips remove one filter and keep the chart choices
    return page(request, v, "overview.html", data=data, range_=range_, split=split,
                metric=metric, metrics=metrics, links=links, splits=ov.SPLITS,
                ranges=list(ov.RANGES), custom=flt.since is not None or flt.until is not None,
                use_cases=await run_in_threadpool(use_case_list, state, visible))  # fmt: skip


@router.get("/ui/campaigns")
@ui
async def campaigns_fragment(request: Request, v: Viewer) -> Response:
    """The overview's A/B campaigns for its resolved range (``from``/``to``)."""
    flt = _filter(request, {"metric"})
    if flt.since is None or flt.until is None:
        raise ValidationFailed("from: give from and to", param="from")
    visible = v.principal.visible(flt.use_case)
    metric = request.query_params.get("metric") or None
    data = await run_in_threadpool(ov.campaigns, request.app.state.store, flt, metric, visible)
    return page(request, v, "_campaigns.html", campaigns=data, metric=metric,
                fragment=bool(request.headers.get("hx-request")))  # fmt: skip


@router.get("/ui/interactions/{interaction_id}/neighbours")
@ui
async def neighbours_fragment(request: Request, v: Viewer, interaction_id: str) -> Response:
    """The interactions of the same session within a day either side (after the page)."""
    visible = v.principal.visible(None)
    reader: Reader = request.app.state.reader
    item = await run_in_threadpool(reader.get, interaction_id, use_cases=visible)
    neighbours: list[dict[str, Any]] = []
    if item.get("session_id"):
        at = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        near = Filter(session_id=(item["session_id"],), since=at - timedelta(days=1),
                      until=at + timedelta(days=1))  # fmt: skip
        found = await run_in_threadpool(reader.page, near, limit=50, order="asc",
                                        use_cases=visible)  # fmt: skip
        neighbours = [_row(x) for x in found.data]
    return page(request, v, "_neighbours.html", item=item, neighbours=neighbours,
                fragment=bool(request.headers.get("hx-request")))  # fmt: skip


@router.get("/ui/interactions")
@ui
async def list_page(request: Request, v: Viewer) -> Response:
    if (r := _clean(request)) is not None:
        return r
    state = request.app.state
    flt = _filter(request, {"limit", "order", "after"})
    q = request.query_params
    limit = _int(q.get("limit", "50"), "limit", 1, MAX_LIMIT)
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValidationFailed(f"order: must be asc or desc, got {order!r}", param="order")
    visible = v.principal.visible(flt.use_case)
    reader: Reader = state.reader
    result = await run_in_threadpool(reader.page, flt, limit=limit, order=order,
                                     after=q.get("after"), use_cases=visible)  # fmt: skip
    ids = [x["id"] for x in result.data]
    fb = await run_in_threadpool(_page_feedback, state, ids, visible)
    links = Links(_items(request))
    nxt = None
    if result.next_cursor:
        nxt = links.url([*links.items, ("after", result.next_cursor)])
    return page(request, v, "list.html", rows=[_row(x) for x in result.data], feedback=fb,
                links=links, next_url=nxt, first_url=links.url(links.items) if q.get("after")
                else None, order=order, limit=limit, repeatable=REPEATABLE,
                single={k: q.get(k, "") for k in ("from", "to")},
                use_cases=await run_in_threadpool(use_case_list, state, visible))  # fmt: skip


def _int(text: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValidationFailed(f"{name}: must be an integer", param=name) from None
    if not lo <= n <= hi:
        raise ValidationFailed(f"{name}: must be {lo} to {hi}, got {n}", param=name)
    return n


@router.get("/ui/interactions/{interaction_id}")
@ui
async def conversation_page(request: Request, v: Viewer, interaction_id: str) -> Response:
    state = request.app.state
    visible = v.principal.visible(None)
    reader: Reader = state.reader
    item = await run_in_threadpool(reader.get, interaction_id, use_cases=visible)
    replay_of = (item.get("labels") or {}).get("replay_of")
    origin = str(request.base_url).rstrip("/")
    return page(
        request, v, "conversation.html", item=item,
        turns=[views.turn(m) for m in item.get("messages") or []],
        completion=views.completion_turn(item.get("completion")),
        replay_of=replay_of,
        models=_gateway_models(state, item["use_case"]) if v.can_write else None,
        metrics=await run_in_threadpool(feedback_metrics, state, visible),
        curl=views.curl_get(origin, item["id"], v.session), links=Links([]),
    )  # fmt: skip


@router.get("/ui/sessions/{session_id:path}")
@ui
async def session_page(request: Request, v: Viewer, session_id: str) -> Response:
    visible = v.principal.visible(None)
    reader: Reader = request.app.state.reader
    found = await run_in_threadpool(reader.page, Filter(session_id=(session_id,)), limit=200,
                                    order="asc", use_cases=visible)  # fmt: skip
    if not found.data:
        raise NotFound(f"no interaction in session {session_id!r}", param="session_id")
    turns = [
        {**_row(x), "turns": [views.turn(m) for m in x.get("messages") or []],
         "completion_turn": views.completion_turn(x.get("completion"))}
        for x in found.data
    ]  # fmt: skip
    return page(request, v, "session.html", session_id=session_id, items=turns,
                more=found.has_more, links=Links([]))  # fmt: skip


@router.get("/ui/labels")
@ui
async def labels_page(request: Request, v: Viewer) -> Response:
    if (r := _clean(request)) is not None:
        return r
    flt = _filter(request, set())
    visible = v.principal.visible(flt.use_case)
    data = await run_in_threadpool(agg.labels, request.app.state.store, flt, top=10,
                                   use_cases=visible)  # fmt: skip
    return page(request, v, "labels.html", labels=data, links=Links(_items(request)))


def _columns(state: Any, visible: tuple[str, ...] | None) -> dict[str, list[tuple[str, str]]]:
    def make() -> dict[str, list[tuple[str, str]]]:
        out = {}
        for view in VIEWS:
            table, _ = state.reader.run_sql(f"SELECT * FROM {view} LIMIT 0", use_cases=visible)
            out[view] = [(f.name, str(f.type)) for f in table.schema]
        return out

    return _COLUMNS.get(visible, make)  # type: ignore[no-any-return]


@router.get("/ui/sql")
@ui
async def sql_page(request: Request, v: Viewer) -> Response:
    check_params(request, {"sql"})
    visible = v.principal.visible(None)
    columns = await run_in_threadpool(_columns, request.app.state, visible)
    default = ("SELECT use_case, model, count(*) AS n, median(latency_ms) AS p50_ms\n"
               "FROM interactions\nGROUP BY ALL\nORDER BY n DESC\nLIMIT 20")  # fmt: skip
    return page(request, v, "sql.html", columns=columns,
                sql=request.query_params.get("sql", default), links=Links([]))  # fmt: skip


EXPORT_FORMATS = ("openai", "adaptive", "parquet", "dpo", "openai-dpo", "adaptive-preference")
PAIR_FORMATS = ("dpo", "openai-dpo", "adaptive-preference")
PREVIEW = 3


def _export_preview(state: Any, flt: Filter, fmt: str, metric: str | None, include_errors: bool,
                    visible: tuple[str, ...] | None) -> tuple[int | None, list[str]]:  # fmt: skip
    """(how many examples the export holds, the first few lines)."""
    from store.export import Exporter, ExportOptions

    examples = None
    if fmt not in PAIR_FORMATS:
        f = flt if include_errors else replace(flt, status=flt.status or ("ok",))
        res = agg.stats(state.store, f, [], ["count"], use_cases=visible)
        examples = int(res["data"][0]["count"])
    shown = "openai" if fmt == "parquet" else fmt
    options = ExportOptions(format=shown, metric=metric, include_errors=include_errors)
    exporter = Exporter(state.store, state.store.snapshot(), flt, options, visible)
    lines = exporter.pairs() if fmt in PAIR_FORMATS else exporter.sft()
    preview: list[str] = []
    count = 0
    for _, line in lines:
        if len(preview) < PREVIEW:
            preview.append(line.decode())
        count += 1
        if examples is not None and len(preview) >= PREVIEW:
            break
        if count >= 100_000:  # pairs: a bound on the work a preview does
            break
    return (examples if examples is not None else count), preview


@router.get("/ui/export")
@ui
async def export_page(request: Request, v: Viewer) -> Response:
    if (r := _clean(request)) is not None:
        return r
    flt = _filter(request, {"format", "metric", "include_errors"})
    q = request.query_params
    fmt = q.get("format", "openai")
    if fmt not in EXPORT_FORMATS:
        raise ValidationFailed(f"format: one of {', '.join(EXPORT_FORMATS)}", param="format")
    include_errors = q.get("include_errors", "false") == "true"
    metric = q.get("metric") or None
    visible = v.principal.visible(flt.use_case)
    count, preview = await run_in_threadpool(_export_preview, request.app.state, flt, fmt,
                                             metric, include_errors, visible)  # fmt: skip
    links = Links(_items(request), base="/ui/export")
    params = [*links.active(), ("format", fmt)]
    if metric:
        params.append(("metric", metric))
    if include_errors:
        params.append(("include_errors", "true"))
    metrics = await run_in_threadpool(feedback_metrics, request.app.state, visible)
    return page(request, v, "export.html", links=links, fmt=fmt, formats=EXPORT_FORMATS,
                metric=metric or "", include_errors=include_errors, count=count,
                preview=[_pretty_line(x) for x in preview], pair=fmt in PAIR_FORMATS,
                download="/ui/export/download?" + urlencode(params), metrics=metrics)  # fmt: skip


def _pretty_line(line: str) -> str:
    try:
        return orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return line


# -- signing in and out ---------------------------------------------------------------------
def _next(target: str | None) -> str:
    """Only a path of the console: never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"


@router.get("/ui/login")
async def login_page(request: Request) -> Response:
    keys = request.app.state.keys
    if not keys.active():
        return RedirectResponse("/ui/", 303, headers=HEADERS)
    return page(request, None, "login.html", next=_next(request.query_params.get("next")),
                error=None, links=Links([]))  # fmt: skip


@router.post("/ui/login")
async def login(request: Request) -> Response:
    from console.actions import form

    state = request.app.state
    try:
        fields = await form(request)
    except StoreError as exc:
        return page(request, None, "login.html", status=status_of(exc), next="/ui/",
                    error=exc.message, links=Links([]))  # fmt: skip
    target = _next(fields.get("next"))
    if not state.keys.active():
        return RedirectResponse("/ui/", 303, headers=HEADERS)
    if not same_origin(request):
        return page(request, None, "login.html", status=403, next=target,
                    error="Cross-origin sign-in refused.", links=Links([]))  # fmt: skip
    key = (fields.get("key") or "").strip()
    try:
        principal = await state.keys.authenticate_async(f"Bearer {key}")
    except Unauthorized:
        return page(request, None, "login.html", status=401, next=target,
                    error="That key is not valid.", links=Links([]))  # fmt: skip
    sid = await run_in_threadpool(sessions_of(state).start, principal)
    resp = RedirectResponse(target, 303, headers=HEADERS)
    resp.set_cookie(SESSION_COOKIE, sid, max_age=int(SESSION_HOURS * 3600), **cookie_args(request))
    return resp


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    from console.actions import form

    try:
        fields = await form(request)
        v = viewer(request)
        check_write(request, v, fields.get("csrf"), scope=None)
    except StoreError:
        return RedirectResponse("/ui/login", 303, headers=HEADERS)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        await run_in_threadpool(sessions_of(request.app.state).end, sid)
    resp = RedirectResponse("/ui/login", 303, headers=HEADERS)
    resp.delete_cookie(SESSION_COOKIE, **cookie_args(request))
    return resp
