"""The hot paths, ``POST /api/v1/interactions`` and the gateway's
``POST /api/v1/chat/completions`` (and ``/v1/…``), answered as plain ASGI.

FastAPI's routing, dependency and middleware layers cost about as much per request
as validating and logging a small interaction. ``FastLaneApp`` answers those routes
before them, with the same core (``ingest_body``), the same limits and the same error
shape; everything else goes to the FastAPI app. The FastAPI route stays for the
OpenAPI document and behaves identically (tests run both)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from api.body import inflate
from api.errors import error_body, raw_headers, render
from api.guard import Gate, is_api, principal_of, read_limited
from api.logs import new_request_id, request_id
from api.routes.chat import start_call
from api.routes.interactions import ingest_body
from gateway.asgi import send_json
from store.errors import StoreError

log = logging.getLogger("istore.api")
access = logging.getLogger("istore.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INGEST_PATH = "/api/v1/interactions"
CHAT_PATHS = frozenset({"/api/v1/chat/completions", "/v1/chat/completions"})


class FastLaneApp(FastAPI):
    """The FastAPI app, answering the hot paths itself before Starlette's and FastAPI's
    middleware layers (body limits, telemetry, error pages; each wraps ``send``).
    ``fast_lane = False`` sends them through FastAPI like any route (tests compare)."""

    fast_lane = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                given = v.decode("latin-1")
        rid = new_request_id(given)
        token = request_id.set(rid)
        status = 500
        header = (b"x-request-id", rid.encode())

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        route = scope["path"]
        try:
            path = scope["path"]
            try:
                receive = await self._admit(scope, receive)
            except StoreError as exc:
                status_, body, headers = render(exc, scope["method"], path)
                await send_json(tagged, status_, body, raw_headers(headers))
                return
            if self.fast_lane and scope["method"] == "POST" and path == INGEST_PATH:
                await _answer(self.state, scope, receive, tagged, _ingest)
            elif self.fast_lane and scope["method"] == "POST" and path in CHAT_PATHS:
                await _answer(self.state, scope, receive, tagged, _chat)
            else:
                await super().__call__(scope, receive, tagged)
                route = _template(scope)
        finally:
            elapsed = time.perf_counter() - started
            self.state.request_metrics.observe(route, scope["method"], status, elapsed)
            if self.state.settings.access_log:
                access.info(
                    "%s %s %d", scope["method"], scope["path"], status,
                    extra={"fields": {"method": scope["method"], "route": route,
                                      "path": scope["path"], "status": status,
                                      "ms": round(elapsed * 1000, 3)}},
                )  # fmt: skip
            request_id.reset(token)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """``api.guard``: open-mode origin checks, then (API routes) the caller and the
        body. Returns the ``receive`` the route reads the body from."""
        gate: Gate = self.state.gate
        if not gate.keys.active():
            gate.check_origin(scope)
        if not is_api(scope["path"]):
            return receive
        principal, receive = await gate.admit(scope, receive)
        scope.setdefault("state", {})["principal"] = principal
        return receive


def _template(scope: Scope) -> str:
    """The matched route's path template with its router prefix (``/api/v1/…/{id}``):
    FastAPI keeps included routes' templates without the prefix."""
    template = getattr(scope.get("route"), "path_format", None)
    if template is None:
        return "(unmatched)"
    concrete = template
    for name, value in (scope.get("path_params") or {}).items():
        concrete = concrete.replace("{" + name + "}", str(value))
    path = scope["path"]
    return path[: len(path) - len(concrete)] + template if path.endswith(concrete) else template


async def _ingest(
    state: Any, scope: Scope, headers: dict[str, str], receive: Receive, send: Send
) -> tuple[int, Any]:
    principal = _principal(scope, "ingest")
    body = await _read(scope, receive, headers, state.settings.max_body_bytes)
    ctype = headers.get("content-type", "application/json")
    payload = await ingest_body(state.store, body, ctype, principal, state.settings.limits())
    return 201, payload


async def _chat(
    state: Any, scope: Scope, headers: dict[str, str], receive: Receive, send: Send
) -> tuple[int, Any]:
    principal = _principal(scope, "ingest")
    body = await _read(scope, receive, headers, state.settings.max_body_bytes)
    answer = start_call(state, principal, body)
    await answer(None, receive, send)
    return 0, None  # answered


async def _answer(
    state: Any,
    scope: Scope,
    receive: Receive,
    send: Send,
    handler: Callable[..., Awaitable[tuple[int, Any]]],
) -> None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    extra: list[tuple[bytes, bytes]] = []
    try:
        status, payload = await handler(state, scope, headers, receive, send)
        if status == 0:
            return
    except StoreError as exc:
        status, payload, more = render(exc, scope["method"], scope["path"])
        extra = raw_headers(more)
    except Exception:
        log.exception("POST %s: unexpected error", scope["path"])
        status = 500
        payload = error_body(500, "internal error; see the server log", None, None,
                             "internal_error")  # fmt: skip
    await send_json(send, status, payload, extra)


def _principal(scope: Scope, needs: str) -> Any:
    """The caller the gate authenticated, checked for the scope ``needs``."""
    principal = principal_of(scope)
    assert principal is not None, "the gate authenticates every API request"
    principal.require(needs)
    return principal


async def _read(scope: Scope, receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    return inflate(await read_limited(scope, receive, limit), headers.get("content-encoding", ""),
                   limit)  # fmt: skip
