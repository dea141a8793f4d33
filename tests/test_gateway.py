"""The inference gateway against a real OpenAI-compatible upstream on loopback
(``tests.upstream``): routing, forwarding, the answer's Adaptive fields, logging,
streaming, and every way an upstream fails. The official clients run in
``tests/test_gateway_clients.py``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import ConfigError, parse
from service.keys import KeyRing
from store.engine import Store
from tests.conftest import Server, assert_error, free_port, in_process
from tests.upstream import ANSWER_PIECES, Upstream

MESSAGES = [
    {"role": "system", "content": "You are a good bot."},
    {"role": "user", "content": "Hello model!"},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(delay_s=3.0) as up:
        yield up


@pytest.fixture(autouse=True)
def _fresh(upstream: Upstream) -> None:
    upstream.requests.clear()
    upstream.gate.clear()
    upstream.gated_first_sent.clear()
    upstream.gated_finished.clear()


# Upstream stand-in behaviours reached as "support/<name>" (tests/upstream.py).
BEHAVIOURS = (
    "tools",
    "fail400",
    "fail500",
    "badjson",
    "broken",
    "gated",
    "nostream",
    "oddchunk",
    "dupindex",
)


def routing_toml(base_url: str) -> str:
    behaviours = "".join(f'[models.{b}]\nbase_url = "{base_url}"\n' for b in BEHAVIOURS)
    return f"""
[models.small]
base_url = "{base_url}"
model = "plain"
api_key_env = "ISTORE_TEST_UPSTREAM_KEY"
timeout_s = 10

[models.large]
base_url = "{base_url}"
model = "plain"

[models.slow]
base_url = "{base_url}"
timeout_s = 0.5
{behaviours}
[models.down]
base_url = "http://127.0.0.1:{free_port()}/v1"

[use_cases.support]
default_model = "small"

