"""The Langfuse SDK (v3 and later are OTLP exporters): ``langfuse.observation.*`` of
generation observations, ``langfuse.trace.*``, ``user.id``/``session.id``.

Its encodings: ``input``/``output`` are JSON except that a Python ``str`` is sent raw;
metadata values are always JSON (strings too, quotes included);
``model.parameters`` holds defaults the call never sent (``max_tokens: "Infinity"``:
dropped here, being no number)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.otlp.common import (
    as_text,
    completion,
    json_or_text,
    json_value,
    openai_message,
    usage,
)

SCOPE = "langfuse-sdk"
_OBS = "langfuse.observation."
_TRACE_META = "langfuse.trace.metadata."
_OBS_META = "langfuse.observation.metadata."


def is_langfuse(span: dict[str, Any]) -> bool:
    return span["scope"]["name"] == SCOPE or "langfuse.observation.type" in span["attrs"]


def is_llm(span: dict[str, Any]) -> bool:
    return span["attrs"].get("langfuse.observation.type") == "generation"


def _messages(v: Any, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    if v is None:
        return None
    if isinstance(v, dict) and isinstance(v.get("messages"), list):
        if isinstance(v.get("tools"), list):
            params["tools"] = v["tools"]
        v = v["messages"]
    if isinstance(v, list):
        out = [openai_message(m) for m in v]
        return [m for m in out if m is not None]
    if isinstance(v, dict) and "role" in v:
        m = openai_message(v)
        return [m] if m else []
    return [{"role": "user", "content": as_text(v)}]


def _completion(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict) and ("role" in v or "content" in v or "tool_calls" in v):
        return completion(openai_message(v, "assistant"))
    if isinstance(v, dict) and isinstance(v.get("choices"), list) and v["choices"]:
        first = v["choices"][0]
        if isinstance(first, dict) and isinstance(first.get("message"), dict):
            return completion(openai_message(first["message"], "assistant"))
    return as_text(v)


def fields(span: dict[str, Any]) -> dict[str, Any]:
    attrs = span["attrs"]
    params = json_value(attrs.get(_OBS + "model.parameters"))
    params = (
        {k: v for k, v in params.items() if v != "Infinity"} if isinstance(params, dict) else {}
    )
    u = json_value(attrs.get(_OBS + "usage_details"))
    u = u if isinstance(u, dict) else {}
    out: dict[str, Any] = {
        "model": as_text(attrs.get(_OBS + "model.name")),
        "usage": usage(
            u.get("prompt_tokens", u.get("input")),
            u.get("completion_tokens", u.get("output")),
            u.get("total_tokens", u.get("total")),
        ),  # fmt: skip
        "user": as_text(attrs.get("user.id") or attrs.get("langfuse.user.id")),
        "session_id": as_text(attrs.get("session.id") or attrs.get("langfuse.session.id")),
    }
    messages = _messages(json_or_text(attrs.get(_OBS + "input")), params)
    if messages is not None:
        out["messages"] = messages
    if _OBS + "output" in attrs:
        out["completion"] = _completion(json_or_text(attrs[_OBS + "output"]))
    out["params"] = params or None
    metadata: dict[str, str] = {}
    for key, v in attrs.items():
        for prefix in (_TRACE_META, _OBS_META):
            if key.startswith(prefix):
                metadata[key[len(prefix) :]] = as_text(json_or_text(v)) or ""
    out["metadata"] = metadata
    tags = attrs.get("langfuse.trace.tags")
    if isinstance(tags, str):
        tags = json_value(tags)
    if isinstance(tags, list):
        out["tags"] = [as_text(t) or "" for t in tags]
    start = json_or_text(attrs.get(_OBS + "completion_start_time"))
    if isinstance(start, str) and span["start_ns"]:
        try:
            ts = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            ts = None
        if ts is not None and ts.tzinfo is not None:
            ttft = ts.timestamp() * 1000 - span["start_ns"] / 1e6
            if ttft >= 0:
                out["ttft_ms"] = ttft
    if attrs.get(_OBS + "level") == "ERROR":
        out["is_error"] = True
        out["error"] = as_text(attrs.get(_OBS + "status_message"))
    return out
