"""Curation: edit one interaction's labels, label every interaction a filter matches,
and replay a conversation on another model of its use case.

- ``PATCH /api/v1/interactions/{id}`` ``{"labels": {"k": "v", "gone": null}}`` merges
  labels (null removes a key) → the updated interaction.
- ``POST /api/v1/interactions/labels`` ``{"filter": {…}, "set": {…}, "unset": […]}`` →
  ``{"updated": N, "matched": M}``: M interactions match, N of them changed.
- ``POST /api/v1/interactions/{id}/replay`` ``{"model": "model_key"}`` → the new
  interaction, made by the gateway and labelled ``replay_of=<id>``.

All need the ``ingest`` scope; a key limited to use cases touches only those (others
are not found). Label changes are ``amendments`` rows (``action = 'labels'``, the
interaction's whole new label map) written through the write-ahead log, as the stored
completions' metadata update does; ``store.duck.effective`` applies the latest one on
every read. A bulk label resolves its filter with the very condition the list uses
(``Expr.where`` over the effective ``interactions`` view), so it changes exactly the
rows the list shows for that filter at that moment. Each changed row's new map is
computed from its labels as read; a concurrent edit of the same row in between is
overwritten (last write wins, as for any amendment).

The console (``console/``) calls these functions, not the HTTP routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Ingest
from api.body import JSONResponse
from gateway import chat
from service.keys import Principal
from store.ack import wait
from store.errors import InvalidRequest, NotFound, StoreError, Unavailable, ValidationFailed
from store.filters import Expr, Filter, parse_expr, restrict
from store.ids import uuid7_many
from store.reader import Reader
from store.rows import Columns
from store.schema import AMENDMENTS_TABLE, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS

router = APIRouter(tags=["curation"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = 20_000  # amendment rows per log record
REPLAY_LABEL = "replay_of"
# Request fields of a stored interaction's params that a replay does not send again.
_NOT_REPLAYED = frozenset({"stream", "stream_options", "n", "store"})


class LabelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str | None] = Field(
        description="Labels to set; a null value removes that key. Other labels stay.",
        examples=[{"dataset": "sft-v2", "draft": None}],
    )


class BulkLabels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: dict[str, Any] = Field(
        description='The list\'s filters (`{"use_case": "support", "label": ["topic:billing"]}`) '
        'or `{"and"|"or"|"not": …}` of them; `{}` matches every interaction.',
        examples=[{"use_case": "support", "label": ["topic:billing"]}],
    )
    set: dict[str, str] = Field(default_factory=dict, description="Labels to set.")
    unset: list[str] = Field(default_factory=list, description="Label keys to remove.")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        min_length=1,
        max_length=200,
        description="A model key of the gateway's routing file, for the interaction's use case.",
    )


# -- labels ------------------------------------------------------------------------------
def check_changes(set_: dict[str, str | None], param: str) -> None:
    """Keys and values within the label limits (the merged map is checked per row)."""
    for k, v in set_.items():
        if not k or len(k) > MAX_LABEL_KEY:
            raise ValidationFailed(
                f"{param}: label key {k[:80]!r} must be 1 to {MAX_LABEL_KEY} characters",
                param=param,
            )
        if v is not None and len(v) > MAX_LABEL_VALUE:
            raise ValidationFailed(
                f"{param}.{k}: value has {len(v)} characters, at most {MAX_LABEL_VALUE} allowed",
                param=f"{param}.{k}",
            )


def merged(labels: dict[str, str] | None, changes: dict[str, str | None]) -> dict[str, str]:
    out = dict(labels or {})
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def amendments(rows: list[tuple[str, str, dict[str, str]]]) -> Columns:
    """``amendments`` rows giving each interaction ``(id, use_case, labels)`` its labels."""
    now = (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)
    n = len(rows)
    return {
        "id": uuid7_many(n),
        "created_at": [now] * n,
        "completion_id": [r[0] for r in rows],
        "use_case": [r[1] for r in rows],
        "action": ["labels"] * n,
        "labels": [r[2] for r in rows],
        "day": [now // 86_400_000_000] * n,
    }


async def patch_labels(
    state: Any, principal: Principal, interaction_id: str, changes: dict[str, str | None]
) -> dict[str, Any]:
    """Merge ``changes`` into one interaction's labels; the interaction as now stored."""
    check_changes(changes, "body.labels")
    reader: Reader = state.reader
    visible = principal.visible(None)
    item = await run_in_threadpool(reader.get, interaction_id, use_cases=visible)
    new = merged(item.get("labels"), changes)
    if len(new) > MAX_LABELS:
        raise ValidationFailed(
            f"body.labels: the interaction would have {len(new)} labels, at most {MAX_LABELS}",
            param="body.labels",
        )
    if new != (item.get("labels") or {}):
        rows = amendments([(item["id"], item["use_case"], new)])
        await wait(state.store.write(AMENDMENTS_TABLE, rows))
        item = await run_in_threadpool(reader.get, interaction_id, use_cases=visible)
    return item


