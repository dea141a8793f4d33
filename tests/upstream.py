"""A real OpenAI-compatible upstream for the gateway's tests and benchmark: a small
ASGI app on uvicorn, on 127.0.0.1 and a free port, in a thread of the test process.

The upstream model name picks the behaviour:
``plain`` (echoes the last user message), ``tools`` (a tool call, content null),
``slow`` (answers after ``delay_s``), ``fail400`` / ``fail500`` (OpenAI errors),
``badjson`` (200 with a body that is not JSON), ``broken`` (a stream that dies after
two chunks), ``gated`` (a stream that holds after its first chunk until ``release``),
``nostream`` (answers a stream request with one JSON body), ``oddchunk`` (a stream
with a chunk of an impossible shape), ``dupindex`` (``n`` choices, each its own text,
that all claim index 0 but the third, which claims 2**40; one JSON body, streamed or not).
Every request is recorded (body and headers) in ``requests``."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
import uvicorn

ANSWER_PIECES = ["Hello", " from", " the", " upstream", "."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


class Upstream:
    def __init__(self, delay_s: float = 5.0) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.gated_first_sent = threading.Event()
        self.gated_finished = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Upstream:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            interface="asgi3", access_log=False,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.gate.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        self.gate.set()

    # -- the app --------------------------------------------------------------------
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        body = orjson.loads(raw) if raw else {}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "body": body, "headers": headers})
        if scope["path"] != "/v1/chat/completions":
            await self._json(send, 404, {"error": {"message": "no such route"}})
            return
        name = body.get("model", "plain")
        if name == "slow":
            await asyncio.sleep(self.delay_s)
        if name == "fail400":
            err = {"message": "temperature is out of range", "type": "invalid_request_error",
                   "param": "temperature", "code": None}  # fmt: skip
            await self._json(send, 400, {"error": err})
            return
        if name == "fail500":
            await self._json(send, 500, {"error": {"message": "the model crashed"}})
            return
        if name == "badjson":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"{not json"})
            return
        if body.get("stream") and name not in ("nostream", "dupindex"):
            await self._stream(send, body, name)
            return
        await self._json(send, 200, self.completion(body, name))

    @staticmethod
    async def _json(send: Any, status: int, payload: Any) -> None:
        data = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    def completion(body: dict[str, Any], name: str) -> dict[str, Any]:
        n = body.get("n") or 1
        if name == "tools":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather",
                                             "arguments": '{"city": "Paris"}'}}],
            }  # fmt: skip
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": "echo: " + _last_user(body)}
            finish = "stop"
        choices = [
            {"index": i, "message": dict(message), "finish_reason": finish, "logprobs": None}
            for i in range(n)
        ]
        if name == "dupindex":
            for i, c in enumerate(choices):
                c["index"] = 2**40 if i == 2 else 0
                c["message"]["content"] = f"choice {i}"
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }

    async def _stream(self, send: Any, body: dict[str, Any], name: str) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip

        async def event(payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n",
                        "more_body": True})  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        if name == "oddchunk":  # a delta no OpenAI server sends
            await event(chunk({"role": "assistant", "content": "Hi"}))
            await event(chunk({"tool_calls": 5}))
            await event(chunk({}, "stop"))
        elif name == "tools":
            await event(chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}]}))  # fmt: skip
            for part in ['{"city": ', '"Paris"}']:
                await event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
            await event(chunk({}, "tool_calls"))
        else:
            await event(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(ANSWER_PIECES):
                await event(chunk({"content": piece}))
                if name == "gated" and i == 0:
                    self.gated_first_sent.set()
                    for _ in range(2000):
                        if self.gate.is_set():
                            break
                        await asyncio.sleep(0.005)
                if name == "broken" and i == 1:
                    raise RuntimeError("the upstream stand-in breaks its stream")
            await event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": name, "choices": [],
                         "usage": {"prompt_tokens": 11, "completion_tokens": 5,
                                   "total_tokens": 16}})  # fmt: skip
        await event(b"[DONE]")
        if name == "gated":
            self.gated_finished.set()
        await send({"type": "http.response.body", "body": b""})
