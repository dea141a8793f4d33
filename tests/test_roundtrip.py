"""What a client sends comes back identical: messages, completion and labels, through
every read path (list, get, SQL), from the in-memory tail and from Parquet in Delta."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.parse import split_last_answer
from store.engine import Store

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

URL = "/api/v1/interactions"


# -- strategies ------------------------------------------------------------------------------
# Any Unicode scalar value (NUL, controls, astral planes); lone surrogates cannot be UTF-8.
chars = st.characters(exclude_categories=("Cs",))
text = st.one_of(
    st.text(chars, max_size=20),
    st.sampled_from(["", "\x00", "😀", "👩‍👩‍👧", "𝕏𝔂", "e\u0301", "\u202e", "\ufeff", "a\r\nb"]),
)
# 64-bit integers (orjson's range: see test_big_integers_round_trip for beyond).
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def extras(reserved: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Arbitrary extra keys (kept as sent) that do not shadow a declared field."""
    return st.dictionaries(text.filter(lambda k: k not in reserved), json_values, max_size=3)


MESSAGE_FIELDS = {"role", "content", "name", "tool_calls", "tool_call_id"}

part = st.builds(
    lambda kind, body, more: {"type": kind, **body, **more},
    st.sampled_from(["text", "image_url", "input_audio", "x-custom"]),
    st.one_of(
        st.fixed_dictionaries({"text": text}),
        st.fixed_dictionaries({"image_url": st.fixed_dictionaries({"url": text})}),
        st.just({}),
    ),
    extras({"type", "text", "image_url"}),
)
content = st.one_of(text, st.lists(part, max_size=3))

tool_call = st.builds(
    lambda id_, name, args, raw: {
        "id": id_,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args) if raw else args},
    },
    text,
    text,
    json_values,
    st.booleans(),  # arguments as a JSON string (OpenAI) or, leniently, a JSON value
)


def _msg(base: dict[str, Any], optional: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    return {**more, **base, **optional}


plain_message = st.builds(
    _msg,
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user"]), "content": content}
    ),
    st.fixed_dictionaries({}, optional={"name": text}),
    extras(MESSAGE_FIELDS),
)
assistant_message = st.builds(
    _msg,
    st.fixed_dictionaries({"role": st.just("assistant")}),
    st.fixed_dictionaries(
        {},
        optional={
            "content": st.none() | content,
            "tool_calls": st.lists(tool_call, min_size=1, max_size=3),
            "name": text,
        },
    ),
    extras(MESSAGE_FIELDS),
)
tool_message = st.builds(
    _msg,
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": text, "content": content}),
    st.just({}),
    extras(MESSAGE_FIELDS),
)
messages = st.lists(
    st.one_of(plain_message, assistant_message, tool_message), min_size=1, max_size=5
)

completion_object = st.builds(
    _msg,
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.just("assistant"),
            "content": st.none() | content,
            "tool_calls": st.lists(tool_call, max_size=2),
            "refusal": st.none() | text,
        },
    ),
    extras({"role", "content", "tool_calls", "refusal"}),
)
completion = st.one_of(st.none(), text, completion_object)

label_key = st.text(chars, min_size=1, max_size=64)
label_value = st.one_of(
    st.text(chars, max_size=40),
    st.text(chars, min_size=1000, max_size=1024),
    st.just("😀" * 1024),  # 1024 characters, 4096 bytes
)
labels = st.one_of(
    st.none(),
    st.dictionaries(label_key, label_value, max_size=8),
    st.dictionaries(label_key, st.text(chars, max_size=3), min_size=60, max_size=64),
)


