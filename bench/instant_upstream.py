"""An instant OpenAI-compatible upstream for the gateway benchmark: raw ASGI, one fixed
ChatCompletion, no work. Run with ``uvicorn bench.instant_upstream:app``."""

from __future__ import annotations

from typing import Any

import orjson

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-instant",
        "object": "chat.completion",
        "created": 1_790_000_000,
        "model": "instant",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "An instant answer."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