def _matching_labels(
    store: Any, expr: Expr, use_cases: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    """(id, use case, labels) of every interaction ``expr`` matches now, by the list's
    own condition over the effective view."""
    where, params = restrict(expr, use_cases).where()
    return store.query(  # type: ignore[no-any-return]
        f"SELECT id, use_case, labels FROM interactions WHERE {where}",
        params,
        use_cases=use_cases,
        max_rows=None,
    ).to_pylist()


async def bulk_label(
    state: Any, principal: Principal, expr: Expr, set_: dict[str, str], unset: list[str]
) -> dict[str, int]:
    """Set and unset labels on every interaction ``expr`` matches."""
    if not set_ and not unset:
        raise ValidationFailed("body.set: give labels to set, or keys to unset", param="body.set")
    check_changes(dict(set_), "body.set")
    for i, k in enumerate(unset):
        if not k or len(k) > MAX_LABEL_KEY:
            raise ValidationFailed(f"body.unset[{i}]: not a label key", param=f"body.unset[{i}]")
        if k in set_:
            raise ValidationFailed(f"body.unset[{i}]: {k!r} is also in set",
                                   param=f"body.unset[{i}]")  # fmt: skip
    changes: dict[str, str | None] = {**set_, **{k: None for k in unset}}
    if isinstance(expr, Filter) and expr.use_case:  # as the list: naming another is a 403
        principal.visible(expr.use_case)
    rows = await run_in_threadpool(_matching_labels, state.store, expr, principal.visible(None))
    changed = []
    for r in rows:
        old = dict(r["labels"]) if r["labels"] is not None else {}
        new = merged(old, changes)
        if len(new) > MAX_LABELS:
            raise ValidationFailed(
                f"body.set: interaction {r['id']!r} would have {len(new)} labels, at most "
                f"{MAX_LABELS}; nothing was changed",
                param="body.set",
            )
        if new != old:
            changed.append((r["id"], r["use_case"], new))
    for i in range(0, len(changed), _CHUNK):
        await wait(state.store.write(AMENDMENTS_TABLE, amendments(changed[i : i + _CHUNK])))
    return {"updated": len(changed), "matched": len(rows)}


def parse_bulk_filter(raw: dict[str, Any]) -> Expr:
    """The body's filter. ``{}`` is every interaction; a null or empty value anywhere
    would silently match everything, so it is refused."""
    if not raw:
        return Filter()
    _no_empty(raw, "body.filter")
    return parse_expr(raw, "body.filter")


def _no_empty(raw: Any, where: str) -> None:
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    for key, value in items:
        at = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
        if value is None or value == [] or value == {}:
            raise ValidationFailed(f"{at}: a null or empty value would match everything",
                                   param=at)  # fmt: skip
        if isinstance(value, dict | list):
            _no_empty(value, at)


# -- replay ------------------------------------------------------------------------------
def replay_body(item: dict[str, Any], model_key: str) -> bytes:
    """The chat request that asks ``model_key`` the stored interaction's question again:
    its messages and request parameters (tools, temperature …), non-streamed, one
    choice, labelled ``replay_of``."""
    if "/" in model_key:
        raise ValidationFailed(
            "body.model: a model key of the routing file, without a use case", param="body.model"
        )
    params: dict[str, Any] = item["params"] if isinstance(item.get("params"), dict) else {}
    body = {k: v for k, v in params.items() if k not in _NOT_REPLAYED and k not in chat.OWNED}
    body.pop("messages", None)
    body.update(
        model=f"{item['use_case']}/{model_key}",
        messages=item["messages"],
        labels={REPLAY_LABEL: item["id"]},
    )
    if item.get("user") is not None:
        body["user"] = item["user"]
    return orjson.dumps(body)


class _Captured:
    """An ASGI ``send`` that keeps the answer instead of sending it."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def replay(
    state: Any, principal: Principal, interaction_id: str, model_key: str
) -> dict[str, Any]:
    """Run the interaction's messages on ``model_key`` through the gateway; the new
    interaction once it is durable (an upstream failure is the gateway's error)."""
    reader: Reader = state.reader
    visible = principal.visible(None)
    item = await run_in_threadpool(reader.get, interaction_id, use_cases=visible)
    if not item.get("messages"):
        raise InvalidRequest("this interaction has no messages to replay", param="id")
    try:
        call = chat.prepare(replay_body(item, model_key), state.gateway, principal.use_cases,
                            state.settings.limits())  # fmt: skip
    except StoreError as exc:  # the gateway names the request's own field
        if exc.param == "model":
            exc.param = "body.model"
        raise
    state.gateway_stats.calls += 1
    await chat.complete(call, state.upstreams.session(), state.store, state.gateway_stats,
                        state.settings.limits(), _Captured())  # fmt: skip
    new_id = call.completion_id(0)
    await run_in_threadpool(state.store.settle, [new_id])
    try:
        return await run_in_threadpool(reader.get, new_id, use_cases=visible)
    except NotFound:  # the gateway could not log it (see /readyz gateway.log_failures)
        raise Unavailable(
            "the replay was answered but its interaction could not be stored; try again",
            retry_after=1,
        ) from None


# -- routes ------------------------------------------------------------------------------
@router.patch("/interactions/{interaction_id}", summary="Set or remove labels of one interaction")
async def patch_interaction(
    request: Request, principal: Ingest, interaction_id: str, body: LabelPatch
) -> JSONResponse:
    item = await patch_labels(request.app.state, principal, interaction_id, body.labels)
    return JSONResponse(item)


@router.post(
    "/interactions/labels",
    summary="Set and unset labels on every interaction a filter matches → {updated: N}",
)
async def label_interactions(request: Request, principal: Ingest, body: BulkLabels) -> JSONResponse:
    expr = parse_bulk_filter(body.filter)
    result = await bulk_label(request.app.state, principal, expr, body.set, body.unset)
    return JSONResponse(result)


@router.post(
    "/interactions/{interaction_id}/replay",
    summary="Replay an interaction's messages on another model of its use case",
)
async def replay_interaction(
    request: Request, principal: Ingest, interaction_id: str, body: ReplayRequest
) -> JSONResponse:
    item = await replay(request.app.state, principal, interaction_id, body.model)
    return JSONResponse(item, status_code=201)
