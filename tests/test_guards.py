"""Data-quality guards for datasets: a comparison is between two answers to one prompt
(refused otherwise, and left out of preference exports when an older one is not), and
an interaction in OpenAI's fine-tuning shape (messages ending with the assistant's
answer, no completion) is split into prompt and completion, as `istore import` does."""

from __future__ import annotations

import httpx
import orjson

from ingest.feedback import ComparisonIn, comparison_rows
from store.engine import Store
from store.schema import COMPARISONS_TABLE
from tests.conftest import assert_error, interaction

URL = "/api/v1/interactions"
HI = [{"role": "user", "content": "Hi"}]
BYE = [{"role": "user", "content": "Bye"}]


async def _log(c: httpx.AsyncClient, messages: list[dict[str, str]], answer: str) -> str:
    r = await c.post(URL, json=interaction(0, messages=messages, completion=answer))
    assert r.status_code == 201, r.text
    return str(r.json()["completion_id"])


async def test_a_comparison_of_answers_to_different_prompts_is_refused(
    client: httpx.AsyncClient,
) -> None:
    a, b, c = (
        await _log(client, HI, "Hello!"),
        await _log(client, HI, "hi"),
        await _log(client, BYE, "Bye!"),
    )
    url = "/api/v1/comparison"
    ok = await client.post(url, json={"metric": "m", "preferred_completion": a,
                                      "other_completion": b})  # fmt: skip
    assert ok.status_code == 201, ok.text
    r = await client.post(url, json={"metric": "m", "preferred_completion": a,
                                     "other_completion": c})  # fmt: skip
    err = assert_error(r, 422, "other_completion")
    assert "another prompt" in err["message"]
    r = await client.post(url, json={"metric": "m", "preferred_completion": c, "messages": HI,
                                     "other_completion": {"text": "hey"}})  # fmt: skip
    assert_error(r, 422, "preferred_completion")
    # The same messages with their keys in another order are the same prompt.
    d = await _log(client, [{"content": "Hi", "role": "user"}], "Hey")
    r = await client.post(url, json={"metric": "m", "preferred_completion": a,
                                     "other_completion": d})  # fmt: skip
    assert r.status_code == 201, r.text


async def test_an_older_mixed_comparison_is_left_out_of_exports_and_said_so(
    client: httpx.AsyncClient, store: Store
) -> None:
    a, b, c = (
        await _log(client, HI, "Hello!"),
        await _log(client, HI, "hi"),
        await _log(client, BYE, "Bye!"),
    )
    r = await client.post("/api/v1/comparison", json={"metric": "m", "preferred_completion": a,
                                                      "other_completion": b})  # fmt: skip
    assert r.status_code == 201
    # As stored before the check existed: straight into the table.
    old = ComparisonIn.model_validate({"metric": "m", "preferred_completion": a,
                                       "other_completion": c})  # fmt: skip
    store.write(COMPARISONS_TABLE, comparison_rows(old, "support")[0]).result(10)
    r = await client.get("/api/v1/export", params={"format": "dpo"})
    assert r.status_code == 200
    pairs = [orjson.loads(x) for x in r.text.splitlines()]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("Hello!", "hi")
    ]
    assert r.headers["x-istore-warning"] == (
        "1 comparison left out: the two sides answer different prompts"
    )


async def test_fine_tuning_shaped_interactions_are_split(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Is the DR-18V in stock?"},
                {"role": "assistant", "content": "Yes, 3 left."}]  # fmt: skip
    body = {"use_case": "support", "messages": messages}
    cid = (await client.post(URL, json=body)).json()["completion_id"]
    got = (await client.get(f"{URL}/{cid}")).json()
    assert got["messages"] == messages[:1] and got["completion"] == "Yes, 3 left."
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "stock", "arguments": "{}"}}]}  # fmt: skip
    r = await client.post(URL, json=[{**body, "messages": [messages[0], call]}])
    got = (await client.get(f"{URL}/{r.json()['completion_ids'][0]}")).json()
    assert got["messages"] == messages[:1] and got["completion"] == call
    export = await client.get("/api/v1/export", params={"use_case": "support"})
    assert orjson.loads(export.text.splitlines()[0]) == {"messages": messages}

    # Not split: a failed call, a lone assistant message, a completion given.
    kept = [
        {**body, "status": "error", "error": "timeout"},
        {**body, "messages": messages[1:]},
        {**body, "completion": "Yes."},
    ]
    for item in kept:
        cid = (await client.post(URL, json=item)).json()["completion_id"]
        got = (await client.get(f"{URL}/{cid}")).json()
        assert got["messages"] == item["messages"], item
