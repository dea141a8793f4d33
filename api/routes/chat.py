"""The gateway's entry point, ``POST /api/v1/chat/completions`` and
``POST /v1/chat/completions``. ``api.fastlane`` answers both before FastAPI's layers;
the FastAPI route (for ``/docs`` and ``fast_lane = False``) runs the same code.

Checking, routing and authorising happen first and fail as ordinary errors; the call
itself is a ``GatewayAnswer``, an ASGI response that talks to the client with the raw
``send`` (so a stream goes out chunk by chunk) and watches ``receive`` for a client
that leaves mid-stream. The work is in ``gateway.chat``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.auth import Ingest
from api.body import read_body
from api.errors import raw_headers, render
from gateway import chat
from gateway.asgi import send_json
from service.keys import Principal
from store.errors import StoreError

router = APIRouter(tags=["gateway"])


class GatewayAnswer(Response):
    def __init__(self, state: Any, call: chat.Call) -> None:
        super().__init__()
        self.state = state
        self.call = call

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state, call = self.state, self.call
        stats: chat.GatewayStats = state.gateway_stats
        limits = state.settings.limits()
        session = state.upstreams.session()
        try:
            if not call.stream:
                await chat.complete(call, session, state.store, stats, limits, send)
                return
            stats.streamed += 1
            disconnected = asyncio.ensure_future(receive())
            try:
                await chat.stream(call, session, state.store, stats, limits, send, disconnected)
            finally:
                disconnected.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await disconnected
        except StoreError as exc:  # before the answer started
            status, body, headers = render(exc, "POST", "/chat/completions")
            await send_json(send, status, body, raw_headers(headers))


def start_call(state: Any, principal: Principal, body: bytes) -> GatewayAnswer:
    """Check, route and authorise a request (raising the client's error), then the
    answer that makes the call."""
    call = chat.prepare(body, state.gateway, principal.use_cases, state.settings.limits())
    state.gateway_stats.calls += 1
    return GatewayAnswer(state, call)


class ChatRequest(BaseModel):
    """OpenAI's chat completion request plus Adaptive's fields. Every other OpenAI
    parameter (tools, response_format, seed, temperature …) is forwarded as sent."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="'use_case/model_key', or 'use_case' for its default or split")
    messages: list[dict[str, Any]]
    labels: dict[str, str] | None = Field(None, description="Adaptive labels, logged")
    metadata: dict[str, str] | None = Field(None, description="OpenAI metadata, logged as labels")
    session_id: str | None = None
    user: str | None = None
    ab_campaign: str | None = None
    store: bool | None = Field(None, description="false: do not log this call")
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=chat.MAX_N)


_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A ChatCompletion, or server-sent chunks when stream=true",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **{
        s: {"description": d}
        for s, d in [
            (404, "Unknown use case or model"),
            (502, "The upstream failed"),
            (503, "No upstream configured"),
            (504, "The upstream timed out"),
        ]  # fmt: skip
    },
}


async def chat_completions(request: Request, principal: Ingest) -> Response:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    return start_call(state, principal, body)


for _path in ("/api/v1/chat/completions", "/v1/chat/completions"):
    router.add_api_route(
        _path,
        chat_completions,
        methods=["POST"],
        summary="Chat completion through the gateway (logged unless store=false)",
        openapi_extra=_OPENAPI,
        responses=_RESPONSES,
        response_class=Response,
    )
