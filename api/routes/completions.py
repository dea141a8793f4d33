"""OpenAI stored completions over the interaction store: list, retrieve, messages,
update metadata, delete — under ``/api/v1`` and ``/v1``, so the official ``openai``
client's ``chat.completions.list/retrieve/update/delete`` and
``chat.completions.messages.list`` work unchanged.

Metadata is the interaction's labels. An update replaces them (as OpenAI does) and a
delete hides the interaction; both are appended to the ``amendments`` table through
the write-ahead log, never rewriting Parquet (``store.duck.effective`` applies them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import Admin, Ingest, Read
from api.body import JSONResponse
from api.filters import check_params
from ingest.models import Labels, check_labels
from store.ack import wait
from store.errors import NotFound, ValidationFailed
from store.filters import Filter, encode_cursor
from store.ids import uuid7_many
from store.reader import Reader
from store.schema import AMENDMENTS_TABLE

router = APIRouter(tags=["stored completions (OpenAI)"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _created(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def to_chat_completion(item: dict[str, Any]) -> dict[str, Any]:
    """A stored interaction as an OpenAI ``ChatCompletion`` (with its metadata)."""
    completion = item.get("completion")
    if isinstance(completion, dict):
        message = {"role": "assistant", "content": None, "refusal": None, **completion}
    else:
        message = {"role": "assistant", "content": completion, "refusal": None}
    labels = item.get("labels") or {}
    # What the upstream said, when the gateway (or a gateway log) recorded it.
    finish = labels.get("finish_reason") or ("tool_calls" if message.get("tool_calls") else "stop")
    usage = item.get("usage") or None
    if usage is not None:
        usage = {k: usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens",
                                                 "total_tokens")}  # fmt: skip
    return {
        "id": item["id"],
        "object": "chat.completion",
        "created": _created(item["created_at"]),
        "model": item.get("model") or "",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
        "metadata": item.get("labels") or {},
        "use_case": item["use_case"],
        "session_id": item.get("session_id"),
    }


def _page_after(reader: Reader, after: str | None, use_cases: tuple[str, ...] | None) -> str | None:
    """OpenAI's ``after`` is an id; our pages take a (time, id) cursor."""
    if after is None:
        return None
    try:
        item = reader.get(after, use_cases=use_cases)
    except NotFound:
        raise NotFound(f"after: no stored completion {after!r}", param="after") from None
    created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
    return encode_cursor(created, after)


def _metadata_filter(request: Request) -> tuple[tuple[str, tuple[str, ...]], ...]:
    labels = []
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata"):
            continue
        if not (name.startswith("metadata[") and name.endswith("]") and len(name) > 10):
            raise ValidationFailed(f"{name}: use metadata[key]=value", param=name)
        labels.append((name[9:-1], (value,)))
    return tuple(labels)


def _list(request: Request, principal: Any, model: str | None, after: str | None, limit: int,
          order: str) -> dict[str, Any]:  # fmt: skip
    allowed = {"model", "after", "limit", "order"} | {
        k for k in request.query_params if k.startswith("metadata")
    }
    check_params(request, allowed)
    reader: Reader = request.app.state.reader
    visible = principal.visible(None)
    flt = Filter(model=(model,) if model else (), labels=_metadata_filter(request))
    cursor = _page_after(reader, after, visible)
    page = reader.page(flt, limit=limit, order=order, after=cursor, use_cases=visible)
    data = [to_chat_completion(x) for x in page.data]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: Labels | None = Field(description="The new labels; they replace the old ones.")

    @field_validator("metadata")
    @classmethod
    def _labels(cls, v: Labels | None) -> Labels | None:
        return check_labels(v)


def _amend(request: Request, item: dict[str, Any], action: str, labels: Labels | None) -> Any:
    (id_,) = uuid7_many(1)
    now = (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)
    cols = {
        "id": [id_],
        "created_at": [now],
        "completion_id": [item["id"]],
        "use_case": [item["use_case"]],
        "action": [action],
        "labels": [labels if labels is not None else ({} if action == "labels" else None)],
        "day": [now // 86_400_000_000],
    }
    return request.app.state.store.write(AMENDMENTS_TABLE, cols)


def _routes(prefix: str) -> None:
    hidden = prefix == "/v1"  # documented once, under /api/v1

    @router.get(f"{prefix}/chat/completions", summary="List stored chat completions (OpenAI)",
                include_in_schema=not hidden)  # fmt: skip
    def list_completions(
        request: Request,
        principal: Read,
        model: str | None = None,
        after: Annotated[str | None, Query(description="The last id of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Literal["asc", "desc"] = "asc",
    ) -> JSONResponse:
        return JSONResponse(_list(request, principal, model, after, limit, order))

    @router.get(f"{prefix}/chat/completions/{{completion_id}}", include_in_schema=not hidden,
                summary="Retrieve a stored chat completion (OpenAI)")  # fmt: skip
    def retrieve_completion(request: Request, principal: Read, completion_id: str) -> JSONResponse:
        reader: Reader = request.app.state.reader
        item = reader.get(completion_id, use_cases=principal.visible(None))
        return JSONResponse(to_chat_completion(item))

    @router.get(f"{prefix}/chat/completions/{{completion_id}}/messages",
                include_in_schema=not hidden,
                summary="The messages of a stored chat completion (OpenAI)")  # fmt: skip
    def completion_messages(
        request: Request,
        principal: Read,
        completion_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Literal["asc", "desc"] = "asc",
    ) -> JSONResponse:
        reader: Reader = request.app.state.reader
        item = reader.get(completion_id, use_cases=principal.visible(None))
        messages = [
            {"id": f"{completion_id}-{i}", **m, "content": m.get("content")}
            for i, m in enumerate(item["messages"])
        ]
        if order == "desc":
            messages.reverse()
        if after is not None:
            ids = [m["id"] for m in messages]
            if after not in ids:
                raise ValidationFailed(f"after: no message {after!r} in this completion",
                                       param="after")  # fmt: skip
            messages = messages[ids.index(after) + 1 :]
        page = messages[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(messages) > limit,
            }  # fmt: skip
        )

    @router.post(f"{prefix}/chat/completions/{{completion_id}}", include_in_schema=not hidden,
                 summary="Replace a stored chat completion's metadata (labels)")  # fmt: skip
    async def update_completion(
        request: Request, principal: Ingest, completion_id: str, body: UpdateRequest
    ) -> JSONResponse:
        reader: Reader = request.app.state.reader
        visible = principal.visible(None)
        item = await run_in_threadpool(reader.get, completion_id, use_cases=visible)
        await wait(_amend(request, item, "labels", body.metadata))
        if not principal.allows("read"):
            # An ingest key writes; it does not read back what is stored.
            return JSONResponse({"id": completion_id, "object": "chat.completion",
                                 "metadata": body.metadata or {}})  # fmt: skip
        item = await run_in_threadpool(reader.get, completion_id, use_cases=visible)
        return JSONResponse(to_chat_completion(item))

    @router.delete(f"{prefix}/chat/completions/{{completion_id}}", include_in_schema=not hidden,
                   summary="Delete a stored chat completion (hidden at once)")  # fmt: skip
    async def delete_completion(
        request: Request, principal: Admin, completion_id: str
    ) -> JSONResponse:
        reader: Reader = request.app.state.reader
        item = await run_in_threadpool(reader.get, completion_id, use_cases=principal.visible(None))
        await wait(_amend(request, item, "delete", None))
        return JSONResponse(
            {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}
        )


_routes("/api/v1")
_routes("/v1")
