"""Answering over raw ASGI, for the paths that skip the web framework: the gateway's
streams and JSON answers, and the API's fast lane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.jsonutil import dumps_bytes


async def send_json(
    send: Any, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON answer through a raw ASGI ``send`` (the fast lane, the gateway)."""
    data = dumps_bytes(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
