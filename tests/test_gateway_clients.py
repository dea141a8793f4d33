"""The gateway with the clients Adaptive's documentation shows, unchanged, against a
live server (uvicorn on loopback) and a real upstream: the ``openai`` Python client
(sync, async, streaming, ``metadata=``), the ``adaptive-sdk``'s ``chat.create`` (with
``labels``, plain and streamed), ``requests`` and ``curl``. Each call must come back
with its answer and appear in ``GET /api/v1/interactions`` with its labels, use case
and model."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
from adaptive_sdk import Adaptive
from openai import AsyncOpenAI, OpenAI

from service.keys import KeyRing
from tests.conftest import Server
from tests.test_gateway import MESSAGES, routing_toml
from tests.upstream import ANSWER_PIECES, Upstream

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

STREAMED = "".join(ANSWER_PIECES)
ECHO = "echo: Hello model!"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("gateway-clients")
    config = root / "gateway.toml"
    config.write_text(routing_toml(upstream.base_url))
    _, key = KeyRing(root / "data").create(["ingest", "read"], name="clients")
    server = Server(root / "data", ISTORE_GATEWAY_CONFIG=str(config),
                    ISTORE_TEST_UPSTREAM_KEY="sk-upstream").start()  # fmt: skip
    try:
        yield server, key
    finally:
        server.stop()


def logged(server: Server, key: str, completion_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/api/v1/interactions/{completion_id}",
                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


def listed(server: Server, key: str, label: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/api/v1/interactions", params={"label": label},
                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    return list(r.json()["data"])


def check(server: Server, key: str, cid: str, label: str, completion: str,
          model: str = "small") -> None:  # fmt: skip
    item = logged(server, key, cid)
    assert item["use_case"] == "support" and item["model"] == model
    assert item["source"] == "gateway" and item["status"] == "ok"
    assert item["completion"] == completion and item["messages"] == MESSAGES
    k, v = label.split(":")
    assert item["labels"] == {k: v, "upstream_model": "plain", "finish_reason": "stop"}
    assert [x["id"] for x in listed(server, key, label)] == [cid]


def test_openai_sync_with_metadata(live: tuple[Server, str]) -> None:
    server, key = live
    client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    response = client.chat.completions.create(
        model="support/small", messages=MESSAGES,  # type: ignore[arg-type]
        metadata={"label_key": "openai-sync"},
    )  # fmt: skip
    assert response.choices[0].message.content == ECHO
    assert response.usage is not None and response.usage.total_tokens == 16
    check(server, key, response.id, "label_key:openai-sync", ECHO)
    stored = client.chat.completions.retrieve(response.id)  # OpenAI stored completions
    assert stored.metadata == {"label_key": "openai-sync", "upstream_model": "plain",
                               "finish_reason": "stop"}  # fmt: skip
    assert stored.choices[0].finish_reason == "stop"
    client.close()


def test_openai_async_and_streaming(live: tuple[Server, str]) -> None:
    server, key = live

    async def run() -> tuple[str, str, str]:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        one = await client.chat.completions.create(
            model="support", messages=MESSAGES, metadata={"label_key": "openai-async"},  # type: ignore[arg-type]
        )  # fmt: skip
        stream = await client.chat.completions.create(
            model="support/small", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            metadata={"label_key": "openai-stream"}, stream_options={"include_usage": True},
        )  # fmt: skip
        text, cid, usage = "", "", None
        async for chunk in stream:
            cid = chunk.id
            usage = chunk.usage or usage
            for c in chunk.choices:
                text += c.delta.content or ""
        await client.close()
        assert usage is not None and usage.total_tokens == 16
        assert one.choices[0].message.content is not None
        return one.id, cid, text

    one, streamed, text = asyncio.run(run())
    check(server, key, one, "label_key:openai-async", ECHO)
    assert text == STREAMED
    check(server, key, streamed, "label_key:openai-stream", STREAMED)
    assert logged(server, key, streamed)["ttft_ms"] is not None


def test_adaptive_sdk_chat_create(live: tuple[Server, str]) -> None:
    server, key = live
    client = Adaptive(base_url=server.url, api_key=key)
    try:
        response = client.chat.create(
            project="support", model="small", messages=MESSAGES,  # type: ignore[arg-type]
            labels={"label_key": "adaptive-sdk"},
        )  # fmt: skip
        assert response.choices[0].message.content == ECHO
        assert response.choices[0].model == "small"
        cid = response.choices[0].completion_id
        check(server, key, cid, "label_key:adaptive-sdk", ECHO)
        assert logged(server, key, cid)["session_id"] == str(response.session_id)

        text, ids = "", set()
        for chunk in client.chat.create(
            project="support", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            labels={"label_key": "adaptive-stream"},
        ):  # fmt: skip
            for c in chunk.choices:
                text += c.delta.content
                ids.add(c.completion_id)
        assert text == STREAMED and len(ids) == 1
        check(server, key, ids.pop(), "label_key:adaptive-stream", STREAMED)
    finally:
        client.close()


def test_requests_as_documented(live: tuple[Server, str]) -> None:
    server, key = live
    headers = {"Authorization": f"Bearer {key}"}
    payload = {
        "model": "support/small",
        "messages": MESSAGES,
        "labels": {"label_key": "requests"},
    }
    response = requests.post(url=f"{server.url}/api/v1/chat/completions", json=payload,
                             headers=headers, timeout=30)  # fmt: skip
    completion_text = response.json()["choices"][0]["message"]["content"]
    assert completion_text == ECHO
    check(server, key, response.json()["id"], "label_key:requests", ECHO)


def test_curl_as_documented(live: tuple[Server, str]) -> None:
    server, key = live
    body = {"model": "support/small", "messages": MESSAGES, "labels": {"label_key": "curl"}}
    out = subprocess.run(
        ["curl", "-s", f"{server.url}/api/v1/chat/completions", "-X", "POST",
         "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {key}",
         "-d", orjson.dumps(body).decode()],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    answer = orjson.loads(out.stdout)
    assert answer["choices"][0]["message"]["content"] == ECHO
    check(server, key, answer["id"], "label_key:curl", ECHO)


def test_unconfigured_server_says_how(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(Exception) as err:
            client.chat.completions.create(model="support", messages=MESSAGES)  # type: ignore[arg-type]
        assert "ISTORE_GATEWAY_CONFIG" in str(err.value)
        assert getattr(err.value, "status_code", None) == 503
        client.close()
    finally:
        server.stop()
