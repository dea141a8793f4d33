"""Reading request bodies with a size limit, and JSON responses via orjson."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import Request
from starlette.responses import Response

from store.errors import InvalidRequest, PayloadTooLarge
from store.jsonutil import dumps_bytes


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps_bytes(content, default=str)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes before reading them all.
    ``Content-Encoding: gzip`` or ``deflate`` is accepted and the limit applies to the
    inflated size."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {int(declared)} bytes; at most {limit} are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return inflate(b"".join(chunks), request.headers.get("content-encoding", ""), limit)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate or none); the limit applies to the result,
    which is never built past it (a small bomb costs ``limit`` bytes at most)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate.
        wbits = zlib.MAX_WBITS if body[:1] and (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        raise InvalidRequest(
            f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none"
        )
    inflater = zlib.decompressobj(wbits=wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the {encoding} body does not inflate: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the inflated body is over the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise InvalidRequest(f"the {encoding} body is truncated or has several members; send one")
    return out