[use_cases.ab]
default_model = "small"
[use_cases.ab.split]
small = 1
large = 1
"""


@pytest.fixture
def config(tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISTORE_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    path = tmp_path / "gateway.toml"
    path.write_text(routing_toml(upstream.base_url))
    return path


@pytest.fixture
async def gw(store: Store, config: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store, gateway_config=str(config)) as c:
        yield c


async def chat(
    c: httpx.AsyncClient, path: str = "/api/v1/chat/completions", **body: Any
) -> httpx.Response:
    body.setdefault("messages", MESSAGES)
    return await c.post(path, json=body)


# -- routing file ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[models.a]\nmodel = 'x'", "models.a.base_url"),
        ("[models.a]\nbase_url = 'ftp://x'", "models.a.base_url"),
        ("[models.a]\nbase_url = 'http://x'\ntimeout_s = 0", "models.a.timeout_s"),
        ("[models.a]\nbase_url = 'http://x'\nkey = 'sk-...'", "models.a.key"),
        (
            "[models.a]\nbase_url = 'http://x'\n[use_cases.s]\ndefault_model = 'b'",
            "use_cases.s.default_model",
        ),
        ("[models.a]\nbase_url = 'http://x'\n[use_cases.s.split]\nb = 1", "use_cases.s.split.b"),
        ("[models.a]\nbase_url = 'http://x'\n[use_cases.s.split]\na = 0", "use_cases.s.split"),
        (
            "[models.a]\nbase_url = 'http://x'\n[use_cases.'../etc']\ndefault_model = 'a'",
            "use_cases.../etc",
        ),
        ("models = 3", "models"),
        ("[models]", "models"),
        ("[model.a]", "model"),
        ("not toml [", "TOML"),
    ],
)
def test_routing_file_errors_name_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert where in str(err.value)


def test_split_is_sticky_and_weighted() -> None:
    routing = parse(
        "[models.a]\nbase_url = 'http://x'\n[models.b]\nbase_url = 'http://y'\n"
        "[use_cases.s.split]\na = 3\nb = 1\n"
    )
    arms = [routing.route("s", f"session-{i}").arm for i in range(2000)]
    assert 0.70 < arms.count("a") / len(arms) < 0.80  # 3:1
    for i in range(50):  # the same caller always lands on the same arm
        assert {routing.route("s", f"session-{i}").arm for _ in range(5)} == {arms[i]}
    assert routing.route("s/b", "session-0").arm is None  # an explicit model is no arm


async def test_no_routing_file_is_503_saying_how(store: Store) -> None:
    async with in_process(store) as c:
        r = await chat(c, model="support")
    err = assert_error(r, 503)
    assert "ISTORE_GATEWAY_CONFIG" in err["message"] and err["code"] == "gateway_not_configured"


@pytest.mark.parametrize(
    ("model", "status", "fragment"),
    [
        ("nowhere/small", 404, "'nowhere'"),
        ("support/huge", 404, "'huge'"),
        ("", 422, "model"),
        ("../etc/small", 422, "use case"),
    ],
)
async def test_unknown_use_case_or_model(gw: httpx.AsyncClient, model: str, status: int,
                                         fragment: str, upstream: Upstream) -> None:  # fmt: skip
    err = assert_error(await chat(gw, model=model), status, param="model")
    assert fragment in err["message"]
    assert upstream.requests == []


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "support", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "support"}, "messages"),
        ({"model": "support", "messages": MESSAGES, "labels": {"k": 5}}, "labels.k"),
        ({"model": "support", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "support", "messages": MESSAGES, "n": 0}, "n"),
        ({"model": 7, "messages": MESSAGES}, "model"),
    ],
)
async def test_bad_requests_name_the_field_and_call_nobody(
    gw: httpx.AsyncClient, upstream: Upstream, body: dict[str, Any], param: str
) -> None:
    assert_error(await gw.post("/api/v1/chat/completions", json=body), 422, param=param)
    r = await gw.post("/api/v1/chat/completions", content=b"[1, 2",
                      headers={"content-type": "application/json"})  # fmt: skip
    assert_error(r, 400, param="body")
    assert upstream.requests == []


# -- a plain call --------------------------------------------------------------------------
async def test_call_is_forwarded_answered_and_logged(
    gw: httpx.AsyncClient, upstream: Upstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await chat(
        gw, model="support", labels={"project": "RAG Bot"}, metadata={"topic": "Tools"},
        temperature=0.2, seed=7, tools=tools, response_format={"type": "text"},
        user="alice", session_id="s-1", store=True, stream_options={"include_usage": True},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: Hello model!",
                                 "id": choice["completion_id"]}  # fmt: skip
    assert choice["model"] == "small" and body["id"] == choice["completion_id"]
    assert body["session_id"] == "s-1"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}

    sent = upstream.requests[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"
    assert sent["body"] == {
        "messages": MESSAGES, "model": "plain", "temperature": 0.2, "seed": 7, "tools": tools,
        "response_format": {"type": "text"}, "user": "alice",
    }  # fmt: skip

    item = (await gw.get(f"/api/v1/interactions/{body['id']}")).json()
    assert item["use_case"] == "support" and item["model"] == "small"
    assert item["source"] == "gateway" and item["status"] == "ok"
    # What answered: the model key in model, the upstream's own name and finish reason
    # as labels.
    assert item["labels"] == {
        "project": "RAG Bot",
        "topic": "Tools",
        "upstream_model": "plain",
        "finish_reason": "stop",
    }
    assert item["messages"] == MESSAGES and item["completion"] == "echo: Hello model!"
    assert item["user"] == "alice" and item["session_id"] == "s-1"
    assert item["usage"] == body["usage"] and item["latency_ms"] > 0
    assert item["params"] == {"temperature": 0.2, "seed": 7, "tools": tools,
                              "response_format": {"type": "text"}}  # fmt: skip
    listed = (await gw.get("/api/v1/interactions", params={"source": "gateway"})).json()
    assert [x["id"] for x in listed["data"]] == [body["id"]]


async def test_tool_calls_and_n_choices(gw: httpx.AsyncClient) -> None:
    r = await chat(gw, model="support/tools", n=2)
    body = r.json()
    assert r.status_code == 200 and len(body["choices"]) == 2
    ids = [c["completion_id"] for c in body["choices"]]
    assert len(set(ids)) == 2
    for cid in ids:
        item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
        assert item["model"] == "tools"
        assert item["completion"]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert item["completion"]["content"] is None
    assert body["choices"][0]["message"]["content"] is None
    # usage is the call's: it is logged once, on the first choice
    first, second = [(await gw.get(f"/api/v1/interactions/{i}")).json() for i in ids]
    assert first["usage"]["total_tokens"] == 16 and second["usage"] is None


@pytest.mark.parametrize("stream", [False, True])
async def test_repeated_choice_indexes_keep_every_choice(
    gw: httpx.AsyncClient, stream: bool
) -> None:
    """An upstream whose choices all say index 0 (and one says 2**40): every choice is
    answered and logged with its own completion id and text, none merged or dropped."""
    r = await chat(gw, model="support/dupindex", n=4, stream=stream)
    assert r.status_code == 200, r.text
    if stream:
        events = sse(r.text)
        texts: dict[int, str] = {}
        ids: dict[int, str] = {}
        for ev in events[:-1]:
            for c in ev["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + (c["delta"].get("content") or "")
                ids[c["index"]] = c["completion_id"]
        assert sorted(texts.values()) == [f"choice {i}" for i in range(4)]
        pairs = [(ids[i], texts[i]) for i in sorted(ids)]
    else:
        choices = r.json()["choices"]
        assert [c["message"]["content"] for c in choices] == [f"choice {i}" for i in range(4)]
        assert len({c["index"] for c in choices}) == 4
        pairs = [(c["completion_id"], c["message"]["content"]) for c in choices]
    assert len({cid for cid, _ in pairs}) == 4
    for cid, text in pairs:
        item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
        assert item["completion"] == text, item
    listed = (await gw.get("/api/v1/interactions", params={"source": "gateway"})).json()
    assert sorted(x["completion"] for x in listed["data"]) == [f"choice {i}" for i in range(4)]


async def test_store_false_logs_nothing(gw: httpx.AsyncClient) -> None:
    r = await chat(gw, model="support", store=False)
    assert r.status_code == 200
    assert_error(await gw.get(f"/api/v1/interactions/{r.json()['id']}"), 404)
    logged = await chat(gw, model="support")
    assert (await gw.get(f"/api/v1/interactions/{logged.json()['id']}")).status_code == 200
    listed = (await gw.get("/api/v1/interactions")).json()["data"]
    assert [x["id"] for x in listed] == [logged.json()["id"]]


async def test_ab_split_logs_the_arm_sticky_per_session(gw: httpx.AsyncClient) -> None:
    arms = {}
    for i in range(30):
        body = (await chat(gw, model="ab", session_id=f"sess-{i}")).json()
        arms[i] = body["choices"][0]["model"]
        item = (await gw.get(f"/api/v1/interactions/{body['id']}")).json()
        assert item["ab_campaign"] == arms[i] == item["model"]
    assert set(arms.values()) == {"small", "large"}
    for i in range(5):
        again = (await chat(gw, model="ab", session_id=f"sess-{i}")).json()
        assert again["choices"][0]["model"] == arms[i]
    explicit = (await chat(gw, model="ab/large", session_id="sess-0")).json()
    assert (await gw.get(f"/api/v1/interactions/{explicit['id']}")).json()["ab_campaign"] is None


async def test_feedback_right_after_the_call(gw: httpx.AsyncClient) -> None:
    cid = (await chat(gw, model="support")).json()["id"]
    r = await gw.post("/api/v1/feedback", json={"completion_id": cid, "metric": "thumbs_up",
                                                "value": 1})  # fmt: skip
    assert r.status_code == 201, r.text


# -- upstream failures ---------------------------------------------------------------------
@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("model", "status", "code", "fragment"),
    [
        ("fail400", 400, None, "temperature is out of range"),
        ("fail500", 502, "upstream_error", "the model crashed"),
        ("badjson", 502, "upstream_malformed", "not JSON"),
        ("down", 502, "upstream_unreachable", "could not connect"),
        ("slow", 504, "upstream_timeout", "0.5 s"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_upstream_failures_are_clear_errors_and_logged(
    gw: httpx.AsyncClient, model: str, status: int, code: str | None, fragment: str,
    streamed: bool,
) -> None:  # fmt: skip
    r = await chat(gw, model=f"support/{model}", stream=streamed, labels={"case": model})
    err = assert_error(r, status)
    assert fragment in err["message"] and f"'{model}'" in err["message"]
    if code is not None:
        assert err["code"] == code
    if model == "fail400":
        assert err["param"] == "temperature" and err["type"] == "invalid_request_error"
    listed = (await gw.get("/api/v1/interactions", params={"status": "error"})).json()["data"]
    assert len(listed) == 1
    assert listed[0]["labels"] == {"case": model} and listed[0]["model"] == model
    assert fragment in listed[0]["error"] and listed[0]["completion"] is None
    assert (await gw.get("/healthz")).status_code == 200
    ok = await chat(gw, model="support")  # the gateway is still fine
    assert ok.status_code == 200


# -- streaming -----------------------------------------------------------------------------
def sse(text: str) -> list[Any]:
    out = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


@pytest.mark.parametrize("usage", [False, True])
async def test_stream_is_rewritten_and_assembled(gw: httpx.AsyncClient, upstream: Upstream,
                                                 usage: bool) -> None:  # fmt: skip
    r = await chat(gw, model="support", stream=True, labels={"k": "v"},
                   stream_options={"include_usage": usage})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    cid = chunks[0]["id"]
    for ch in chunks:
        assert ch["id"] == cid and ch["session_id"]
        for c in ch["choices"]:
            assert c["completion_id"] == cid and c["model"] == "small"
            assert isinstance(c["delta"]["content"], str) and c["delta"]["role"] == "assistant"
    text = "".join(c["delta"]["content"] for ch in chunks for c in ch["choices"])
    assert text == "".join(ANSWER_PIECES)
    assert [ch.get("usage") for ch in chunks if not ch["choices"]] == (
        [{"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}] if usage else []
    )
    assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
    assert item["completion"] == text and item["status"] == "ok"
    assert item["usage"]["total_tokens"] == 16  # asked of the upstream either way
    assert item["ttft_ms"] is not None and 0 <= item["ttft_ms"] <= item["latency_ms"]
    assert item["labels"] == {"k": "v", "upstream_model": "plain", "finish_reason": "stop"}
    assert item["params"]["stream"] is True


async def test_streamed_tool_calls_are_assembled(gw: httpx.AsyncClient) -> None:
    r = await chat(gw, model="support/tools", stream=True)
    cid = sse(r.text)[0]["id"]
    item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
    assert item["completion"]["tool_calls"] == [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]  # fmt: skip


async def test_upstream_that_does_not_stream_is_streamed_anyway(gw: httpx.AsyncClient) -> None:
    r = await chat(
        gw, model="support/nostream", stream=True, stream_options={"include_usage": True}
    )
    events = sse(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["total_tokens"] == 16
    text = "".join(c["delta"]["content"] for ch in events[:-1] for c in ch["choices"])
    assert text == "echo: Hello model!"
    item = (await gw.get(f"/api/v1/interactions/{events[0]['id']}")).json()
    assert item["completion"] == text and item["status"] == "ok"


async def test_stream_chunk_of_an_impossible_shape_is_a_clean_error(
    gw: httpx.AsyncClient,
) -> None:
    events = sse((await chat(gw, model="support/oddchunk", stream=True)).text)
    assert "[DONE]" not in events and events[-1]["error"]["code"] == "upstream_malformed"
    item = (await gw.get(f"/api/v1/interactions/{events[0]['id']}")).json()
    assert item["status"] == "error" and item["completion"] == "Hi"
    assert (await chat(gw, model="support")).status_code == 200


async def test_broken_stream_ends_with_an_error_event_and_logs_the_part(
    gw: httpx.AsyncClient,
) -> None:
    r = await chat(gw, model="support/broken", stream=True)
    assert r.status_code == 200
    events = sse(r.text)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_connection_error"
    cid = events[0]["id"]
    item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
    assert item["status"] == "error" and item["completion"] == "".join(ANSWER_PIECES[:2])
    assert (await chat(gw, model="support")).status_code == 200


# -- auth -----------------------------------------------------------------------------------
async def test_keys_scope_and_use_case(store: Store, config: Path, upstream: Upstream) -> None:
    ring = KeyRing(store.root)
    _, mine = ring.create(["ingest"], use_cases=["support"], name="support-only")
    _, reader = ring.create(["read"], name="reader")
    async with in_process(store, gateway_config=str(config)) as c:
        assert_error(await chat(c, model="support"), 401)
        hdr = {"Authorization": f"Bearer {reader}"}
        assert_error(await c.post("/v1/chat/completions", json={"model": "support",
                                  "messages": MESSAGES}, headers=hdr), 403)  # fmt: skip
        hdr = {"Authorization": f"Bearer {mine}"}
        other = {"model": "ab", "messages": MESSAGES}
        assert_error(await c.post("/v1/chat/completions", json=other, headers=hdr), 403, "model")
        assert upstream.requests == []
        ok = await c.post("/v1/chat/completions", json={"model": "support",
                          "messages": MESSAGES}, headers=hdr)  # fmt: skip
        assert ok.status_code == 200


# -- reload ---------------------------------------------------------------------------------
@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
async def test_routing_file_reloads_when_it_changes(gw: httpx.AsyncClient, config: Path) -> None:
    assert (await chat(gw, model="support")).json()["choices"][0]["model"] == "small"
    text = config.read_text().replace('[use_cases.support]\ndefault_model = "small"',
                                      '[use_cases.support]\ndefault_model = "large"')  # fmt: skip
    config.write_text(text + "\n")
    deadline = time.monotonic() + 5
    while (await chat(gw, model="support")).json()["choices"][0]["model"] != "large":
        assert time.monotonic() < deadline, "the change was not picked up"
        await asyncio.sleep(0.2)
    config.write_text("this is not toml [")  # a broken file keeps the last good routing
    await asyncio.sleep(1.2)
    assert (await chat(gw, model="support")).json()["choices"][0]["model"] == "large"
    ready = (await gw.get("/readyz")).json()["gateway"]
    assert "TOML" in ready["error"]


async def test_readyz_shows_a_broken_routing_file_without_a_call(
    gw: httpx.AsyncClient, config: Path, upstream: Upstream
) -> None:
    ready = (await gw.get("/readyz")).json()["gateway"]
    assert ready["error"] is None and ready["models"] > 1
    good = config.read_text()
    config.write_text("[models.a]\nbase_url = 'ftp://x'\n")
    ready = (await gw.get("/readyz")).json()["gateway"]  # no chat call in between
    assert "models.a.base_url" in ready["error"]
    config.write_text(good + "\n")
    assert (await gw.get("/readyz")).json()["gateway"]["error"] is None
    assert upstream.requests == []


# -- what answered ---------------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True])
async def test_what_answered_is_logged_per_choice(gw: httpx.AsyncClient, streamed: bool) -> None:
    r = await chat(gw, model="support/tools", stream=streamed,
                   labels={"finish_reason": "forged", "k": "v"})  # fmt: skip
    assert r.status_code == 200, r.text
    cid = sse(r.text)[0]["id"] if streamed else r.json()["id"]
    item = (await gw.get(f"/api/v1/interactions/{cid}")).json()
    assert item["model"] == "tools"  # the routing file's model key, as asked
    assert item["labels"] == {"k": "v", "upstream_model": "tools", "finish_reason": "tool_calls"}
    stored = (await gw.get(f"/v1/chat/completions/{cid}")).json()
    assert stored["choices"][0]["finish_reason"] == "tool_calls"
    plain = (await chat(gw, model="support")).json()  # model key "small", upstream "plain"
    item = (await gw.get(f"/api/v1/interactions/{plain['id']}")).json()
    assert item["model"] == "small" and item["labels"]["upstream_model"] == "plain"
    listed = await gw.get("/api/v1/interactions", params={"label": "upstream_model:plain"})
    assert [x["id"] for x in listed.json()["data"]] == [plain["id"]]


async def test_a_call_keeps_room_for_the_gateway_labels(
    gw: httpx.AsyncClient, upstream: Upstream
) -> None:
    labels = {f"k{i}": "v" for i in range(63)}
    err = assert_error(await chat(gw, model="support", labels=labels), 422, "labels")
    assert "at most 62" in err["message"] and "upstream_model" in err["message"]
    assert upstream.requests == []
    labels.pop("k0")
    assert (await chat(gw, model="support", labels=labels)).status_code == 200


# -- real server: incremental streams, disconnects, SIGHUP ---------------------------------
@pytest.fixture
def live(server_factory: type[Server], tmp_path: Path, config: Path) -> Server:
    return server_factory(tmp_path / "data", ISTORE_GATEWAY_CONFIG=str(config)).start()


@pytest.mark.slow  # a live server or a crash: `make test` only
def test_stream_reaches_the_client_before_the_upstream_finishes(
    live: Server, upstream: Upstream
) -> None:
    body = {"model": "support/gated", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", live.url + "/api/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        # The upstream is holding the rest of its answer until released.
        assert upstream.gated_first_sent.is_set() and not upstream.gated_finished.is_set()
        assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] in ("", "Hello")
        upstream.release()
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    cid = orjson.loads(first[6:])["id"]
    item = httpx.get(f"{live.url}/api/v1/interactions/{cid}").json()
    assert item["completion"] == "".join(ANSWER_PIECES) and item["status"] == "ok"


@pytest.mark.slow  # a live server or a crash: `make test` only
def test_client_disconnect_mid_stream_logs_the_partial_answer(
    live: Server, upstream: Upstream
) -> None:
    body = {"model": "support/gated", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", live.url + "/api/v1/chat/completions", json=body, timeout=30) as r:
        first = next(line for line in r.iter_lines() if '"Hello"' in line)
    cid = orjson.loads(first[6:])["id"]  # the client has gone; the upstream still holds
    deadline = time.monotonic() + 10
    while (got := httpx.get(f"{live.url}/api/v1/interactions/{cid}")).status_code == 404:
        assert time.monotonic() < deadline, "the partial interaction was not logged"
        time.sleep(0.1)
    item = got.json()
    assert item["status"] == "error" and "disconnected" in item["error"]
    assert item["completion"] == "Hello"
    upstream.release()
    assert httpx.get(live.url + "/healthz").status_code == 200


@pytest.mark.slow  # a live server or a crash: `make test` only
def test_sighup_reloads_the_routing_file(live: Server, config: Path) -> None:
    def model_of() -> str:
        r = httpx.post(live.url + "/v1/chat/completions",
                       json={"model": "support", "messages": MESSAGES})  # fmt: skip
        return str(r.json()["choices"][0]["model"])

    assert model_of() == "small"
    text = config.read_text().replace('default_model = "small"\n\n[use_cases.ab]',
                                      'default_model = "large"\n\n[use_cases.ab]')  # fmt: skip
    stat = config.stat()
    config.write_text(text)
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same stamp: only SIGHUP tells
    assert live.proc is not None
    live.proc.send_signal(__import__("signal").SIGHUP)
    deadline = time.monotonic() + 5
    while model_of() != "large":
        assert time.monotonic() < deadline
        time.sleep(0.1)


async def test_fastapi_route_answers_like_the_fast_lane(store: Store, config: Path) -> None:
    from api.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data=str(store.root), gateway_config=str(config)), store=store)
    app.fast_lane = False  # through FastAPI's routing and middleware
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            plain = await chat(c, model="support", labels={"via": "route"})
            assert plain.status_code == 200
            assert plain.json()["choices"][0]["message"]["content"] == "echo: Hello model!"
            streamed = sse((await chat(c, "/v1/chat/completions", model="support",
                                       stream=True)).text)  # fmt: skip
            assert streamed[-1] == "[DONE]"
            assert_error(await chat(c, model="support/fail500"), 502)
            assert_error(await chat(c, model="nowhere"), 404, param="model")
            item = (await c.get(f"/api/v1/interactions/{plain.json()['id']}")).json()
            assert item["labels"] == {
                "via": "route",
                "upstream_model": "plain",
                "finish_reason": "stop",
            }
            assert item["source"] == "gateway"


def test_documented_routing_files_parse() -> None:
    from gateway.config import load

    root = Path(__file__).resolve().parent.parent
    example = load(root / "gateway.example.toml")
    assert example.route("support", "s-1").arm in ("small", "large")
    assert example.route("anything-else").model.key == "small"  # the "*" use case
    doc = (root / "docs" / "gateway.md").read_text()
    blocks = [b.split("```")[0] for b in doc.split("```toml\n")[1:]]
    assert blocks, "docs/gateway.md shows no routing file"
    for text in blocks:
        routing = parse(text)
        assert routing.route("support/small").model.model == "llama-3.1-8b-instruct"
        assert routing.route("support", "s-1").arm in ("small", "large")
