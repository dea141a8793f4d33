"""``POST /api/v1/chat/completions`` (and ``/v1/chat/completions``): forward the call to
the routed upstream and log every choice as an interaction (``source=gateway``).

A plain ASGI handler (``api.fastlane`` sends the two paths here before FastAPI routing),
so a call costs one JSON parse, one upstream request and one log write.

The answer is the upstream's ``ChatCompletion`` (or its chunks), plus what the
``adaptive-sdk`` response models require: a UUID ``session_id``, and per choice a
``completion_id`` (the id of the logged interaction, a UUIDv7 for feedback), the
``model`` key and ``message.id``; ``usage`` is always present. The top-level ``id`` is
the first choice's completion id, so ``client.chat.completions.retrieve(resp.id)``
finds the stored completion.

What answered is logged with it: ``model`` is the model key of the routing file (what
the call asked for), the label ``upstream_model`` the model the upstream says answered
(its response's ``model``), and the label ``finish_reason`` each choice's (``stop``,
``length``, ``tool_calls`` …). These two labels are the gateway's: a client's labels of
those names are replaced, and a call may carry at most 62 labels of its own.

Logging never blocks or fails the call: the interactions go to the write-ahead log
after the answer is ready and the answer does not wait for the fsync; a log that cannot
be written is counted (``/readyz``) and logged, and the call still succeeds. Once the
write is acknowledged it is as durable as any ingest. ``store: false`` logs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from gateway import upstream
from gateway.asgi import send_json
from gateway.config import Route, RoutingFile
from gateway.errors import UpstreamError
from ingest import pipeline
from ingest.formats import GATEWAY_LABELS, completion_of
from ingest.parse import Limits, check_limits, validate
from store.engine import Store
from store.errors import InvalidRequest, StoreError, ValidationFailed, require_use_case
from store.ids import uuid7_many
from store.schema import MAX_LABEL_VALUE, MAX_LABELS

log = logging.getLogger("istore.gateway")

# Request fields the gateway owns: never forwarded upstream.
OWNED = frozenset(
    {
        "model", "labels", "metadata", "session_id", "ab_campaign", "store", "stream_options",
        "tags", "system_prompt_args", "use_tools",
    }
)  # fmt: skip
# Forwarded, and not logged as params (they have columns of their own).
_NOT_PARAMS = OWNED | {"messages", "user"}
MAX_N = 128


@dataclass
class GatewayStats:
    calls: int = 0
    streamed: int = 0
    upstream_errors: int = 0
    logged: int = 0
    log_failures: int = 0
    last_log_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Call:
    """One chat request, checked, routed, and ready to forward."""

    route: Route
    messages: list[Any]
    labels: dict[str, str] | None
    metadata: dict[str, str] | None
    session_id: str
    user: str | None
    ab_campaign: str | None
    store: bool
    stream: bool
    include_usage: bool
    n: int
    params: dict[str, Any]
    upstream_body: bytes
    started: float = field(default_factory=time.perf_counter)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    ids: dict[int, str] = field(default_factory=dict)

    def completion_id(self, index: int) -> str:
        """The id of choice ``index``, made at first use (one per index an upstream
        names, however large: never a list up to it)."""
        cid = self.ids.get(index)
        if cid is None:
            cid = self.ids[index] = uuid7_many(1)[0]
        return cid

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)


def _str_or_none(body: dict[str, Any], name: str) -> str | None:
    v = body.get(name)
    if v is None or isinstance(v, str):
        return v
    raise ValidationFailed(f"{name}: must be a string", param=name)


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ValidationFailed(f"{name}: must be true or false", param=name)
    return v


def prepare(
    raw_body: bytes, routing: RoutingFile, use_cases: frozenset[str] | None, limits: Limits
) -> Call:
    """Parse, check and route a request; raise the error the client gets."""
    try:
        body = orjson.loads(raw_body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a chat completion request object", param="body")
    requested = body.get("model")
    if not isinstance(requested, str):
        raise ValidationFailed("model: required, 'use_case/model_key' or 'use_case'", param="model")
    stream = _flag(body, "stream", False)
    store = _flag(body, "store", True)
    session_id = _str_or_none(body, "session_id")
    user = _str_or_none(body, "user")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ValidationFailed(f"n: must be an integer from 1 to {MAX_N}", param="n")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ValidationFailed("stream_options: must be an object", param="stream_options")
    include_usage = bool((options or {}).get("include_usage"))

    # The interaction as it will be logged, checked now so a call is never made that
    # could not be logged, and errors name the request's own fields.
    probe = {
        "use_case": "probe",
        "messages": body.get("messages"),
        "completion": "",
        "labels": body.get("labels"),
        "metadata": body.get("metadata"),
        "session_id": session_id,
        "user": user,
        "ab_campaign": body.get("ab_campaign"),
    }
    if probe["messages"] is None:
        hint = (
            '; this is the chat endpoint: send messages: [{"role": "user", "content": "…"}] '
            "instead of prompt"
            if "prompt" in body
            else ""
        )
        raise ValidationFailed(f"messages: required{hint}", param="messages")
    canon = validate(probe)
    check_limits(canon, limits, "")
    own = set(canon["labels"] or ()) - set(GATEWAY_LABELS)
    if len(own) > MAX_LABELS - len(GATEWAY_LABELS):
        raise ValidationFailed(
            f"labels: at most {MAX_LABELS - len(GATEWAY_LABELS)} labels on a gateway call "
            f"(with metadata), got {len(own)}: the gateway adds {' and '.join(GATEWAY_LABELS)}",
            param="labels",
        )

    sticky = session_id or user
    # Authorised on the use case asked for before routing, so a limited key learns
    # nothing of other use cases' routes (no 404-versus-403 oracle).
    asked = requested.split("/", 1)[0]
    if use_cases is not None and asked not in use_cases and "/" not in requested:
        mine = sorted(use_cases)[0] if use_cases else "use_case"
        require_use_case(use_cases, asked, "model", hint=(
            f"; {asked!r} is read as a use case (the form is 'use_case/model_key', e.g. "
            f"'{mine}/{asked}', or 'use_case')"
        ))  # fmt: skip
    require_use_case(use_cases, asked, "model")
    route = routing.current().route(requested, sticky, use_cases)
    require_use_case(use_cases, route.use_case, "model")

    forward = {k: v for k, v in body.items() if k not in OWNED}
    forward["model"] = route.model.model
    if stream:
        forward["stream_options"] = {"include_usage": True}
    params = {k: v for k, v in body.items() if k not in _NOT_PARAMS}
    ab = canon["ab_campaign"] if canon["ab_campaign"] is not None else route.arm
    return Call(
        route=route,
        messages=body["messages"],
        labels=body.get("labels"),
        metadata=body.get("metadata"),
        session_id=session_id or uuid7_many(1)[0],
        user=user,
        ab_campaign=ab,
        store=store,
        stream=stream,
        include_usage=include_usage,
        n=n,
        params=params,
        upstream_body=orjson.dumps(forward),
    )


# -- logging ----------------------------------------------------------------------------
def _item(
    call: Call, index: int, completion: Any, *, upstream_model: Any = None,
    finish_reason: Any = None, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    labels = {**(call.metadata or {}), **(call.labels or {})}
    for key, value in (("upstream_model", upstream_model), ("finish_reason", finish_reason)):
        labels.pop(key, None)  # the gateway's own: a client's are replaced
        if isinstance(value, str) and value:
            labels[key] = value[:MAX_LABEL_VALUE]
    item = {
        "id": call.completion_id(index),
        "created_at": call.created,
        "use_case": call.route.use_case,
        "model": call.route.model.key,
        "messages": call.messages,
        "completion": completion,
        "labels": labels or None,
        "session_id": call.session_id,
        "user": call.user,
        "ab_campaign": call.ab_campaign,
        "params": call.params or None,
    }
    item.update({k: v for k, v in extra.items() if v is not None})
    return item


def record(
    store: Store, stats: GatewayStats, call: Call, items: list[dict[str, Any]], limits: Limits
) -> None:
    """Hand the interactions to the write-ahead log without waiting for the fsync;
    failures are logged and counted, never raised."""
    if not call.store or not items:
        return
    try:
        canon = []
        for item in items:
            c = validate(item)
            check_limits(c, limits, "")
            canon.append(c)
        ack = pipeline.submit(store, canon, source="gateway").ack
    except StoreError as exc:
        _log_failed(stats, len(items), exc)
        return

    def done(f: Any) -> None:
        exc = f.exception()
        if exc is None:
            stats.logged += len(items)
        else:
            _log_failed(stats, len(items), exc)

    ack.add_done_callback(done)


def _log_failed(stats: GatewayStats, n: int, exc: BaseException) -> None:
    stats.log_failures += n
    stats.last_log_error = str(getattr(exc, "message", exc))
    log.warning("gateway: %d interaction(s) could not be logged: %s", n, stats.last_log_error)


def failed_item(call: Call, exc: StoreError, partial: dict[int, Any] | None = None,
                **extra: Any) -> list[dict[str, Any]]:  # fmt: skip
    """The interactions of a failed call: one per partial choice, or one with none."""
    choices = partial or {0: None}
    return [
        _item(
            call,
            i,
            completion,
            status="error",
            error=exc.message,
            latency_ms=call.elapsed_ms(),
            **extra,
        )  # fmt: skip
        for i, completion in sorted(choices.items())
    ]


# -- answers ----------------------------------------------------------------------------
def finish_completion(call: Call, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Add the Adaptive fields to a ChatCompletion in place; the interactions to log."""
    items = []
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
    latency = call.elapsed_ms()
    for i, (choice, index) in enumerate(zip(answer["choices"], choice_indexes(answer["choices"]),
                                            strict=True)):  # fmt: skip
        choice["index"] = index
        cid = call.completion_id(index)
        choice["completion_id"] = cid
        choice["model"] = call.route.model.key
        message = choice["message"]
        items.append(
            _item(
                call,
                index,
                completion_of({k: v for k, v in message.items() if k != "id"}),
                usage=_usage(usage) if i == 0 else None,
                latency_ms=latency,
                upstream_model=answer.get("model"),
                finish_reason=choice.get("finish_reason"),
            )
        )
        message["id"] = cid
    answer["id"] = call.completion_id(0)
    answer["session_id"] = call.session_id
    answer["usage"] = _client_usage(usage)
    answer.setdefault("created", int(time.time()))
    answer.setdefault("object", "chat.completion")
    return items


