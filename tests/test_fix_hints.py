"""Errors that say how to fix the mistake: each mistake a newcomer makes, sent for real,
and the answer names the field and the fix (and, where it is only another name for
the same thing, the request is accepted)."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from istore.cli import main
from service.keys import KeyRing
from store.engine import Store
from tests.conftest import assert_error, in_process, interaction
from tests.test_gateway import MESSAGES, config, upstream  # noqa: F401  (fixtures)

URL = "/api/v1/interactions"


async def test_prompt_instead_of_messages(client: httpx.AsyncClient) -> None:
    body = {"use_case": "support", "prompt": "Hello model!", "completion": "Hi"}
    err = assert_error(await client.post(URL, json=body), 422, "prompt")
    assert "messages: [{" in err["message"] and "completion" in err["message"]
    err = assert_error(await client.post(URL, json=[interaction(0), body]), 422, "body[1].prompt")
    for name, fix in (("output", "completion"), ("response", '{"request": …, "response": …}')):
        bad = {**interaction(0), name: "Hi"}
        assert fix in assert_error(await client.post(URL, json=bad), 422, name)["message"]


def test_prompt_completion_files_get_the_same_hint(tmp_path: Path) -> None:
    src = tmp_path / "legacy.jsonl"  # OpenAI's legacy (non-chat) fine-tuning format
    src.write_text('{"prompt": "2+2=", "completion": "4"}\n')
    r = CliRunner().invoke(main, ["import", "--data", str(tmp_path / "d"), "--use-case", "m",
                                  str(src)])  # fmt: skip
    assert r.exit_code == 1 and "prompt: not a field" in r.stderr and "messages" in r.stderr


async def test_query_instead_of_sql(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/sql", json={"query": "SELECT 1"})
    err = assert_error(r, 422, "body.query")
    assert '{"sql": "SELECT …"}' in err["message"]


async def test_ndjson_sent_as_json(client: httpx.AsyncClient) -> None:
    lines = b"\n".join(orjson.dumps(interaction(i)) for i in range(3))
    r = await client.post(URL, content=lines, headers={"content-type": "application/json"})
    err = assert_error(r, 400, "body")
    assert "Content-Type: application/x-ndjson" in err["message"]
    r = await client.post(URL, content=lines, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201
    r = await client.post(
        URL, content=b'{"use_case": "x",', headers={"content-type": "application/json"}
    )
    assert "x-ndjson" not in assert_error(r, 400, "body")["message"]  # plain bad JSON: no hint


async def test_order_lists_its_values(client: httpx.AsyncClient) -> None:
    err = assert_error(await client.get(URL, params={"order": "newest"}), 422, "order")
    assert err["message"] == "order: Input should be 'asc' or 'desc', got 'newest'"


async def test_plural_paths_point_to_the_right_one(client: httpx.AsyncClient) -> None:
    for wrong, right in (("feedbacks", "feedback"), ("comparisons", "comparison"),
                         ("outcomes", "outcome")):  # fmt: skip
        err = assert_error(await client.post(f"/api/v1/{wrong}", json={}), 404)
        assert err["message"].endswith(f"; did you mean POST /api/v1/{right}?"), err
    err = assert_error(await client.get("/api/v1/comparisons"), 404)
    assert "SELECT * FROM comparisons" in err["message"]
    err = assert_error(await client.get("/api/v1/interactionz"), 404)
    assert err["message"].endswith("did you mean GET /api/v1/interactions?")
    err = assert_error(await client.get("/api/v1/nothing-like-it"), 404)
    assert err["message"] == "no route GET /api/v1/nothing-like-it"


async def test_interaction_id_is_an_alias_of_completion_id(client: httpx.AsyncClient) -> None:
    cid = (await client.post(URL, json=interaction(0))).json()["completion_id"]
    r = await client.post("/api/v1/feedback", json={"interaction_id": cid, "metric": "m",
                                                    "value": 1})  # fmt: skip
    assert r.status_code == 201, r.text
    got = (await client.get(f"{URL}/{cid}")).json()
    assert [f["metric"] for f in got["feedback"]] == ["m"]
    r = await client.post("/api/v1/feedback", json=[{"interaction_id": cid, "metric": "n",
                                                     "value": 2}])  # fmt: skip
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/feedback", json={"interaction_id": cid, "completion_id": "x",
                                                    "metric": "m", "value": 1})  # fmt: skip
    assert_error(r, 422, "interaction_id")
    r = await client.post("/api/v1/feedback", json={"interaction_id": "nope", "metric": "m",
                                                    "value": 1})  # fmt: skip
    assert_error(r, 404, "completion_id")


@pytest.mark.usefixtures("upstream")
async def test_gateway_model_key_without_use_case(store: Store, config: Path) -> None:  # noqa: F811
    async with in_process(store, gateway_config=str(config)) as c:
        chat = "/api/v1/chat/completions"
        r = await c.post(chat, json={"model": "small", "messages": MESSAGES})
        err = assert_error(r, 404, "model")
        assert "'small' is a model key" in err["message"] and "'support/small'" in err["message"]
        r = await c.post(chat, json={"model": "support/tiny", "messages": MESSAGES})
        assert "its model keys: " in assert_error(r, 404, "model")["message"]
        r = await c.post(chat, json={"model": "nowhere", "messages": MESSAGES})
        assert "its use cases: ab, support" in assert_error(r, 404, "model")["message"]
        r = await c.post(chat, json={"model": "support/small", "prompt": "Hello"})
        assert "instead of prompt" in assert_error(r, 422, "messages")["message"]
        r = await c.post(chat, json={"model": "support/small", "messages": MESSAGES})
        assert r.status_code == 200, r.text
        secret = KeyRing(store.root).create(["ingest"], ["support"])[1]
        r = await c.post(chat, json={"model": "small", "messages": MESSAGES},
                         headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
        err = assert_error(r, 403, "model")
        assert "'support/small'" in err["message"]
