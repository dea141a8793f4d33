"""The real ``adaptive-sdk`` client, unchanged, against a live server (uvicorn, loopback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from adaptive_sdk import Adaptive

from service.keys import KeyRing
from tests.conftest import Server

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only


@pytest.fixture
def live(server_factory: type[Server], tmp_path: Path) -> tuple[Server, str]:
    data = tmp_path / "data"
    _, secret = KeyRing(data).create(["ingest", "read"], name="sdk")
    return server_factory(data).start(), secret


@contextlib.contextmanager
def adaptive(url: str, key: str) -> Iterator[Adaptive]:
    client = Adaptive(base_url=url, api_key=key)
    try:
        yield client
    finally:
        client.close()


def test_adaptive_sdk_interactions_and_preferences(live: tuple[Server, str]) -> None:
    server, key = live
    with adaptive(server.url, key) as client:
        _create_and_check(client, server, key)


def _create_and_check(client: Adaptive, server: Server, key: str) -> None:
    user = "5b1d1c39-9c07-4c1a-b0b8-8b3f7d0e2c11"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/drill.png"}},
        ]},
    ]  # fmt: skip
    first = client.interactions.create(
        messages=messages,  # type: ignore[arg-type]
        completion="A cordless drill.",
        model="small",
        project="support",
        labels={"project": "RAG Bot", "topic": "Industrial Tools"},
        feedbacks=[{"feedback_key": "thumbs_up", "value": 1, "details": "spot on"}],
        user=user,
        created_at="2026-03-01T12:00:00Z",
    )
    second = client.interactions.create(  # another answer to the same prompt
        messages=messages,  # type: ignore[arg-type]
        completion="A tool.",
        model="large",
        project="support",
        session_id=first.session_id,
    )
    by_id = client.feedback.log_preference(
        feedback_key="helpful",
        preferred_completion=first.completion_id,
        other_completion=second.completion_id,
        project="support",
        user=user,
    )
    inline = client.feedback.log_preference(
        feedback_key="helpful",
        preferred_completion={"text": "A cordless drill.", "model": "small"},
        other_completion={"text": "Unsure.", "model": "large"},
        messages=[{"role": "user", "content": "What is this?"}],
        project="support",
    )

    h = {"Authorization": f"Bearer {key}"}
    got = httpx.get(f"{server.url}/api/v1/interactions/{first.completion_id}", headers=h).json()
    assert got["use_case"] == "support" and got["model"] == "small"
    assert got["completion"] == "A cordless drill."
    assert got["labels"] == {"project": "RAG Bot", "topic": "Industrial Tools"}
    assert got["user"] == user and got["session_id"] == str(first.session_id)
    assert got["created_at"] == "2026-03-01T12:00:00Z"
    assert got["source"] == "api" and got["status"] == "ok"
    # What the SDK sent, exactly (it flattens image_url to a string).
    assert got["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": "https://example.com/drill.png",
    }
    assert [(f["id"], f["metric"], f["value"], f["details"]) for f in got["feedback"]] == [
        (str(first.feedback_ids[0]), "thumbs_up", 1.0, "spot on")
    ]
    assert [(c["id"], c["preferred"]) for c in got["comparisons"]] == [
        (str(by_id.comparison_id), True)
    ]
    second_got = httpx.get(
        f"{server.url}/api/v1/interactions/{second.completion_id}", headers=h
    ).json()
    assert second_got["session_id"] == str(first.session_id)
    rows = httpx.post(
        f"{server.url}/api/v1/sql",
        json={"sql": "SELECT id, preferred_text, other_model, user_id FROM comparisons "
                     "ORDER BY created_at"},
        headers=h,
    ).json()["data"]  # fmt: skip
    assert rows == [
        {"id": str(by_id.comparison_id), "preferred_text": None, "other_model": None,
         "user_id": user},
        {"id": str(inline.comparison_id), "preferred_text": "A cordless drill.",
         "other_model": "large", "user_id": None},
    ]  # fmt: skip


def test_adaptive_sdk_sees_our_errors(live: tuple[Server, str]) -> None:
    server, key = live
    with (
        adaptive(server.url, "isk_000000000000_wrong") as client,
        pytest.raises(Exception, match="401"),
    ):
        client.interactions.create(
            messages=[{"role": "user", "content": "x"}], completion="y", project="support"
        )
    with adaptive(server.url, key) as client, pytest.raises(Exception, match="404"):
        client.feedback.log_preference(
            feedback_key="helpful",
            preferred_completion="01a2159a-8b4c-7fc2-9dca-e771885f7e3e",
            other_completion="01a2159a-8b4c-7fc2-9dca-e771885f7e3f",
            project="support",
        )


def test_openai_stored_completions(live: tuple[Server, str], tmp_path: Path) -> None:
    from openai import NotFoundError, OpenAI

    server, key = live
    admin = KeyRing(server.data).create(["admin"], name="admin")[1]
    h = {"Authorization": f"Bearer {key}"}
    tools_call = {"id": "call_1", "type": "function",
                  "function": {"name": "lookup", "arguments": '{"sku": "DR-18V"}'}}  # fmt: skip
    body = [
        {"id": f"cmpl-{i}", "use_case": "support", "model": "small" if i % 2 else "large",
         "created_at": f"2026-02-0{i + 1}T00:00:00Z",
         "messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": f"question {i}"}],
         "completion": f"answer {i}" if i else {"role": "assistant", "content": None,
                                                "tool_calls": [tools_call]},
         "labels": {"topic": "tools" if i < 3 else "billing"},
         "usage": {"prompt_tokens": 10, "completion_tokens": i, "total_tokens": 10 + i}}
        for i in range(5)
    ]  # fmt: skip
    r = httpx.post(f"{server.url}/api/v1/interactions", json=body, headers=h)
    assert r.status_code == 201, r.text

    for base in ("/v1", "/api/v1"):
        client = OpenAI(base_url=server.url + base, api_key=key, max_retries=0)
        with client:
            page = client.chat.completions.list(limit=2)
            assert [c.id for c in page.data] == ["cmpl-0", "cmpl-1"] and page.has_more
            assert [c.id for c in page] == [f"cmpl-{i}" for i in range(5)]  # auto-paging
            assert [c.id for c in client.chat.completions.list(model="small")] == [
                "cmpl-1",
                "cmpl-3",
            ]
            tools = client.chat.completions.list(metadata={"topic": "tools"}, order="desc")
            assert [c.id for c in tools] == ["cmpl-2", "cmpl-1", "cmpl-0"]

            got = client.chat.completions.retrieve("cmpl-0")
            assert got.choices[0].message.tool_calls[0].function.arguments == '{"sku": "DR-18V"}'
            assert got.choices[0].finish_reason == "tool_calls"
            assert got.usage is not None and got.usage.total_tokens == 10
            assert got.model == "large" and got.created == 1769904000

            msgs = client.chat.completions.messages.list("cmpl-1")
            assert [(m.role, m.content) for m in msgs] == [
                ("system", "Be brief."), ("user", "question 1")
            ]  # fmt: skip

    client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with client:
        updated = client.chat.completions.update("cmpl-1", metadata={"reviewed": "yes"})
        assert updated.metadata == {"reviewed": "yes"}  # replaced, as OpenAI does
        assert client.chat.completions.retrieve("cmpl-1").metadata == {"reviewed": "yes"}
        assert [c.id for c in client.chat.completions.list(metadata={"reviewed": "yes"})] == [
            "cmpl-1"
        ]
        tools = client.chat.completions.list(metadata={"topic": "tools"})
        assert [c.id for c in tools] == ["cmpl-0", "cmpl-2"]
    # SQL and the label filter see the new labels too; nothing was rewritten in Parquet.
    rows = httpx.post(
        f"{server.url}/api/v1/sql",
        json={"sql": "SELECT label(labels, 'reviewed') AS r FROM interactions WHERE id = 'cmpl-1'"},
        headers=h,
    ).json()["data"]
    assert rows == [{"r": "yes"}]

    with OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as reader:
        with pytest.raises(Exception, match="403"):  # deleting needs admin
            reader.chat.completions.delete("cmpl-2")
    with OpenAI(base_url=server.url + "/v1", api_key=admin, max_retries=0) as client:
        fb = {"completion_id": "cmpl-2", "metric": "m", "value": 1}
        assert httpx.post(f"{server.url}/api/v1/feedback", json=fb, headers=h).status_code == 201
        deleted = client.chat.completions.delete("cmpl-2")
        assert deleted.deleted and deleted.id == "cmpl-2"
        with pytest.raises(NotFoundError):
            client.chat.completions.retrieve("cmpl-2")
        assert "cmpl-2" not in [c.id for c in client.chat.completions.list()]
    gone = httpx.post(
        f"{server.url}/api/v1/sql",
        json={"sql": "SELECT (SELECT count(*) FROM interactions WHERE id = 'cmpl-2') AS i, "
                     "(SELECT count(*) FROM feedback WHERE completion_id = 'cmpl-2') AS f"},
        headers=h,
    ).json()["data"]  # fmt: skip
    assert gone == [{"i": 0, "f": 0}]
    r = httpx.get(f"{server.url}/api/v1/interactions/stats", headers=h).json()
    assert r["data"] == [{"count": 4}]
    # The changes are durable: a restart (kill -9) keeps them.
    server.kill()
    server.start()
    with OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client:
        assert client.chat.completions.retrieve("cmpl-1").metadata == {"reviewed": "yes"}
        with pytest.raises(NotFoundError):
            client.chat.completions.retrieve("cmpl-2")
