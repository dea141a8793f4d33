"""A fast validator for the common shape of an interaction, in plain Python.

``canonical()`` accepts a strict subset of what ``InteractionIn`` accepts and returns
the same canonical dict that ``InteractionIn.canonical()`` does; anything it is not
sure about returns ``None`` and goes through pydantic, which also produces the
precise error. ``tests/test_fastpath.py`` checks the two agree."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, get_args

from ingest.models import (
    ID_RE,
    MAX_INT,
    MAX_MS,
    MAX_TIME,
    MAX_VALUE,
    MIN_TIME,
    FeedbackItem,
    InteractionIn,
    Role,
    Usage,
)
from store.schema import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, USE_CASE_RE

# The rules come from the models (one definition), not restated here.
ROLES = frozenset(get_args(Role))
KNOWN = frozenset(InteractionIn.model_fields)
_USAGE_KEYS = tuple(Usage.model_fields)
# The ISO-8601 forms both this path and pydantic read the same way.
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?\Z")


def _opt_str(v: Any) -> bool:
    return v is None or type(v) is str


def _number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def _content_and_tools(m: dict[str, Any]) -> bool:
    """``content`` (text, null or parts with a string ``type``) and ``tool_calls``."""
    content = m.get("content")
    if not (content is None or type(content) is str):
        if type(content) is not list:
            return False
        for part in content:
            if type(part) is not dict or type(part.get("type")) is not str:
                return False
    tool_calls = m.get("tool_calls")
    if tool_calls is not None:
        if type(tool_calls) is not list or any(type(t) is not dict for t in tool_calls):
            return False
    return True


def _message(m: Any) -> bool:
    if type(m) is not dict or type(m.get("role")) is not str or m["role"] not in ROLES:
        return False
    return _content_and_tools(m) and _opt_str(m.get("name")) and _opt_str(m.get("tool_call_id"))


def _completion(c: Any) -> bool:
    """An assistant message given as the completion (AssistantCompletion)."""
    if type(c) is not dict or c.get("role", "assistant") != "assistant":
        return False
    return _content_and_tools(c) and _opt_str(c.get("refusal"))


_FEEDBACK_KEYS = frozenset(FeedbackItem.model_fields)


def _feedbacks(v: Any) -> list[dict[str, Any]] | None:
    """FeedbackItem.model_dump() of each item, or None to let pydantic decide."""
    if type(v) is not list:
        return None
    out = []
    for f in v:
        if type(f) is not dict or not _FEEDBACK_KEYS.issuperset(f):
            return None
        metric, value = f.get("metric"), f["value"] if "value" in f else None
        if type(metric) is not str or not 0 < len(metric) <= 128:
            return None
        if type(value) is not bool:
            if not (type(value) is int or type(value) is float):
                return None
            if not -MAX_VALUE <= value <= MAX_VALUE:
                return None
            value = float(value)
        if not (_opt_str(f.get("reason")) and _opt_str(f.get("details"))):
            return None
        if not _opt_str(f.get("user_id")):
            return None
        created = _time(f.get("created_at"))
        if created is False:
            return None
        out.append({"metric": metric, "value": value, "reason": f.get("reason"),
                    "details": f.get("details"), "user_id": f.get("user_id"),
                    "created_at": created})  # fmt: skip
    return out


def _labels(v: Any) -> bool:
    if v is None:
        return True
    if type(v) is not dict or len(v) > MAX_LABELS:
        return False
    for k, x in v.items():
        if type(x) is not str or not 0 < len(k) <= MAX_LABEL_KEY or len(x) > MAX_LABEL_VALUE:
            return False
    return True


def _time(v: Any) -> datetime | None | bool:
    """datetime, None (absent), or False (let pydantic decide)."""
    if v is None:
        return None
    if type(v) is str:
        if not _ISO.match(v):
            return False
        try:
            ts = datetime.fromisoformat(v)
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        except (ValueError, OverflowError):
            return False
    elif _number(v) and abs(v) <= 2e10:  # larger: milliseconds, pydantic's path
        ts = datetime.fromtimestamp(v, UTC)
    else:
        return False
    return ts if MIN_TIME <= ts < MAX_TIME else False


_CLASH = object()  # aliases that disagree: not a valid value of any type


def _alias(d: dict[str, Any], name: str, alias: str) -> Any:
    """The value under ``name`` or its ``alias``; _CLASH when both are set and differ."""
    value, other = d.get(name), d.get(alias)
    if value is None:
        return other
    return _CLASH if other is not None and other != value else value


def canonical(d: Any) -> dict[str, Any] | None:
    if type(d) is not dict or not KNOWN.issuperset(d):
        return None
    use_case = _alias(d, "use_case", "project")
    if type(use_case) is not str or not USE_CASE_RE.match(use_case):
        return None
    model = _alias(d, "model", "model_service")
    id_ = d.get("id")
    if not _opt_str(model) or not (id_ is None or (type(id_) is str and ID_RE.match(id_))):
        return None
    messages = d.get("messages")
    if type(messages) is not list or not messages or not all(map(_message, messages)):
        return None
    completion = d.get("completion")
    if not (_opt_str(completion) or _completion(completion)):
        return None
    labels, metadata = d.get("labels"), d.get("metadata")
    if not (_labels(labels) and _labels(metadata)):
        return None
    if labels is not None and metadata is not None:
        return None
    for key in ("user", "session_id", "ab_campaign", "error"):
        if not _opt_str(d.get(key)):
            return None
    created = _time(d.get("created_at"))
    if created is False:
        return None
    usage = d.get("usage")
    if usage is not None:
        if type(usage) is not dict:
            return None
        for k in _USAGE_KEYS:
            x = usage.get(k)
            if not (x is None or (type(x) is int and 0 <= x <= MAX_INT)):
                return None
        usage = {k: usage.get(k) for k in _USAGE_KEYS}
    for key in ("latency_ms", "ttft_ms"):
        x = d.get(key)
        if not (x is None or (_number(x) and 0 <= x <= MAX_MS)):
            return None
    params = d.get("params")
    status = d.get("status", "ok")
    if not (params is None or type(params) is dict) or status not in ("ok", "error"):
        return None
    feedbacks = _feedbacks(d["feedbacks"]) if d.get("feedbacks") is not None else []
    if feedbacks is None:
        return None
    return {
        "id": id_,
        "use_case": use_case,
        "model": model,
        "messages": messages,
        "completion": completion,
        "labels": labels if labels is not None else metadata,
        "user": d.get("user"),
        "session_id": d.get("session_id"),
        "ab_campaign": d.get("ab_campaign"),
        "created_at": created,
        "usage": usage,
        "latency_ms": d.get("latency_ms"),
        "ttft_ms": d.get("ttft_ms"),
        "params": params,
        "status": status,
        "error": d.get("error"),
        "feedbacks": feedbacks,
    }
