"""The gateway's entry point, ``POST /api/v1/chat/completions`` and
``POST /v1/chat/completions``, reached through ``api.fastlane`` (plain ASGI, so a
stream goes out chunk by chunk). The work is in ``gateway.chat``; ``CHAT_OPENAPI``
documents the route in ``/docs``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.keys import Principal
from gateway import chat


async def chat_completion(
    state: Any, principal: Principal, body: bytes, receive: Any, send: Any
) -> None:
    limits = state.settings.limits()
    call = chat.prepare(body, state.gateway, principal, limits)
    stats: chat.GatewayStats = state.gateway_stats
    stats.calls += 1
    session = state.upstreams.session()
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


def openapi_paths(components: dict[str, Any]) -> dict[str, Any]:
    """The two chat paths for the OpenAPI document."""
    model = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(model.pop("$defs", {}))
    components["ChatRequest"] = model
    error = {"application/json": {"schema": {"type": "object"}}}
    op = {
        "post": {
            "tags": ["gateway"],
            "summary": "Chat completion through the gateway (logged unless store=false)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}
                },
            },
            "responses": {
                "200": {
                    "description": "A ChatCompletion, or server-sent chunks when stream=true",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **{
                    str(s): {"description": d, "content": error}
                    for s, d in [
                        (400, "Bad request"),
                        (401, "No or wrong API key"),
                        (403, "Scope or use case not allowed"),
                        (404, "Unknown use case or model"),
                        (413, "Body too large"),
                        (422, "Invalid field"),
                        (502, "Upstream failed"),
                        (503, "No upstream configured"),
                        (504, "Upstream timed out"),
                    ]  # fmt: skip
                },
            },
        }
    }
    return {"/api/v1/chat/completions": op, "/v1/chat/completions": op}
