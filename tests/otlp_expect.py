"""What each real client's five calls must come back as, field by field (shared by
the fixture tests and the live-client tests)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from tests.otlp_clients import QUESTIONS, SYSTEM

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "otlp"
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
HISTORY_CALL = {"id": "call_abc123", "type": "function", "function": {"name": "get_weather"}}
TOOL_RESULT = '{"temp_c": 18, "sky": "sunny"}'
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def fixture_requests(client: str) -> list[dict[str, Any]]:
    """The captured requests of one client, in the order they were sent."""
    out = []
    for line in (FIXTURES / f"{client}.jsonl").read_bytes().splitlines():
        r = orjson.loads(line)
        r["body"] = base64.b64decode(r["body"])
        out.append(r)
    return out


def case_of(item: dict[str, Any]) -> str:
    users = [m["content"] for m in item["messages"] if m.get("role") == "user"]
    assert users, item
    return next(c for c, q in QUESTIONS.items() if q == users[-1])


def _tool_call(tc: dict[str, Any], want: dict[str, Any]) -> None:
    assert {k: tc[k] for k in ("id", "type")} == {k: want[k] for k in ("id", "type")}
    assert tc["function"]["name"] == want["function"]["name"]
    # OpenAI's shape: a JSON string (GenAI sends an object; its spacing is not kept)
    assert isinstance(tc["function"]["arguments"], str)
    assert orjson.loads(tc["function"]["arguments"]) == {"city": "Paris"}


def check(client: str, items: list[dict[str, Any]]) -> None:
    """``items``: the stored interactions of one run of ``tests.otlp_clients CLIENT``."""
    by_case = {case_of(i): i for i in items}
    assert sorted(by_case) == sorted(QUESTIONS), [case_of(i) for i in items]
    assert len(items) == len(QUESTIONS), "one interaction per call, nothing twice"
    context = client in ("openinference", "langfuse")
    for case, it in by_case.items():
        where = f"{client}/{case}"
        trace, span = it["labels"]["trace_id"], it["labels"]["span_id"]
        assert it["id"] == f"otlp-{trace}-{span}", where
        assert len(trace) == 32 and len(span) == 16 and trace == trace.lower(), where
        assert it["labels"]["service.name"] == "geo-assistant", where
        assert it["latency_ms"] is not None and it["latency_ms"] > 0, where
        assert it.get("source", "otlp") == "otlp", where
        assert it["messages"][0] == {"role": "system", "content": SYSTEM}, where
        if context:  # using_attributes / propagate_attributes
            assert it["use_case"] == "geo-qa", where
            assert it["user"] == "user-7" and it["session_id"] == "session-1", where
            assert it["labels"]["use_case"] == "geo-qa", where
            assert it["labels"]["tag.geo"] == "true", where
            assert it["labels"][f"tag.{case}"] == "true", where
            extra = {"tier": "gold"} if client == "openinference" else {"feature": "qa-box"}
            for k, v in extra.items():
                assert it["labels"][k] == v, where
        else:
            assert it["use_case"] == "geo-assistant", where  # service.name
            assert it["user"] is None and it["session_id"] is None, where
        if case == "error":
            assert it["status"] == "error", where
            assert "temperature is out of range" in it["error"], where
            assert it["model"] == "fail400", where
            assert it["completion"] is None and it["usage"] is None, where
            continue
        assert it["status"] == "ok" and it["error"] is None, where
        assert it["usage"] == USAGE, where
        if case == "plain":
            assert it["messages"][1:] == [{"role": "user", "content": QUESTIONS["plain"]}], where
            assert it["completion"] == "echo: " + QUESTIONS["plain"], where
            assert it["model"] == "plain", where
            assert it["params"]["temperature"] == 0.2, where
            assert it["params"]["max_tokens"] == 50, where
        elif case == "stream":
            assert it["completion"] == "Hello from the upstream.", where
            if context:  # OpenInference's first-token event, Langfuse's completion_start_time
                assert it["ttft_ms"] is not None and 0 <= it["ttft_ms"] <= it["latency_ms"]
        elif case == "tool_call":
            assert it["model"] == "tools", where
            c = it["completion"]
            assert c["role"] == "assistant" and c.get("content") is None, where
            (tc,) = c["tool_calls"]
            _tool_call(tc, TOOL_CALL)
            if context:  # the tools offered (openai-v2 does not send them)
                (tool,) = it["params"]["tools"]
                assert tool["function"]["name"] == "get_weather", where
        elif case == "tool_result":
            ms = it["messages"]
            assert [m["role"] for m in ms] == ["system", "user", "assistant", "tool", "user"]
            assert ms[2].get("content") is None, where
            (tc,) = ms[2]["tool_calls"]
            _tool_call(tc, HISTORY_CALL)
            assert ms[3]["tool_call_id"] == "call_abc123", where
            assert ms[3]["content"] == TOOL_RESULT, where
            assert ms[4]["content"] == QUESTIONS["tool_result"], where
            assert it["completion"] == "echo: " + QUESTIONS["tool_result"], where
