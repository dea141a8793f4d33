"""OpenTelemetry GenAI semantic conventions (``gen_ai.*``), in their three content
shapes: legacy per-message log events (v1.30: ``gen_ai.user.message`` … with kvlist
bodies, ``gen_ai.choice``), the ``gen_ai.input.messages``/``gen_ai.output.messages``
span attributes (JSON strings), and the one ``gen_ai.client.inference.operation.details``
log record (the same attributes as structured values)."""

from __future__ import annotations

from typing import Any

from ingest.otlp.common import (
    as_text,
    completion,
    openai_tool_calls,
    parts_list,
    role,
    usage,
)

LEGACY_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE = "gen_ai.choice"
DETAILS = "gen_ai.client.inference.operation.details"
EVENTS = frozenset({*LEGACY_EVENTS, CHOICE, DETAILS})
LEGACY_SCOPE = "opentelemetry.instrumentation.openai_v2"

_LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
_NOT_LLM = frozenset({"embeddings", "execute_tool", "create_agent", "invoke_agent"})
_PARAMS = {
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.stop_sequences": "stop",
    "gen_ai.request.seed": "seed",
    "gen_ai.request.choice.count": "n",
}


def is_llm(attrs: dict[str, Any]) -> bool:
    op = attrs.get("gen_ai.operation.name")
    if op in _LLM_OPERATIONS:
        return True
    if op in _NOT_LLM:
        return False
    return any(k in attrs for k in ("gen_ai.request.model", "gen_ai.system",
                                    "gen_ai.provider.name"))  # fmt: skip


def has_content(attrs: dict[str, Any]) -> bool:
    return "gen_ai.input.messages" in attrs or "gen_ai.output.messages" in attrs


def is_legacy(span: dict[str, Any]) -> bool:
    """The v1.30 path, whose content (when any) comes as per-message log events."""
    attrs = span["attrs"]
    return span["scope"]["name"] == LEGACY_SCOPE or (
        "gen_ai.system" in attrs and "gen_ai.provider.name" not in attrs
    )


def fields(attrs: dict[str, Any]) -> dict[str, Any]:
    """What a span's (or the details record's) attributes say about the call."""
    out: dict[str, Any] = {
        "model": as_text(attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model")),
        "usage": usage(
            attrs.get("gen_ai.usage.input_tokens"), attrs.get("gen_ai.usage.output_tokens")
        ),  # fmt: skip
        "session_id": as_text(attrs.get("gen_ai.conversation.id")),
    }
    params = {name: attrs[key] for key, name in _PARAMS.items() if key in attrs}
    out["params"] = params or None
    system = parts_list(attrs.get("gen_ai.system_instructions"), "system")
    messages = parts_list(attrs.get("gen_ai.input.messages"))
    if system:
        system = [{"role": "system", "content": m.get("content")} for m in system]
    if messages is not None or system:
        out["messages"] = (system or []) + (messages or [])
    outputs = parts_list(attrs.get("gen_ai.output.messages"), "assistant")
    if outputs is not None:
        first = next((m for m in outputs if m.get("role") == "assistant"), None)
        out["completion"] = completion(first)
    error_type = attrs.get("error.type")
    if isinstance(error_type, str):
        out["error_type"] = error_type
    return out


def _event_message(name: str, body: Any) -> dict[str, Any] | None:
    body = body if isinstance(body, dict) else {}
    r = LEGACY_EVENTS[name]
    if r == "tool":
        return {"role": "tool", "tool_call_id": as_text(body.get("id")) or "",
                "content": as_text(body.get("content"))}  # fmt: skip
    m: dict[str, Any] = {"role": role(body.get("role"), r), "content": _content(body)}
    calls = openai_tool_calls(body.get("tool_calls"))
    if calls:
        m["tool_calls"] = calls
    return m


def _content(body: dict[str, Any]) -> Any:
    c = body.get("content")
    return c if c is None or isinstance(c, str | list) else as_text(c)


def _captured(body: Any) -> bool:
    """Whether an event body holds content (without capture only roles, ids and tool
    names are sent)."""
    if not isinstance(body, dict):
        return False
    if "content" in body:
        return True
    msg = body.get("message")
    if isinstance(msg, dict) and _captured(msg):
        return True
    for tc in body.get("tool_calls") or ():
        if isinstance(tc, dict) and "arguments" in (tc.get("function") or {}):
            return True
    return False


def from_events(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages and completion from legacy events and the details record, in the
    order the events were made."""
    out: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    choices: dict[int, Any] = {}
    captured = False
    for rec in sorted(logs, key=lambda r: (r["time_ns"], r.get("seq", 0))):
        name = rec["event_name"]
        if name == DETAILS:
            for k, v in fields(rec["attrs"]).items():
                out.setdefault(k, v)
            continue
        body = rec["body"]
        captured = captured or _captured(body)
        if name == CHOICE:
            b = body if isinstance(body, dict) else {}
            index = b.get("index", 0)
            msg: dict[str, Any] = b["message"] if isinstance(b.get("message"), dict) else {}
            m: dict[str, Any] = {"role": "assistant", "content": _content(msg)}
            calls = openai_tool_calls(msg.get("tool_calls"))
            if calls:
                m["tool_calls"] = calls
            choices[index if isinstance(index, int) else 0] = m
            continue
        m2 = _event_message(name, body)
        if m2 is not None:
            messages.append(m2)
    if captured:
        out.setdefault("messages", messages)
        if choices:
            out.setdefault("completion", completion(choices[min(choices)]))
    return out


def legacy_complete(span: dict[str, Any], logs: list[dict[str, Any]]) -> bool:
    """The span, its input events and as many choices as it says it returned (one when
    it does not say: streams) are in; an error has no choice."""
    inputs = sum(1 for r in logs if r["event_name"] in LEGACY_EVENTS)
    if not inputs:
        return False
    if span["status"]["code"] == 2:
        return True
    reasons = span["attrs"].get("gen_ai.response.finish_reasons")
    want = len(reasons) if isinstance(reasons, list) and reasons else 1
    return sum(1 for r in logs if r["event_name"] == CHOICE) >= want