# -- comparison ------------------------------------------------------------------------------
def canon(value: Any) -> str:
    """JSON text that tells 1 from 1.0 from true, ignoring only object key order."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def same(a: Any, b: Any) -> bool:
    return canon(a) == canon(b)


async def _sql_row(client: httpx.AsyncClient, id_: str) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/sql",
        json={
            "sql": "SELECT messages, completion, completion_message, labels "
            f"FROM interactions WHERE id = '{id_}'"
        },
    )
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert len(rows) == 1, rows
    return rows[0]


async def check_everywhere(
    client: httpx.AsyncClient, id_: str, session: str, sent: dict[str, Any]
) -> None:
    want_labels = sent.get("labels", sent.get("metadata"))
    want_completion = sent.get("completion")

    got = (await client.get(f"{URL}/{id_}")).json()
    page = (await client.get(URL, params={"session_id": session})).json()
    assert [x["id"] for x in page["data"]] == [id_]
    for item in (got, page["data"][0]):
        assert same(item["messages"], sent["messages"]), (item["messages"], sent["messages"])
        assert same(item["completion"], want_completion), (item["completion"], want_completion)
        assert same(item["labels"], want_labels), (item["labels"], want_labels)

    # SQL shows the stored columns: JSON text, and the label map as an object.
    row = await _sql_row(client, id_)
    assert same(json.loads(row["messages"]), sent["messages"])
    if isinstance(want_completion, dict):
        assert same(json.loads(row["completion_message"]), want_completion)
        text_content = want_completion.get("content")
        if isinstance(text_content, list):
            text_content = "".join(p.get("text", "") for p in text_content)
        assert row["completion"] == text_content
    else:
        assert row["completion_message"] is None
        assert row["completion"] == want_completion
    if want_labels is None:
        assert row["labels"] is None
    else:
        assert same(row["labels"], want_labels)


def _encode(body: dict[str, Any], ascii_only: bool) -> bytes:
    # Both encodings are valid JSON: raw UTF-8, or \u escapes (surrogate pairs for astral).
    return json.dumps(body, ensure_ascii=ascii_only).encode()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    messages=messages,
    completion=completion,
    labels=labels,
    as_metadata=st.booleans(),
    ascii_only=st.booleans(),
)
async def test_round_trip(
    slow_client: httpx.AsyncClient,
    slow_store: Store,
    messages: list[dict[str, Any]],
    completion: Any,
    labels: dict[str, str] | None,
    as_metadata: bool,
    ascii_only: bool,
) -> None:
    id_ = f"rt-{uuid.uuid4().hex}"
    session = f"s-{uuid.uuid4().hex}"
    body: dict[str, Any] = {"id": id_, "use_case": "rt", "session_id": session,
                            "messages": messages}  # fmt: skip
    if completion is not None:
        body["completion"] = completion
    if labels is not None:
        body["metadata" if as_metadata else "labels"] = labels

    r = await slow_client.post(URL, content=_encode(body, ascii_only),
                             headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["completion_id"] == id_

    # Messages ending with the assistant's answer and no completion are split into the
    # two (ingest.parse.split_last_answer); everything else comes back as sent.
    stored = split_last_answer(body)
    assert slow_store.status()["pending_rows"] >= 1  # read back from the in-memory tail
    await check_everywhere(slow_client, id_, session, stored)

    slow_store.flush()
    assert slow_store.status()["pending_rows"] == 0  # now read back from Parquet in Delta
    await check_everywhere(slow_client, id_, session, stored)


async def test_round_trip_ndjson_and_array(
    slow_client: httpx.AsyncClient, slow_store: Store
) -> None:
    """The batch paths keep the same values as the single-object path."""
    msgs = [
        {"role": "system", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "héllo 😀 \x00"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}],
         "x-extra": {"nested": [1, 2.5, True, None, "𝕏"]}},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": '{"a": {"b": [1, "\\u0000"]}}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"},
    ]  # fmt: skip
    comp = {"role": "assistant", "content": "done", "refusal": None}
    bodies = [
        {"id": f"b-{i}", "use_case": "rt", "session_id": f"bs-{i}", "messages": msgs,
         "completion": comp if i % 2 else "plain", "labels": {"k": "v", "ключ": "😀"}}
        for i in range(4)
    ]  # fmt: skip
    nd = "\n".join(json.dumps(b, ensure_ascii=False) for b in bodies[:2]).encode()
    r = await slow_client.post(URL, content=nd, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201, r.text
    r = await slow_client.post(URL, json=bodies[2:])
    assert r.status_code == 201, r.text
    for flushed in (False, True):
        if flushed:
            slow_store.flush()
        for b in bodies:
            await check_everywhere(slow_client, b["id"], b["session_id"], b)


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 10**30])
async def test_big_integers_round_trip(
    slow_client: httpx.AsyncClient, slow_store: Store, big: int
) -> None:
    msgs = [{"role": "user", "content": "x", "n": big}]
    body = {"id": f"big-{uuid.uuid4().hex}", "use_case": "rt", "messages": msgs}
    r = await slow_client.post(URL, json=body)
    # Either refuse it (4xx, nothing stored) or keep it exactly; never store something else.
    if r.status_code == 201:
        got = (await slow_client.get(f"{URL}/{body['id']}")).json()
        assert same(got["messages"], msgs)
    else:
        assert r.status_code == 422, r.text


@pytest.mark.parametrize("value", [5, None, {"a": 1}])
async def test_completion_part_with_non_string_text(
    slow_client: httpx.AsyncClient, value: Any
) -> None:
    comp = {"role": "assistant", "content": [{"type": "text", "text": value}]}
    body = {"id": f"np-{uuid.uuid4().hex}", "use_case": "rt",
            "messages": [{"role": "user", "content": "x"}], "completion": comp}  # fmt: skip
    r = await slow_client.post(URL, json=body)
    # Either refuse it naming the field, or keep it exactly.
    if r.status_code == 201:
        got = (await slow_client.get(f"{URL}/{body['id']}")).json()
        assert same(got["completion"], comp)
    else:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"].startswith("completion")
