"""Turning stored interactions into what the templates show: excerpts, chat turns with
their parts and tool calls, and links that are safe to follow.

Everything here returns plain strings and dicts; the templates escape all of it. A URL
from a message is a link only when it is http(s) (never ``javascript:``, ``data:``
…), and images are never fetched: they are shown as links."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import orjson

EXCERPT = 160


def excerpt(text: str | None, n: int = EXCERPT) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                out.append(p["text"])
            elif isinstance(p, str):
                out.append(p)
        return "\n".join(out)
    return str(content)


def first_user(messages: list[Any] | None) -> str:
    for m in messages or ():
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def completion_text(completion: Any) -> str:
    if isinstance(completion, dict):
        text = content_text(completion.get("content"))
        calls = completion.get("tool_calls") or []
        names = [
            str((c.get("function") or {}).get("name", "?")) for c in calls if isinstance(c, dict)
        ]
        if names:
            text = (text + " " if text else "") + "→ " + ", ".join(names) + "()"
        return text
    return completion or ""


def safe_url(url: Any) -> str | None:
    """``url`` if it is an http(s) URL a link may point to, else None."""
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return url.strip()
    return None


def _arguments(raw: Any) -> str:
    """Tool-call arguments pretty-printed when they are JSON, else as sent."""
    sent = raw
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return sent
    try:
        return orjson.dumps(raw, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels): as sent
        return sent if isinstance(sent, str) else repr(sent)


def parts(content: Any) -> list[dict[str, Any]]:
    """A message content as display parts: ``{"kind": "text"|"image"|"other", …}``."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"kind": "text", "text": content}]
    if not isinstance(content, list):
        return [{"kind": "other", "text": orjson.dumps(content).decode()}]
    out: list[dict[str, Any]] = []
    for p in content:
        if not isinstance(p, dict):
            out.append({"kind": "text", "text": str(p)})
        elif p.get("type") == "text" or (isinstance(p.get("text"), str) and "type" not in p):
            out.append({"kind": "text", "text": str(p.get("text", ""))})
        elif p.get("type") == "image_url":
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            shown = url if isinstance(url, str) else ""
            if shown.startswith("data:"):
                shown = f"{shown[:40]}… ({len(shown):,} characters)"
            out.append({"kind": "image", "url": safe_url(url), "text": shown})
        else:
            out.append({"kind": "other", "type": str(p.get("type", "part")),
                        "text": orjson.dumps(p, option=orjson.OPT_INDENT_2).decode()})  # fmt: skip
    return out


def tool_calls(calls: Any) -> list[dict[str, str]]:
    out = []
    for c in calls if isinstance(calls, list) else ():
        if not isinstance(c, dict):
            continue
        fn: dict[str, Any] = c["function"] if isinstance(c.get("function"), dict) else {}
        out.append({
            "id": str(c.get("id") or ""),
            "name": str(fn.get("name") or c.get("type") or "?"),
            "arguments": _arguments(fn.get("arguments", "")),
        })  # fmt: skip
    return out


def turn(message: Any) -> dict[str, Any]:
    """One chat message for the conversation view."""
    if not isinstance(message, dict):
        return {"role": "unknown", "parts": [{"kind": "text", "text": str(message)}],
                "tool_calls": [], "name": None, "tool_call_id": None}  # fmt: skip
    role = str(message.get("role") or "unknown")
    return {
        "role": role,
        "name": message.get("name"),
        "tool_call_id": message.get("tool_call_id"),
        "parts": parts(message.get("content")),
        "tool_calls": tool_calls(message.get("tool_calls")),
    }


def completion_turn(completion: Any) -> dict[str, Any] | None:
    if completion is None:
        return None
    if isinstance(completion, dict):
        return turn({"role": "assistant", **completion})
    return turn({"role": "assistant", "content": completion})


def feedback_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: its mean and count, for the list's feedback column."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get("value") is not None:
            by.setdefault(r["metric"], []).append(float(r["value"]))
    return [{"metric": m, "mean": sum(v) / len(v), "n": len(v)} for m, v in sorted(by.items())]


def curl_get(origin: str, interaction_id: str, keyed: bool) -> str:
    auth = ' -H "Authorization: Bearer $ISTORE_KEY"' if keyed else ""
    return f"curl -s '{origin}/api/v1/interactions/{quote(interaction_id, safe='')}'{auth}"
