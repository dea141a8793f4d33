"""Arize OpenInference (``openinference.span.kind = "LLM"``): flattened, indexed
messages (``llm.input_messages.N.message.*``), ``llm.tools.N``, ``llm.token_count.*``,
``llm.invocation_parameters`` (the only place holding the request model), and the
"First Token Stream Event" for time to first token."""

from __future__ import annotations

from typing import Any

from ingest.otlp.common import (
    as_int,
    as_text,
    completion,
    json_value,
    role,
    tool_call,
    usage,
)

FIRST_TOKEN = "First Token Stream Event"


def is_openinference(attrs: dict[str, Any]) -> bool:
    return "openinference.span.kind" in attrs


def is_llm(attrs: dict[str, Any]) -> bool:
    return attrs.get("openinference.span.kind") == "LLM"


def _indexed(attrs: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``prefix.N.rest`` keys → {N: {rest: value}}."""
    out: dict[int, dict[str, Any]] = {}
    n = len(prefix)
    for key, v in attrs.items():
        if not key.startswith(prefix):
            continue
        head, _, rest = key[n:].partition(".")
        i = as_int(head)
        if i is not None and rest:
            out.setdefault(i, {})[rest] = v
    return out


def _message(flat: dict[str, Any], default_role: str) -> dict[str, Any]:
    m: dict[str, Any] = {"role": role(flat.get("message.role"), default_role)}
    parts = _indexed(flat, "message.contents.") if len(flat) > 2 else {}
    if parts:
        content: list[dict[str, Any]] = []
        for _, p in sorted(parts.items()):
            kind = p.get("message_content.type")
            if kind == "image":
                url = p.get("message_content.image.image.url")
                content.append({"type": "image_url", "image_url": {"url": as_text(url)}})
            else:
                content.append({"type": "text", "text": as_text(p.get("message_content.text"))})
        m["content"] = content
    else:
        m["content"] = as_text(flat.get("message.content"))
    calls = _indexed(flat, "message.tool_calls.") if len(flat) > 2 else {}
    if calls:
        m["tool_calls"] = [
            tool_call(c.get("tool_call.id"), c.get("tool_call.function.name"),
                      c.get("tool_call.function.arguments"))
            for _, c in sorted(calls.items())
        ]  # fmt: skip
    if isinstance(flat.get("message.tool_call_id"), str):
        m["tool_call_id"] = flat["message.tool_call_id"]
    if isinstance(flat.get("message.name"), str):
        m["name"] = flat["message.name"]
    return m


_GROUPS = {"input_messages": 0, "output_messages": 1, "tools": 2}


def _groups(attrs: dict[str, Any]) -> list[dict[int, dict[str, Any]]]:
    """``_indexed`` of the three ``llm.`` lists (``llm.input_messages``,
    ``llm.output_messages``, ``llm.tools``) in one pass over the attributes."""
    out: list[dict[int, dict[str, Any]]] = [{}, {}, {}]
    for key, v in attrs.items():
        if key[:4] != "llm.":
            continue
        group, _, rest = key[4:].partition(".")
        n = _GROUPS.get(group)
        if n is None:
            continue
        head, _, sub = rest.partition(".")
        if sub and head.isdigit():
            out[n].setdefault(int(head), {})[sub] = v
    return out


def fields(span: dict[str, Any]) -> dict[str, Any]:
    attrs = span["attrs"]
    inputs, outputs, tool_defs = _groups(attrs)
    params = json_value(attrs.get("llm.invocation_parameters"))
    params = dict(params) if isinstance(params, dict) else {}
    request_model = params.pop("model", None)
    out: dict[str, Any] = {
        "model": as_text(request_model or attrs.get("llm.model_name")),
        "usage": usage(
            attrs.get("llm.token_count.prompt"),
            attrs.get("llm.token_count.completion"),
            attrs.get("llm.token_count.total"),
        ),  # fmt: skip
        "user": as_text(attrs.get("user.id")) or as_text(params.get("user")),
        "session_id": as_text(attrs.get("session.id")),
    }
    tools = [json_value(t.get("tool.json_schema")) for _, t in sorted(tool_defs.items())]
    if tools:
        params["tools"] = [t for t in tools if t is not None]
    out["params"] = params or None
    if inputs or outputs:
        out["messages"] = [_message(m, "user") for _, m in sorted(inputs.items())]
        if outputs:
            out["completion"] = completion(_message(outputs[min(outputs)], "assistant"))
    metadata = json_value(attrs.get("metadata"))
    if isinstance(metadata, dict):
        out["metadata"] = {str(k): as_text(v) or "" for k, v in metadata.items()}
    tags = attrs.get("tag.tags")
    if isinstance(tags, list):
        out["tags"] = [as_text(t) or "" for t in tags]
    for e in span["events"]:
        if e["name"] == FIRST_TOKEN and span["start_ns"] and e["time_ns"] >= span["start_ns"]:
            out["ttft_ms"] = (e["time_ns"] - span["start_ns"]) / 1e6
            break
    return out
