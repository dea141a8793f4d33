"""Calls to the upstream OpenAI-compatible servers (vLLM, llama.cpp, Ollama, OpenAI …)
over one pooled ``aiohttp`` session, and the server-sent-events reader for streams.

Every way an upstream can fail becomes an ``UpstreamError`` in the contract's error
shape: unreachable or a broken connection → 502, too slow → 504, its own 4xx → the
same status with its message (401/403 → 502: the gateway's upstream key is wrong, not
the caller's), its 5xx → 502, a body that is not the JSON it should be → 502."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import Model
from gateway.errors import UpstreamError

_PASS_THROUGH = frozenset({400, 404, 409, 413, 422, 429})


class Upstreams:
    """One connection pool for every upstream, made on the serving event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def headers(model: Model, stream: bool) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": "interaction-store-gateway",
    }
    key = model.api_key()
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def url(model: Model) -> str:
    return model.base_url + "/chat/completions"


def failure(model: Model, exc: BaseException) -> UpstreamError:
    """A transport-level exception → the error the client gets."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(
            f"the upstream of model {model.key!r} did not answer within {model.timeout_s:g} s",
            status=504,
            code="upstream_timeout",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(
            f"could not connect to the upstream of model {model.key!r}: {exc.os_error}",
            code="upstream_unreachable",
        )
    return UpstreamError(
        f"the connection to the upstream of model {model.key!r} failed: "
        f"{type(exc).__name__}: {exc}",
        code="upstream_connection_error",
    )


def rejected(model: Model, status: int, body: bytes) -> UpstreamError:
    """A non-2xx upstream answer → the error the client gets, with the upstream's own
    message (OpenAI's error shape, or the start of whatever it sent)."""
    message, param, code, type_ = None, None, None, None
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raw = None
    err = raw.get("error") if isinstance(raw, dict) else None
    if isinstance(err, dict):
        message = err.get("message") if isinstance(err.get("message"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
        type_ = err.get("type") if isinstance(err.get("type"), str) else None
    elif isinstance(err, str):
        message = err
    elif isinstance(raw, dict) and isinstance(raw.get("detail"), str):
        message = raw["detail"]
    if message is None:
        message = body[:500].decode("utf-8", "replace").strip() or "(empty body)"
    text = f"the upstream of model {model.key!r} answered {status}: {message}"
    if status in _PASS_THROUGH:
        return UpstreamError(text, status=status, type_=type_, param=param, code=code)
    if status in (401, 403):
        return UpstreamError(
            text + " (check the api_key_env of this model in the routing file)",
            code="upstream_auth_failed",
        )
    return UpstreamError(text, code=code or "upstream_error")


def malformed(model: Model, what: str) -> UpstreamError:
    return UpstreamError(
        f"the upstream of model {model.key!r} answered with {what}", code="upstream_malformed"
    )


def completion_body(model: Model, body: bytes) -> dict[str, Any]:
    """A non-streamed upstream answer, checked to be a ChatCompletion with choices."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed(model, "a body that is not JSON") from None
    if not isinstance(raw, dict):
        raise malformed(model, "JSON that is not a ChatCompletion object")
    choices = raw.get("choices")
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices)
    ):
        raise malformed(model, "a ChatCompletion without choices[].message")
    return raw


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event, as it arrives (comments and other
    fields skipped). Ends when the upstream closes the stream."""
    buf = b""
    async for piece in response.content.iter_any():
        buf += piece
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2 :]
            data = [
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                yield b"\n".join(data)
    if buf.strip().startswith(b"data:"):  # a last event without its blank line
        yield b"\n".join(
            line[5:].removeprefix(b" ") for line in buf.strip().split(b"\n")
            if line.startswith(b"data:")
        )  # fmt: skip
