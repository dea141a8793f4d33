"""Gateway logs, OpenAI fine-tuning JSONL and Adaptive dataset JSONL, over HTTP and import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import CliRunner
from openai.types.chat import ChatCompletion

from istore.cli import main
from store.reader import open as open_store
from tests.conftest import assert_error

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_part",
            "description": "Find a part by number",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}},
        },
    }
]
CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "lookup_part", "arguments": '{"sku": "DR-18V"}'},
}


def openai_request(**over: Any) -> dict[str, Any]:
    body = {
        "model": "support/small",
        "messages": [
            {"role": "system", "content": "You sell tools."},
            {"role": "user", "content": "Is the DR-18V in stock? Ünïcode ✓"},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 256,
        "metadata": {"project": "RAG Bot", "topic": "Industrial Tools"},
        "user": "user-42",
    }
    body.update(over)
    return body


def openai_response(**over: Any) -> dict[str, Any]:
    """A ChatCompletion as the openai client models it (so the shape is real)."""
    raw = {
        "id": "chatcmpl-9xYz",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "llama-3.1-8b-instruct",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
            }
        ],
        "usage": {"prompt_tokens": 41, "completion_tokens": 17, "total_tokens": 58},
    }
    raw.update(over)
    return ChatCompletion.model_validate(raw).model_dump(mode="json")


async def test_gateway_log_is_mapped_to_an_interaction(client: httpx.AsyncClient) -> None:
    record = {"request": openai_request(), "response": openai_response(),
              "latency_ms": 812.5, "ttft_ms": 120.0, "labels": {"env": "prod"}}  # fmt: skip
    r = await client.post("/api/v1/interactions", json=record)
    assert r.status_code == 201, r.text
    assert r.json()["completion_id"] == "chatcmpl-9xYz"
    got = (await client.get("/api/v1/interactions/chatcmpl-9xYz")).json()
    assert got["use_case"] == "support" and got["model"] == "small"
    assert got["messages"] == openai_request()["messages"]
    assert got["completion"] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert got["labels"] == {"project": "RAG Bot", "topic": "Industrial Tools", "env": "prod",
                             "upstream_model": "llama-3.1-8b-instruct",
                             "finish_reason": "tool_calls"}  # fmt: skip
    assert got["usage"] == {"prompt_tokens": 41, "completion_tokens": 17, "total_tokens": 58}
    assert got["params"] == {"tools": TOOLS, "tool_choice": "auto", "temperature": 0.2,
                             "max_tokens": 256}  # fmt: skip
    assert got["user"] == "user-42"
    assert got["created_at"] == "2026-01-01T00:00:00Z"
    assert (got["latency_ms"], got["ttft_ms"]) == (812.5, 120.0)
    # The same call logged again (a gateway retry) is stored once.
    r = await client.post("/api/v1/interactions", json=record)
    assert r.status_code == 201
    r = await client.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    assert r.json()["data"] == [{"n": 1}]


async def test_gateway_log_variants(client: httpx.AsyncClient) -> None:
    two = openai_response(
        id="chatcmpl-two",
        choices=[
            {"index": i, "finish_reason": "stop",
             "message": {"role": "assistant", "content": f"answer {i}"}}
            for i in range(2)
        ],
    )  # fmt: skip
    plain_model = {"request": openai_request(model="gpt-4o-mini"), "response": two,
                   "use_case": "sales"}  # fmt: skip
    failed = {"request": openai_request(), "response": None, "error": "upstream 502",
              "id": "failed-1"}  # fmt: skip
    body = "\n".join(json.dumps(x) for x in (plain_model, failed))
    r = await client.post(
        "/api/v1/interactions", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["completion_ids"] == ["chatcmpl-two", "chatcmpl-two:1", "failed-1"]
    a = (await client.get("/api/v1/interactions/chatcmpl-two:1")).json()
    assert (a["use_case"], a["model"], a["completion"]) == ("sales", "gpt-4o-mini", "answer 1")
    # The request's model in model, what the response says answered in labels.
    assert a["labels"] == {"project": "RAG Bot", "topic": "Industrial Tools",
                           "upstream_model": "llama-3.1-8b-instruct",
                           "finish_reason": "stop"}  # fmt: skip
    f = (await client.get("/api/v1/interactions/failed-1")).json()
    assert (f["status"], f["error"], f["completion"]) == ("error", "upstream 502", None)


async def test_gateway_log_errors_name_what_the_client_sent(client: httpx.AsyncClient) -> None:
    bad_role = openai_request(messages=[{"role": "robot", "content": "x"}])
    cases = [
        ({"request": bad_role, "response": openai_response()}, "request.messages[0].role"),
        ({"request": openai_request(model="no-use-case"), "response": openai_response()},
         "use_case"),
        ({"request": openai_request(), "response": {"choices": []}}, "response.choices"),
        ({"request": openai_request(), "response": openai_response(), "extra": 1}, "extra"),
        ({"request": openai_request(), "response": None}, "response"),
        ({"request": openai_request(metadata={"k" * 65: "v"}), "response": openai_response()},
         "request.metadata"),
    ]  # fmt: skip
    for record, param in cases:
        r = await client.post("/api/v1/interactions", json=record)
        assert_error(r, 422, param)
        ok = {"request": openai_request(), "response": openai_response(id="fine")}
        r = await client.post("/api/v1/interactions", json=[ok, record])
        assert_error(r, 422, f"body[1].{param}")
    r = await client.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    assert r.json()["data"] == [{"n": 0}]


def test_import_gateway_finetune_and_adaptive_files(tmp_path: Path) -> None:
    gateway = tmp_path / "gateway.jsonl"
    gateway.write_text(
        json.dumps({"request": openai_request(), "response": openai_response()}) + "\n"
    )
    finetune = tmp_path / "finetune.jsonl"
    ft_messages = [
        {"role": "system", "content": "You sell tools."},
        {"role": "user", "content": "Is the DR-18V in stock?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"stock": 3}'},
        {"role": "assistant", "content": "Yes, 3 left."},
    ]
    finetune.write_text(
        json.dumps({"messages": ft_messages, "tools": TOOLS, "parallel_tool_calls": False})
        + "\n"
        + json.dumps(
            {
                "messages": ft_messages[:2]
                + [{"role": "assistant", "content": None, "tool_calls": [CALL]}]
            }
        )  # fmt: skip
        + "\n"
    )
    adaptive = tmp_path / "adaptive.jsonl"
    adaptive.write_text(
        json.dumps({"messages": ft_messages[:2], "completion": "We have 3.",
                    "feedbacks": {"accuracy": 0.9, "thumbs_up": True}, "labels": {"k": "v"}})
        + "\n"
    )  # fmt: skip
    data = tmp_path / "data"
    r = CliRunner().invoke(
        main,
        ["import", "--data", str(data), "--use-case", "catalog",
         str(gateway), str(finetune), str(adaptive)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Imported 4 of 4" in r.output
    with open_store(data) as reader:
        rows = reader.sql(
            "SELECT id, use_case, messages, completion, completion_message, labels, params, "
            "source FROM interactions ORDER BY messages, completion"
        ).to_dicts()
        fb = reader.sql("SELECT metric, value FROM feedback ORDER BY metric").to_dicts()
    assert {r["source"] for r in rows} == {"import"}
    by_use_case = {r["use_case"] for r in rows}
    assert by_use_case == {"support", "catalog"}
    ft = [r for r in rows if r["params"] and "parallel_tool_calls" in r["params"]]
    assert len(ft) == 1
    assert orjson.loads(ft[0]["messages"]) == ft_messages[:-1]
    assert ft[0]["completion"] == "Yes, 3 left." and ft[0]["completion_message"] is None
    assert orjson.loads(ft[0]["params"]) == {"tools": TOOLS, "parallel_tool_calls": False}
    calls = [r for r in rows if r["completion_message"] and r["use_case"] == "catalog"]
    assert orjson.loads(calls[0]["completion_message"])["tool_calls"] == [CALL]
    gw = next(r for r in rows if r["use_case"] == "support")
    assert gw["id"] == "chatcmpl-9xYz"
    assert dict(gw["labels"]) == {"project": "RAG Bot", "topic": "Industrial Tools",
                                  "upstream_model": "llama-3.1-8b-instruct",
                                  "finish_reason": "tool_calls"}  # fmt: skip
    assert fb == [{"metric": "accuracy", "value": 0.9}, {"metric": "thumbs_up", "value": 1.0}]


def test_import_finetune_needs_a_use_case(tmp_path: Path) -> None:
    f = tmp_path / "ft.jsonl"
    qa = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    f.write_text(json.dumps({"messages": qa}) + "\n")
    r = CliRunner().invoke(main, ["import", "--data", str(tmp_path / "d"), str(f)])
    assert r.exit_code == 1
    assert "use_case" in r.output and "--use-case" in r.output


async def test_gateway_errors_point_at_the_body_item_and_choice(client: httpx.AsyncClient) -> None:
    two = openai_response(
        choices=[
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": "a"}}
            for i in range(2)
        ]
    )
    two["choices"][1]["message"]["tool_calls"] = "nope"  # what no real client would send
    r = await client.post(
        "/api/v1/interactions", json={"request": openai_request(), "response": two}
    )
    assert_error(r, 422, "response.choices[1].message.tool_calls")
    ok = {"request": openai_request(), "response": openai_response(
        id="two-choices", choices=[{"index": i, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "x"}}
                                   for i in range(2)])}  # fmt: skip
    bad = {"use_case": "x/y", "model": "m", "messages": [{"role": "user", "content": "q"}]}
    r = await client.post("/api/v1/interactions", json=[ok, bad])
    assert_error(r, 422, "body[1].use_case")
    r = await client.post(
        "/api/v1/interactions",
        json={"request": openai_request(model="bad use case/m"), "response": openai_response()},
    )
    assert_error(r, 422, "request.model")
