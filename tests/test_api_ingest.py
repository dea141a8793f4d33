"""POST /api/v1/interactions: shapes of the body and the ack, aliases, idempotency, and
bad input (every error in the one error shape, naming the field, storing nothing)."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, interaction

URL = "/api/v1/interactions"
NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}


# -- helpers -------------------------------------------------------------------------------


async def sql(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    r = await client.post("/api/v1/sql", json={"sql": query})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def counts(client: httpx.AsyncClient) -> tuple[int, int]:
    """(interactions, feedback) rows visible right now."""
    rows = await sql(
        client,
        "SELECT (SELECT count(*) FROM interactions) AS i, (SELECT count(*) FROM feedback) AS f",
    )
    return rows[0]["i"], rows[0]["f"]


async def count_id(client: httpx.AsyncClient, id_: str) -> int:
    rows = await sql(client, f"SELECT count(*) AS n FROM interactions WHERE id = '{id_}'")
    return int(rows[0]["n"])


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def is_uuid7(value: str) -> bool:
    u = uuid.UUID(value)
    return u.version == 7 and u.variant == uuid.RFC_4122


# -- accepted shapes -------------------------------------------------------------------------
async def test_single_object_ack_and_stored(client: httpx.AsyncClient) -> None:
    body = interaction(7, user="u1", latency_ms=12.5, usage={"prompt_tokens": 3})
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    ack = r.json()
    assert set(ack) == {"completion_id", "session_id", "feedback_ids"}
    assert ack["feedback_ids"] == []
    assert is_uuid7(ack["completion_id"])
    assert isinstance(ack["session_id"], str) and ack["session_id"]

    got = (await client.get(f"{URL}/{ack['completion_id']}")).json()
    assert got["id"] == ack["completion_id"]
    assert got["session_id"] == ack["session_id"]
    assert got["use_case"] == "support"
    assert got["model"] == "small"
    assert got["messages"] == body["messages"]
    assert got["completion"] == "answer 7"
    assert got["labels"] == body["labels"]
    assert got["user"] == "u1"
    assert got["latency_ms"] == 12.5
    assert got["usage"]["prompt_tokens"] == 3
    assert got["source"] == "api"
    assert got["status"] == "ok"
    assert got["feedback"] == []


async def test_single_object_keeps_client_session_id(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json=interaction(1, session_id="sess-42"))
    assert r.status_code == 201
    assert r.json()["session_id"] == "sess-42"
    got = (await client.get(f"{URL}/{r.json()['completion_id']}")).json()
    assert got["session_id"] == "sess-42"


async def test_array_ack(client: httpx.AsyncClient) -> None:
    ids = [uid("arr") for _ in range(3)]
    body = [interaction(i, id=ids[i]) for i in range(3)] + [interaction(3)]
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    ack = r.json()
    assert set(ack) == {"accepted", "new", "repeats", "completion_ids"}
    assert (ack["accepted"], ack["new"], ack["repeats"]) == (4, 4, 0)
    assert ack["completion_ids"][:3] == ids  # in the order sent
    assert is_uuid7(ack["completion_ids"][3])
    for i, cid in enumerate(ack["completion_ids"]):
        got = await client.get(f"{URL}/{cid}")
        assert got.status_code == 200
        assert got.json()["completion"] == f"answer {i}"
    assert await counts(client) == (4, 0)


@pytest.mark.parametrize(
    "ctype", ["application/x-ndjson", "application/x-ndjson; charset=utf-8", "application/jsonl"]
)
async def test_ndjson_ack(client: httpx.AsyncClient, ctype: str) -> None:
    ids = [uid("nd") for _ in range(3)]
    lines = [json.dumps(interaction(i, id=ids[i])) for i in range(3)]
    # LF, CRLF and a trailing newline are all line ends.
    content = (lines[0] + "\n" + lines[1] + "\r\n" + lines[2] + "\n").encode()
    r = await client.post(URL, content=content, headers={"content-type": ctype})
    assert r.status_code == 201, r.text
    assert r.json() == {"accepted": 3, "new": 3, "repeats": 0, "completion_ids": ids}
    for i, id_ in enumerate(ids):
        got = (await client.get(f"{URL}/{id_}")).json()
        assert got["messages"][1]["content"] == f"question {i}"


async def test_ndjson_single_line_is_a_batch(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=json.dumps(interaction(0)).encode(), headers=NDJSON)
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"accepted", "new", "repeats", "completion_ids"}
    assert r.json()["accepted"] == 1


async def test_gzip_body(client: httpx.AsyncClient) -> None:
    id_ = uid("gz")
    raw = json.dumps(interaction(1, id=id_)).encode()
    r = await client.post(
        URL, content=gzip.compress(raw), headers={**JSON, "content-encoding": "gzip"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["completion_id"] == id_
    got = (await client.get(f"{URL}/{id_}")).json()
    assert got["completion"] == "answer 1"


async def test_gzip_ndjson_body(client: httpx.AsyncClient) -> None:
    ids = [uid("gzn") for _ in range(2)]
    raw = "\n".join(json.dumps(interaction(i, id=ids[i])) for i in range(2)).encode()
    r = await client.post(
        URL, content=gzip.compress(raw), headers={**NDJSON, "content-encoding": "gzip"}
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"accepted": 2, "new": 2, "repeats": 0, "completion_ids": ids}


async def test_a_batch_says_how_many_were_new_and_how_many_repeats(
    client: httpx.AsyncClient,
) -> None:
    ids = [uid("rep") for _ in range(3)]
    first = [interaction(i, id=ids[i]) for i in range(2)]
    r = await client.post(URL, json=first)
    assert r.json() == {"accepted": 2, "new": 2, "repeats": 0, "completion_ids": ids[:2]}
    # All repeats: nothing new stored, and the answer says so.
    r = await client.post(URL, json=first)
    assert r.status_code == 201, r.text
    assert r.json() == {"accepted": 2, "new": 0, "repeats": 2, "completion_ids": ids[:2]}
    # Mixed, with one id twice in the same body.
    body = [interaction(0, id=ids[0]), interaction(2, id=ids[2]), interaction(2, id=ids[2])]
    r = await client.post(URL, content="\n".join(json.dumps(b) for b in body), headers=NDJSON)
    assert r.json() == {"accepted": 3, "new": 1, "repeats": 2,
                        "completion_ids": [ids[0], ids[2], ids[2]]}  # fmt: skip
    assert await counts(client) == (3, 0)


# -- aliases ---------------------------------------------------------------------------------
async def test_adaptive_aliases(client: httpx.AsyncClient) -> None:
    body = interaction(2, metadata={"team": "blue"})
    del body["use_case"], body["model"], body["labels"]
    body |= {"project": "proj-a", "model_service": "svc-large"}
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    got = (await client.get(f"{URL}/{r.json()['completion_id']}")).json()
    assert got["use_case"] == "proj-a"
    assert got["model"] == "svc-large"
    assert got["labels"] == {"team": "blue"}
    for key in ("project", "model_service", "metadata"):
        assert key not in got
    # The aliases are stored under the canonical names: the filters find them.
    listed = (await client.get(URL, params={"use_case": "proj-a", "model": "svc-large",
                                            "label": "team:blue"})).json()  # fmt: skip
    assert [x["id"] for x in listed["data"]] == [r.json()["completion_id"]]


async def test_alias_equal_to_canonical_is_accepted(client: httpx.AsyncClient) -> None:
    body = interaction(0, project="support", model_service="small",
                       metadata={"extra": "1"})  # fmt: skip
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    got = (await client.get(f"{URL}/{r.json()['completion_id']}")).json()
    assert got["labels"] == {"project": "RAG Bot", "topic": "Industrial Tools", "extra": "1"}


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"project": "other"}, "project"),
        ({"model_service": "other"}, "model_service"),
        ({"metadata": {"topic": "different"}}, "metadata"),
    ],
)
async def test_alias_conflicts_are_rejected(
    client: httpx.AsyncClient, over: dict[str, Any], param: str
) -> None:
    r = await client.post(URL, json=interaction(0, **over))
    assert_error(r, 422, param=param)
    assert await counts(client) == (0, 0)


async def test_inline_feedbacks(client: httpx.AsyncClient) -> None:
    body = interaction(
        3,
        feedbacks=[
            {"metric": "thumbs_up", "value": True, "reason": "good", "user_id": "u9"},
            {"metric": "score", "value": 0.25},
        ],
    )
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    ack = r.json()
    assert len(ack["feedback_ids"]) == 2
    assert len(set(ack["feedback_ids"])) == 2
    got = (await client.get(f"{URL}/{ack['completion_id']}")).json()
    fb = {f["id"]: f for f in got["feedback"]}
    assert set(fb) == set(ack["feedback_ids"])
    first, second = (fb[i] for i in ack["feedback_ids"])
    assert (first["metric"], first["value"], first["reason"], first["user_id"]) == (
        "thumbs_up", 1.0, "good", "u9",
    )  # fmt: skip
    assert (second["metric"], second["value"]) == ("score", 0.25)
    assert await counts(client) == (1, 2)


# -- idempotency -----------------------------------------------------------------------------
async def test_same_id_twice_is_stored_once(client: httpx.AsyncClient) -> None:
    id_ = uid("idem")
    r1 = await client.post(URL, json=interaction(1, id=id_))
    r2 = await client.post(URL, json=interaction(2, id=id_))  # a different payload: a no-op
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["completion_id"] == r2.json()["completion_id"] == id_
    assert await count_id(client, id_) == 1
    got = (await client.get(f"{URL}/{id_}")).json()
    assert got["completion"] == "answer 1"


async def test_same_id_twice_in_one_array_is_stored_once(client: httpx.AsyncClient) -> None:
    a, b = uid("dupa"), uid("dupb")
    r = await client.post(URL, json=[interaction(1, id=a), interaction(2, id=a),
                                     interaction(3, id=b)])  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["completion_ids"] == [a, a, b]
    assert await count_id(client, a) == 1
    assert await counts(client) == (2, 0)
    assert (await client.get(f"{URL}/{a}")).json()["completion"] == "answer 1"


async def test_same_id_in_ndjson_and_array_is_stored_once(client: httpx.AsyncClient) -> None:
    id_ = uid("mix")
    line = json.dumps(interaction(1, id=id_)).encode()
    assert (await client.post(URL, content=line + b"\n" + line, headers=NDJSON)).status_code == 201
    assert (await client.post(URL, json=[interaction(1, id=id_)])).status_code == 201
    assert await count_id(client, id_) == 1


async def test_same_id_after_flush_is_stored_once(client: httpx.AsyncClient, store: Any) -> None:
    id_ = uid("flushed")
    assert (await client.post(URL, json=interaction(1, id=id_))).status_code == 201
    store.flush()
    assert store.status()["pending_rows"] == 0
    assert (await client.post(URL, json=interaction(1, id=id_))).status_code == 201
    assert (await client.post(URL, json=[interaction(1, id=id_)])).status_code == 201
    assert await count_id(client, id_) == 1
    store.flush()
    assert await count_id(client, id_) == 1


async def test_same_id_concurrently_is_stored_once(client: httpx.AsyncClient) -> None:
    id_ = uid("conc")
    rs = await asyncio.gather(*(client.post(URL, json=interaction(i, id=id_)) for i in range(8)))
    assert [r.status_code for r in rs] == [201] * 8
    assert await count_id(client, id_) == 1


async def test_duplicate_does_not_duplicate_inline_feedback(client: httpx.AsyncClient) -> None:
    id_ = uid("fbdup")
    body = interaction(1, id=id_, feedbacks=[{"metric": "m", "value": 1}])
    assert (await client.post(URL, json=body)).status_code == 201
    assert (await client.post(URL, json=body)).status_code == 201
    assert await counts(client) == (1, 1)


async def test_duplicate_ack_reports_only_stored_feedback(client: httpx.AsyncClient) -> None:
    id_ = uid("fback")
    body = interaction(1, id=id_, feedbacks=[{"metric": "m", "value": 1}])
    first = (await client.post(URL, json=body)).json()
    second = (await client.post(URL, json=body)).json()
    stored = {f["id"] for f in (await client.get(f"{URL}/{id_}")).json()["feedback"]}
    assert set(first["feedback_ids"]) == stored
    # 201 means durable: every id in an ack must exist.
    assert set(second["feedback_ids"]) <= stored


async def test_duplicate_ack_reports_stored_session(client: httpx.AsyncClient) -> None:
    id_ = uid("sdup")
    first = (await client.post(URL, json=interaction(1, id=id_))).json()
    second = (await client.post(URL, json=interaction(1, id=id_))).json()
    stored = (await client.get(f"{URL}/{id_}")).json()["session_id"]
    assert first["session_id"] == stored
    assert second["session_id"] == stored


# -- label limits: the boundaries are accepted -----------------------------------------------
async def test_label_limits_boundaries_accepted(client: httpx.AsyncClient) -> None:
    labels = {f"k{i:02d}": "v" for i in range(62)}
    labels["K" * 64] = "x" * 1024
    labels["emoji"] = "😀" * 1024  # limits count characters, not bytes
    assert len(labels) == 64
    r = await client.post(URL, json=interaction(0, labels=labels))
    assert r.status_code == 201, r.text
    got = (await client.get(f"{URL}/{r.json()['completion_id']}")).json()
    assert got["labels"] == labels


# -- bad input -------------------------------------------------------------------------------
def _without(key: str) -> dict[str, Any]:
    body = interaction(0)
    del body[key]
    return body


def _json(obj: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(obj).encode(), JSON


def _nd(*lines: str) -> tuple[bytes, dict[str, str]]:
    return "\n".join(lines).encode(), NDJSON


_GOOD = json.dumps(interaction(0))

# (name, request, status, exact param or None, param prefix or None)
BAD: list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]], int, str | None, str | None]] = [
    ("missing use_case", lambda: _json(_without("use_case")), 422, "use_case", None),
    ("missing messages", lambda: _json(_without("messages")), 422, "messages", None),
    ("messages a string", lambda: _json(interaction(0, messages="hi")), 422, "messages", None),
    ("messages empty", lambda: _json(interaction(0, messages=[])), 422, "messages", None),
    ("message not an object", lambda: _json(interaction(0, messages=["hi"])), 422,
     None, "messages[0]"),
    ("message without role", lambda: _json(interaction(0, messages=[{"content": "x"}])), 422,
     "messages[0].role", None),
    ("message bad role", lambda: _json(interaction(0, messages=[{"role": "robot",
     "content": "x"}])), 422, "messages[0].role", None),
    ("message content an int", lambda: _json(interaction(0, messages=[
        {"role": "user", "content": 5}])), 422, None, "messages[0].content"),
    ("second message name an int", lambda: _json(interaction(0, messages=[
        {"role": "user", "content": "a"}, {"role": "user", "content": "b", "name": 3}])),
     422, "messages[1].name", None),
    ("labels value an int", lambda: _json(interaction(0, labels={"a": 1})), 422, None, "labels"),
    ("labels a list", lambda: _json(interaction(0, labels=["a"])), 422, "labels", None),
    ("latency_ms a word", lambda: _json(interaction(0, latency_ms="fast")), 422,
     "latency_ms", None),
    ("latency_ms negative", lambda: _json(interaction(0, latency_ms=-1)), 422,
     "latency_ms", None),
    ("usage tokens negative", lambda: _json(interaction(0, usage={"prompt_tokens": -1})), 422,
     "usage.prompt_tokens", None),
    ("created_at garbage", lambda: _json(interaction(0, created_at="yesterday")), 422,
     "created_at", None),
    ("status unknown", lambda: _json(interaction(0, status="meh")), 422, "status", None),
    ("params a list", lambda: _json(interaction(0, params=[1])), 422, "params", None),
    ("unknown field", lambda: _json(interaction(0, colour="red")), 422, "colour", None),
    ("id with a slash", lambda: _json(interaction(0, id="../x")), 422, "id", None),
    ("feedback value a word", lambda: _json(interaction(0, feedbacks=[
        {"metric": "m", "value": "great"}])), 422, None, "feedbacks[0].value"),
    ("feedback without metric", lambda: _json(interaction(0, feedbacks=[{"value": 1}])), 422,
     "feedbacks[0].metric", None),
    ("65 labels", lambda: _json(interaction(0, labels={f"k{i}": "v" for i in range(65)})),
     422, "labels", None),
    ("65-char label key", lambda: _json(interaction(0, labels={"k" * 65: "v"})), 422,
     "labels", None),
    ("empty label key", lambda: _json(interaction(0, labels={"": "v"})), 422, "labels", None),
    ("1025-char label value", lambda: _json(interaction(0, labels={"k": "v" * 1025})), 422,
     "labels", None),
    ("65 metadata", lambda: _json(interaction(0, labels=None,
     metadata={f"k{i}": "v" for i in range(65)})), 422, "metadata", None),
    ("use_case traversal", lambda: _json(interaction(0, use_case="../../etc")), 422,
     "use_case", None),
    ("use_case a=b/c", lambda: _json(interaction(0, use_case="a=b/c")), 422, "use_case", None),
    ("use_case SQL", lambda: _json(interaction(0, use_case="'; DROP TABLE interactions; --")),
     422, "use_case", None),
    ("use_case empty", lambda: _json(interaction(0, use_case="")), 422, "use_case", None),
    ("use_case dot", lambda: _json(interaction(0, use_case=".hidden")), 422, "use_case", None),
    ("use_case too long", lambda: _json(interaction(0, use_case="a" * 129)), 422,
     "use_case", None),
    ("use_case NUL", lambda: _json(interaction(0, use_case="a\x00b")), 422, "use_case", None),
    ("project traversal", lambda: _json({**_without("use_case"), "project": "../x"}), 422,
     "project", None),
    ("invalid JSON", lambda: (b'{"use_case": "support",', JSON), 400, "body", None),
    ("empty body", lambda: (b"", JSON), 400, "body", None),
    ("JSON scalar", lambda: (b"42", JSON), 400, "body", None),
    ("JSON null", lambda: (b"null", JSON), 400, "body", None),
    ("empty array", lambda: (b"[]", JSON), 422, "body", None),
    ("array of a number", lambda: (b"[1]", JSON), 422, "body[0]", None),
    ("array item bad", lambda: _json([interaction(0), interaction(1, messages=[])]), 422,
     "body[1].messages", None),
    ("invalid NDJSON line", lambda: _nd(_GOOD, "{not json", _GOOD), 400, "body[1]", None),
    ("NDJSON item bad", lambda: _nd(_GOOD, _GOOD, json.dumps(_without("use_case"))), 422,
     "body[2].use_case", None),
    ("NDJSON empty", lambda: (b"\n\n", NDJSON), 422, "body", None),
    ("gzip that is not", lambda: (b"plain", {**JSON, "content-encoding": "gzip"}), 400,
     None, None),
    ("unsupported encoding", lambda: (b"{}", {**JSON, "content-encoding": "br"}), 400,
     None, None),
    ("gzip bomb over the limit",
     lambda: (gzip.compress(b" " * (9 << 20)), {**JSON, "content-encoding": "gzip"}), 413,
     None, None),
]  # fmt: skip


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("make", "status", "param", "prefix"),
    [pytest.param(m, s, p, pre, id=name) for name, m, s, p, pre in BAD],
)
async def test_bad_input(
    client: httpx.AsyncClient,
    make: Callable[[], tuple[bytes, dict[str, str]]],
    status: int,
    param: str | None,
    prefix: str | None,
) -> None:
    seed = uid("seed")
    assert (await client.post(URL, json=interaction(0, id=seed))).status_code == 201
    before = await counts(client)

    content, headers = make()
    r = await client.post(URL, content=content, headers=headers)
    err = assert_error(r, status, param=param, prefix=prefix)
    if param is not None and status == 422:
        assert param in err["message"]  # the message names the field too

    assert await counts(client) == before  # nothing partial
    good = await client.post(URL, json=interaction(1))
    assert good.status_code == 201, good.text
    assert await counts(client) == (before[0] + 1, before[1])


async def test_one_bad_item_in_array_stores_none(client: httpx.AsyncClient) -> None:
    ids = [uid("ok") for _ in range(3)]
    body: list[Any] = [interaction(i, id=ids[i], feedbacks=[{"metric": "m", "value": 1}])
                       for i in range(3)]  # fmt: skip
    body.insert(2, interaction(9, messages=[{"role": "user", "content": "x"},
                                            {"role": "wizard", "content": "y"}]))  # fmt: skip
    r = await client.post(URL, json=body)
    assert_error(r, 422, param="body[2].messages[1].role")
    assert await counts(client) == (0, 0)
    for id_ in ids:
        assert_error(await client.get(f"{URL}/{id_}"), 404)
    # Resending the valid three works (none of their ids was half-taken).
    del body[2]
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    assert await counts(client) == (3, 3)


async def test_one_bad_ndjson_line_stores_none(client: httpx.AsyncClient) -> None:
    ids = [uid("ndok") for _ in range(3)]
    lines = [json.dumps(interaction(i, id=ids[i])) for i in range(3)]
    bad = lines[:1] + [json.dumps(interaction(5, use_case="a=b/c"))] + lines[1:]
    r = await client.post(URL, content="\n".join(bad).encode(), headers=NDJSON)
    assert_error(r, 422, param="body[1].use_case")
    assert await counts(client) == (0, 0)


async def test_merged_labels_over_limit_names_labels(client: httpx.AsyncClient) -> None:
    body = interaction(0, labels={f"a{i}": "v" for i in range(40)},
                       metadata={f"b{i}": "v" for i in range(40)})  # fmt: skip
    r = await client.post(URL, json=body)
    err = assert_error(r, 422)
    assert await counts(client) == (0, 0)
    assert err["param"] in ("labels", "metadata")


async def test_ndjson_error_names_the_line_after_blank_lines(client: httpx.AsyncClient) -> None:
    bad_json = _nd(_GOOD, "", "{nope")[0]
    assert_error(await client.post(URL, content=bad_json, headers=NDJSON), 400, param="body[2]")
    bad_item = _nd(_GOOD, "", json.dumps(_without("use_case")))[0]
    r = await client.post(URL, content=bad_item, headers=NDJSON)
    assert_error(r, 422, param="body[2].use_case")


async def test_ndjson_lines_that_are_not_json_are_rejected(client: httpx.AsyncClient) -> None:
    one = json.dumps({"use_case": "u", "messages": [{"role": "user", "content": "x"}]})
    body = '{"use_case": "u"\n"messages": [{"role": "user", "content": "x"}]}\n' + one + "," + one
    assert len(body.splitlines()) == 3  # no line of it is a JSON value
    r = await client.post(URL, content=body.encode(), headers=NDJSON)
    assert await counts(client) == (0, 0)
    assert_error(r, 400, param="body[0]")


@pytest.mark.parametrize("role", [["user"], {"r": "user"}])
async def test_unhashable_role_is_a_422(store: Any, data_dir: Any, role: Any) -> None:
    async with _no_raise_client(store, data_dir) as c:
        r = await c.post(URL, json=interaction(0, messages=[{"role": role, "content": "x"}]))
        assert_error(r, 422, param="messages[0].role")


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"completion": 5}, "completion"),
    ],
)
async def test_union_errors_name_the_field(
    client: httpx.AsyncClient, over: dict[str, Any], param: str
) -> None:
    assert_error(await client.post(URL, json=interaction(0, **over)), 422, param=param)


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"latency_ms": "1.5"}, "latency_ms"),
        ({"ttft_ms": True}, "ttft_ms"),
        ({"usage": {"prompt_tokens": "3"}}, "usage.prompt_tokens"),
    ],
)
async def test_numeric_strings_are_rejected(
    client: httpx.AsyncClient, over: dict[str, Any], param: str
) -> None:
    assert_error(await client.post(URL, json=interaction(0, **over)), 422, param=param)
    assert await counts(client) == (0, 0)


# -- size limit ------------------------------------------------------------------------------
CHUNK = b" " * (1 << 20)


async def _lazy(n_chunks: int, sent: list[int]) -> AsyncIterator[bytes]:
    for _ in range(n_chunks):
        sent[0] += len(CHUNK)
        yield CHUNK


async def test_100mb_declared_body_is_413(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    sent = [0]
    r = await client.post(
        URL, content=_lazy(100, sent), headers={**JSON, "content-length": str(100 << 20)}
    )
    err = assert_error(r, 413)
    assert err["code"] == "payload_too_large"
    assert sent[0] <= 9 << 20  # refused without reading 100 MB
    assert await counts(client) == before
    assert (await client.post(URL, json=interaction(0))).status_code == 201


async def test_100mb_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    """No Content-Length: the limit is enforced while reading."""
    sent = [0]
    r = await client.post(URL, content=_lazy(100, sent), headers=JSON)
    assert "content-length" not in r.request.headers
    assert_error(r, 413)
    assert sent[0] <= 10 << 20  # stopped soon after the 8 MiB limit
    assert await counts(client) == (0, 0)
    assert (await client.post(URL, json=interaction(0))).status_code == 201


async def test_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    # Eight messages just under the per-message limit (1 Mi characters) fill the body.
    big = [{"role": "user", "content": "x" * ((1 << 20) - 600)} for _ in range(8)]
    body = json.dumps(interaction(0, messages=big)).encode()
    assert (8 << 20) - 8192 < len(body) < 8 << 20
    r = await client.post(URL, content=body, headers=JSON)
    assert r.status_code == 201, r.text


# -- a client that sees 500s as responses (the fixture's re-raises app exceptions) -----------
class _no_raise_client:  # noqa: N801 - used like a function
    def __init__(self, store: Any, data_dir: Any) -> None:
        from api.app import create_app
        from service.settings import Settings

        self.app = create_app(Settings(data=str(data_dir), max_body_bytes=8 << 20), store=store)

    async def __aenter__(self) -> httpx.AsyncClient:
        self._life = self.app.router.lifespan_context(self.app)
        await self._life.__aenter__()
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080")
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._life.__aexit__(None, None, None)
