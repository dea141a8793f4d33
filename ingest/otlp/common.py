"""Helpers the three conventions share: JSON-or-text values, OpenAI-shaped messages
from OpenTelemetry GenAI "parts", numbers that may arrive as strings."""

from __future__ import annotations

from typing import Any

import orjson

from ingest.formats import completion_of

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ROLE_ALIASES = {"model": "assistant", "human": "user", "ai": "assistant"}


def json_or_text(v: Any) -> Any:
    """A JSON-encoded attribute value, or the value itself when it is not JSON (the
    Langfuse SDK sends a Python ``str`` raw and everything else as JSON)."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    if not s or s[0] not in '[{"' and s not in ("true", "false", "null") and not _numeric(s):
        return v
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return v


def json_value(v: Any) -> Any:
    """A value that should be JSON (None when it is not)."""
    if not isinstance(v, str):
        return v
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return None


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def as_text(v: Any) -> str | None:
    """A label value or tool result as text: strings as they are, the rest as JSON."""
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, int) and 0 <= v < 2**63:
        return v
    return None


def usage(prompt: Any, completion: Any, total: Any = None) -> dict[str, int | None] | None:
    p, c, t = as_int(prompt), as_int(completion), as_int(total)
    if p is None and c is None and t is None:
        return None
    if t is None and p is not None and c is not None:
        t = p + c
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}


def role(v: Any, default: str = "user") -> str:
    if not isinstance(v, str):
        return default
    r = v.lower()
    r = _ROLE_ALIASES.get(r, r)
    return r if r in ROLES else default


def arguments(v: Any) -> str:
    """Tool-call arguments in OpenAI's shape: a JSON string."""
    if isinstance(v, str):
        return v
    return orjson.dumps(v).decode() if v is not None else ""


def tool_call(id_: Any, name: Any, args: Any) -> dict[str, Any]:
    return {
        "id": as_text(id_) or "",
        "type": "function",
        "function": {"name": as_text(name) or "", "arguments": arguments(args)},
    }


def openai_tool_calls(v: Any) -> list[dict[str, Any]] | None:
    """Tool calls already in (roughly) OpenAI's shape, arguments made strings."""
    if not isinstance(v, list):
        return None
    out = []
    for tc in v:
        if not isinstance(tc, dict):
            continue
        fn: dict[str, Any] = tc["function"] if isinstance(tc.get("function"), dict) else {}
        out.append(tool_call(tc.get("id"), fn.get("name", tc.get("name")),
                             fn.get("arguments", tc.get("arguments"))))  # fmt: skip
    return out or None


def openai_message(m: Any, default_role: str = "user") -> dict[str, Any] | None:
    """An OpenAI-format message as sent by an SDK, cleaned to the stored shape."""
    if not isinstance(m, dict):
        return None
    out: dict[str, Any] = {"role": role(m.get("role"), default_role)}
    content = m.get("content")
    out["content"] = (
        content if content is None or isinstance(content, str | list) else as_text(content)
    )
    calls = openai_tool_calls(m.get("tool_calls"))
    if calls:
        out["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


def parts_messages(m: Any, default_role: str = "user") -> list[dict[str, Any]]:
    """One GenAI semantic-conventions message (``{"role", "parts": [...]}``) → OpenAI
    messages: text parts become the content, ``tool_call`` parts ``tool_calls``
    (arguments as a JSON string), each ``tool_call_response`` a ``role: tool`` message."""
    if not isinstance(m, dict):
        return []
    r = role(m.get("role"), default_role)
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for p in m.get("parts") or ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind == "text":
            texts.append(as_text(p.get("content")) or "")
        elif kind == "tool_call":
            calls.append(tool_call(p.get("id"), p.get("name"), p.get("arguments")))
        elif kind == "tool_call_response":
            results.append({"role": "tool", "tool_call_id": as_text(p.get("id")) or "",
                            "content": as_text(p.get("response"))})  # fmt: skip
        elif kind == "reasoning":
            continue  # not part of an OpenAI chat message
        elif isinstance(kind, str):
            others.append(dict(p))
    if results and not texts and not calls:
        return results
    content: Any
    if others:
        content = [{"type": "text", "text": t} for t in texts] + others
    elif len(texts) == 1:
        content = texts[0]
    elif texts:
        content = [{"type": "text", "text": t} for t in texts]
    else:
        content = None
    out: dict[str, Any] = {"role": r, "content": content}
    if calls:
        out["tool_calls"] = calls
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return [out, *results]


def parts_list(v: Any, default_role: str = "user") -> list[dict[str, Any]] | None:
    """``gen_ai.input.messages``-style value (JSON string or structured) → messages."""
    v = json_value(v) if isinstance(v, str) else v
    if not isinstance(v, list):
        return None
    out: list[dict[str, Any]] = []
    for m in v:
        out.extend(parts_messages(m, default_role))
    return out


def completion(message: dict[str, Any] | None) -> Any:
    if message is None:
        return None
    return completion_of(message)