def choice_indexes(choices: list[Any]) -> list[int]:
    """One distinct index per choice. An upstream that repeats an index (or sends none,
    or an absurd one) would otherwise give two choices one completion id, and the log
    would keep only the first: a repeated or invalid index becomes the next free one."""
    limit = max(len(choices), MAX_N)
    taken: set[int] = set()
    out: list[int] = []
    for choice in choices:
        index = choice.get("index") if isinstance(choice, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < limit \
                or index in taken:  # fmt: skip
            index = next(k for k in range(limit + len(choices)) if k not in taken)
        taken.add(index)
        out.append(index)
    return out


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    keep = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in keep.values())
    return keep if ok else None


def _client_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """``usage`` as the upstream sent it, with the three counts the Adaptive SDK needs."""
    out = dict(usage or {})
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if not isinstance(out.get(k), int):
            out[k] = 0
    return out


class Assembly:
    """The completion of each choice, put together from stream deltas."""

    def __init__(self) -> None:
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.first_token: float | None = None
        self.model: str | None = None  # what the upstream says answered

    def add(self, chunk: dict[str, Any], now: float) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if self.model is None and isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        for c in chunk.get("choices") or ():
            if not isinstance(c, dict):
                continue
            index = c.get("index", 0)
            index = index if isinstance(index, int) and index >= 0 else 0
            st = self.choices.setdefault(
                index, {"content": [], "refusal": [], "tool_calls": {}, "finish": None}
            )
            if c.get("finish_reason") is not None:
                st["finish"] = c["finish_reason"]
            d = c.get("delta")
            if not isinstance(d, dict):
                continue
            if isinstance(d.get("content"), str) and d["content"]:
                st["content"].append(d["content"])
                self._token(now)
            if isinstance(d.get("refusal"), str) and d["refusal"]:
                st["refusal"].append(d["refusal"])
                self._token(now)
            for tc in d.get("tool_calls") or ():
                if isinstance(tc, dict):
                    self._tool_call(st["tool_calls"], tc)
                    self._token(now)

    def _token(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now

    @staticmethod
    def _tool_call(calls: dict[int, dict[str, Any]], tc: dict[str, Any]) -> None:
        i = tc.get("index", len(calls))
        cur = calls.setdefault(
            i if isinstance(i, int) else len(calls),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if isinstance(tc.get("id"), str):
            cur["id"] = tc["id"]
        if isinstance(tc.get("type"), str):
            cur["type"] = tc["type"]
        fn = tc.get("function")
        if isinstance(fn, dict):
            for key in ("name", "arguments"):
                if isinstance(fn.get(key), str):
                    cur["function"][key] += fn[key]

    def complete(self) -> bool:
        return bool(self.choices) and all(c["finish"] is not None for c in self.choices.values())

    def finish_reasons(self) -> dict[int, Any]:
        return {index: st["finish"] for index, st in self.choices.items()}

    def completions(self) -> dict[int, Any]:
        out = {}
        for index, st in sorted(self.choices.items()):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(st["content"]) if st["content"] else None,
            }
            if st["refusal"]:
                message["refusal"] = "".join(st["refusal"])
            if st["tool_calls"]:
                message["tool_calls"] = [c for _, c in sorted(st["tool_calls"].items())]
            out[index] = completion_of(message)
        return out


async def _as_events(answer: dict[str, Any]) -> AsyncIterator[bytes]:
    """A whole ChatCompletion as the stream events that would have carried it."""
    base = {k: answer.get(k) for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    for c, index in zip(answer["choices"], choice_indexes(answer["choices"]), strict=True):
        delta = {k: v for k, v in c["message"].items() if v is not None}
        choice: dict[str, Any]
        for choice in (
            {"index": index, "delta": delta, "finish_reason": None},
            {"index": index, "delta": {}, "finish_reason": c.get("finish_reason") or "stop"},
        ):
            yield orjson.dumps({**base, "choices": [choice]})
    if isinstance(answer.get("usage"), dict):
        yield orjson.dumps({**base, "choices": [], "usage": answer["usage"]})


def rewrite_chunk(call: Call, chunk: dict[str, Any]) -> None:
    """A stream chunk with the Adaptive fields (``ChatResponseChunk``) added in place."""
    chunk["id"] = call.completion_id(0)
    chunk["session_id"] = call.session_id
    for c in chunk.get("choices") or ():
        if not isinstance(c, dict):
            continue
        index = c.get("index", 0)
        cid = call.completion_id(index if isinstance(index, int) and index >= 0 else 0)
        c["completion_id"] = cid
        c["model"] = call.route.model.key
        d = c.get("delta")
        if isinstance(d, dict):
            d.setdefault("id", cid)
            if d.get("role") is None:
                d["role"] = "assistant"
            if d.get("content") is None and not d.get("tool_calls"):
                d["content"] = ""


# -- the ASGI handler -------------------------------------------------------------------
Send = Any


async def complete(
    call: Call, session: aiohttp.ClientSession, store: Store, stats: GatewayStats,
    limits: Limits, send: Send,
) -> None:  # fmt: skip
    """A non-streamed call: forward, answer, log."""
    model = call.route.model
    try:
        async with session.post(
            upstream.url(model),
            data=call.upstream_body,
            headers=upstream.headers(model, stream=False),
            timeout=aiohttp.ClientTimeout(total=model.timeout_s),
        ) as resp:
            body = await resp.read()
            status = resp.status
        if status >= 300:
            raise upstream.rejected(model, status, body)
        answer = upstream.completion_body(model, body)
    except UpstreamError as exc:
        stats.upstream_errors += 1
        record(store, stats, call, failed_item(call, exc), limits)
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        stats.upstream_errors += 1
        err = upstream.failure(model, exc)
        record(store, stats, call, failed_item(call, err), limits)
        raise err from None
    items = finish_completion(call, answer)
    record(store, stats, call, items, limits)  # before answering: read-your-writes
    await send_json(send, 200, answer)


async def stream(
    call: Call, session: aiohttp.ClientSession, store: Store, stats: GatewayStats,
    limits: Limits, send: Send, disconnected: asyncio.Future[Any],
) -> None:  # fmt: skip
    """A streamed call: pass each upstream event on as it comes, then log what was
    assembled, or the partial answer with ``status=error`` if the stream broke or the
    client left."""
    model = call.route.model
    asm = Assembly()
    error: StoreError | None = None
    started = False

    async def pump() -> None:
        nonlocal started, error
        async with session.post(
            upstream.url(model),
            data=call.upstream_body,
            headers=upstream.headers(model, stream=True),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=model.timeout_s, sock_read=model.timeout_s
            ),
        ) as resp:
            if resp.status >= 300:
                raise upstream.rejected(model, resp.status, await resp.read())
            ctype = resp.headers.get("content-type", "")
            if ctype.startswith("text/event-stream"):
                source = upstream.events(resp)
            elif ctype.startswith("application/json"):  # it ignored stream=true
                answer = upstream.completion_body(model, await resp.read())
                source = _as_events(answer)
            else:
                raise upstream.malformed(model, f"{ctype or 'no content type'}, not a stream")
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            started = True
            async for data in source:
                if data == b"[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise upstream.malformed(model, "a stream event that is not JSON") from None
                if not isinstance(chunk, dict):
                    raise upstream.malformed(model, "a stream event that is not an object")
                if "error" in chunk and "choices" not in chunk:
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else err
                    raise UpstreamError(
                        f"the upstream of model {model.key!r} sent an error mid-stream: {msg}"
                    )
                asm.add(chunk, time.perf_counter())
                if not chunk.get("choices") and not call.include_usage:
                    continue  # the usage chunk the client did not ask for
                rewrite_chunk(call, chunk)
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                        "more_body": True,
                    }
                )
            else:
                if not asm.complete():
                    raise UpstreamError(
                        f"the stream from the upstream of model {model.key!r} ended early",
                        code="upstream_stream_broken",
                    )

    task = asyncio.ensure_future(pump())
    try:
        await asyncio.wait({task, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # the client went away
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            error = UpstreamError("the client disconnected before the stream ended",
                                  code="client_disconnected")  # fmt: skip
        else:
            task.result()
    except UpstreamError as exc:
        error = exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        error = upstream.failure(model, exc)
    except Exception as exc:  # a chunk of an unexpected shape: the upstream's fault
        log.warning("gateway: the stream of model %r broke: %r", model.key, exc)
        error = upstream.malformed(model, f"a stream chunk this gateway cannot read ({exc})")
    finally:
        if not task.done():
            task.cancel()
    ttft = (
        round((asm.first_token - call.started) * 1000, 3) if asm.first_token is not None else None
    )
    finish = asm.finish_reasons()
    if error is None:
        items = [
            _item(
                call,
                i,
                completion,
                usage=_usage(asm.usage) if j == 0 else None,
                latency_ms=call.elapsed_ms(),
                ttft_ms=ttft,
                upstream_model=asm.model,
                finish_reason=finish.get(i),
            )  # fmt: skip
            for j, (i, completion) in enumerate(asm.completions().items())
        ]
        record(store, stats, call, items, limits)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    if error.code != "client_disconnected":
        stats.upstream_errors += 1
    record(store, stats, call,
           failed_item(call, error, asm.completions() or None, ttft_ms=ttft,
                       usage=_usage(asm.usage), upstream_model=asm.model), limits)  # fmt: skip
    if not started:
        raise error
    if error.code != "client_disconnected":  # tell the client, in the stream
        payload = error.body()
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(payload) + b"\n\n",
                    "more_body": True,
                }  # fmt: skip
            )
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b""})
