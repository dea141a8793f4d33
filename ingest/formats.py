"""Other shapes an interaction arrives in, mapped to the store's own (``InteractionIn``).

- **Gateway log** (``POST /interactions`` and ``istore import``): what an
  OpenAI-compatible gateway has at hand after a call::

      {"request": <chat.completions.create body>, "response": <ChatCompletion>,
       "use_case"?, "labels"?, "latency_ms"?, "ttft_ms"?, ...}

  ``use_case`` and the model come from ``request.model`` when it is ``use_case/model``
  (a top-level ``use_case`` wins); labels from ``request.metadata`` plus ``labels``;
  usage, content and tool calls from ``response.choices[i].message``; every other
  request parameter (temperature, tools, response_format …) into ``params``. A
  response with several choices gives one interaction per choice. The response's
  ``id`` becomes the interaction id (``<id>:<i>`` for choice i > 0), so logging the
  same call twice stores it once. No response and an ``error``: a failed call. What
  answered is kept as labels, as the gateway does: ``upstream_model`` (the response's
  ``model``) and ``finish_reason`` (the choice's); a client's labels of those names
  are replaced.
- **OpenAI fine-tuning JSONL** (``istore import``): ``{"messages": [..., assistant]}``;
  the last assistant message is the completion; ``tools``/``parallel_tool_calls`` go
  to ``params``. Without an ``id`` the example gets one from a hash of its content
  (use case, messages, completion, params, labels): importing a file twice stores it
  once, and so does an example repeated in a file.
- **Adaptive dataset JSONL** (``istore import``): ``{"messages", "completion",
  "feedbacks"?: {metric: value}}``.

Errors name fields as the client sent them (``request.messages[2].role``)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from store.errors import ValidationFailed
from store.jsonutil import dumps
from store.schema import MAX_LABEL_VALUE

GATEWAY_KEYS = frozenset(
    {
        "request", "response", "use_case", "project", "labels", "latency_ms", "ttft_ms", "id",
        "session_id", "user", "ab_campaign", "created_at", "error", "status", "feedbacks",
    }
)  # fmt: skip
# Labels that say what answered a logged call (the gateway sets the same ones).
GATEWAY_LABELS = ("upstream_model", "finish_reason")
# Request fields the store keeps elsewhere; everything else is a parameter.
_NOT_PARAMS = frozenset({"model", "messages", "metadata", "user", "store"})
# Keys of a response message that carry nothing when null or empty.
_EMPTY_OK = frozenset({"refusal", "annotations", "audio", "function_call", "tool_calls"})


def _fail(where: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {message}", param=where)


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def is_gateway_log(raw: Any) -> bool:
    return isinstance(raw, dict) and "request" in raw and "messages" not in raw


def from_gateway_log(
    raw: dict[str, Any], prefix: str = ""
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """One gateway log record → interaction objects (one per response choice), each
    with where its fields came from (``{"messages": "request.messages", …}``), for
    error messages that name what the client sent (``rename_error``)."""
    unknown = sorted(set(raw) - GATEWAY_KEYS)
    if unknown:
        raise _fail(_at(prefix, unknown[0]), "unknown field in a gateway log record")
    request = raw["request"]
    if not isinstance(request, dict):
        raise _fail(_at(prefix, "request"), "must be the chat.completions.create request body")
    response = raw.get("response")
    if response is not None and not isinstance(response, dict):
        raise _fail(_at(prefix, "response"), "must be a ChatCompletion object or null")

    sources = {
        "messages": "request.messages", "metadata": "request.metadata", "params": "request",
        "model": "request.model", "usage": "response.usage",
    }  # fmt: skip
    use_case = raw.get("use_case", raw.get("project"))
    model = request.get("model")
    if isinstance(model, str) and "/" in model:
        head, _, tail = model.partition("/")
        if use_case is None or use_case == head:
            use_case, model = head, tail
            if "use_case" not in raw and "project" not in raw:
                sources["use_case"] = "request.model"
    if use_case is None:
        raise _fail(
            _at(prefix, "use_case"),
            "required: give use_case, or request.model as 'use_case/model'",
        )
    params = {k: v for k, v in request.items() if k not in _NOT_PARAMS}
    base: dict[str, Any] = {
        "use_case": use_case,
        "model": model if model is not None else (response or {}).get("model"),
        "messages": request.get("messages"),
        "params": params or None,
    }
    if request.get("metadata") is not None:
        base["metadata"] = request["metadata"]
    if request.get("user") is not None:
        base["user"] = request["user"]
        sources["user"] = "request.user"
    if model is None and (response or {}).get("model") is not None:
        sources["model"] = "response.model"
    for key in ("labels", "latency_ms", "ttft_ms", "session_id", "user", "ab_campaign",
                "created_at", "error", "status", "feedbacks"):  # fmt: skip
        if raw.get(key) is not None:
            base[key] = raw[key]
            sources.pop(key, None)
    error = raw.get("error")
    if isinstance(error, dict):  # OpenAI's error object
        message = error.get("message")
        base["error"] = message if isinstance(message, str) else dumps(error)

    if response is None:
        if raw.get("error") is None:
            raise _fail(_at(prefix, "response"), "required unless the call failed (error)")
        base.setdefault("status", "error")
        if raw.get("id") is not None:
            base["id"] = raw["id"]
        return [(base, sources)]

    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _fail(_at(prefix, "response.choices"), "must be a non-empty list")
    usage = response.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise _fail(_at(prefix, "response.usage"), "must be an object")
        base["usage"] = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens",
                                                   "total_tokens")}  # fmt: skip
    if "created_at" not in base and response.get("created") is not None:
        base["created_at"] = response["created"]
        sources["created_at"] = "response.created"
    rid = raw.get("id")
    if rid is None and response.get("id") is not None:
        rid = response["id"]
        sources["id"] = "response.id"
    out = []
    for i, choice in enumerate(choices):
        where = _at(prefix, f"response.choices[{i}]")
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise _fail(where + ".message", "must be an assistant message object")
        item = dict(base)
        item["completion"] = completion_of(choice["message"])
        _what_answered(item, response.get("model"), choice.get("finish_reason"))
        if rid is not None:
            item["id"] = rid if i == 0 or not isinstance(rid, str) else f"{rid}:{i}"
        out.append((item, {**sources, "completion": f"response.choices[{i}].message"}))
    return out


def _what_answered(item: dict[str, Any], model: Any, finish_reason: Any) -> None:
    """Set the ``GATEWAY_LABELS`` on ``item`` (replacing the client's of those names)."""
    labels, metadata = item.get("labels"), item.get("metadata")
    if not isinstance(labels, dict | None) or not isinstance(metadata, dict | None):
        return  # not labels at all: validation says so
    labels = dict(labels or {})
    if metadata:
        item["metadata"] = {k: v for k, v in metadata.items() if k not in GATEWAY_LABELS}
    for key, value in zip(GATEWAY_LABELS, (model, finish_reason), strict=True):
        labels.pop(key, None)
        if isinstance(value, str) and value:
            labels[key] = value[:MAX_LABEL_VALUE]
    item["labels"] = labels or None


def completion_of(message: dict[str, Any]) -> str | dict[str, Any] | None:
    """An assistant message → the stored completion: its text when that is all it
    holds, else the message without its empty fields."""
    kept = {
        k: v for k, v in message.items()
        if not (k in _EMPTY_OK and (v is None or v == []))
    }  # fmt: skip
    if set(kept) <= {"role", "content"} and isinstance(kept.get("content"), str | None):
        return kept.get("content")
    return kept


def rename_error(exc: ValidationFailed, prefix: str, sources: dict[str, str]) -> ValidationFailed:
    """An error about a converted gateway record → the field the client sent."""
    param = exc.param or ""
    rest = param[len(prefix) :].lstrip(".") if param.startswith(prefix) else param
    for ours, theirs in sources.items():
        if rest == ours or rest.startswith((ours + ".", ours + "[")):
            new = _at(prefix, theirs + rest[len(ours) :])
            exc.message = exc.message.replace(param, new, 1)
            exc.param = new
            break
    return exc


def from_openai_finetune(
    raw: dict[str, Any], use_case: str | None, prefix: str = ""
) -> dict[str, Any]:
    """``{"messages": [..., assistant], "tools"?, "parallel_tool_calls"?}``."""
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(_at(prefix, "messages"), "must be a non-empty list")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise _fail(
            _at(prefix, f"messages[{len(messages) - 1}]"),
            "the last message of a fine-tuning example must be the assistant's",
        )
    unknown = sorted(set(raw) - {"messages", "tools", "parallel_tool_calls", "functions",
                                 "use_case", "labels", "metadata", "id"})  # fmt: skip
    if unknown:
        raise _fail(_at(prefix, unknown[0]), "unknown field in an OpenAI fine-tuning example")
    params = {k: raw[k] for k in ("tools", "parallel_tool_calls", "functions") if k in raw}
    out: dict[str, Any] = {
        "use_case": raw.get("use_case", use_case),
        "messages": messages[:-1],
        "completion": completion_of(last),
        "params": params or None,
    }
    for key in ("labels", "metadata", "id"):
        if key in raw:
            out[key] = raw[key]
    if out["use_case"] is None:
        raise _fail(_at(prefix, "use_case"), "required: pass --use-case for fine-tuning files")
    if "id" not in raw:
        out["id"] = content_id(out)
    return out


def content_id(item: dict[str, Any]) -> str:
    """``ft-`` and a hash of what makes an example the same example (not its time, which
    a fine-tuning file does not have): the same content gets the same id, so it is
    stored once. The use case is part of it, since an id names one interaction in the
    whole store."""
    keys = ("use_case", "messages", "completion", "params", "labels", "metadata")
    canon = orjson.dumps({k: item.get(k) for k in keys}, option=orjson.OPT_SORT_KEYS)
    return "ft-" + hashlib.sha256(canon).hexdigest()[:40]


def from_adaptive_dataset(raw: dict[str, Any], use_case: str | None) -> dict[str, Any]:
    """``{"messages", "completion", "feedbacks"?: {metric: value} | [...]}``: an
    interaction without a use case (``use_case`` fills it), feedback as a map."""
    out = dict(raw)
    if use_case is not None and "use_case" not in raw and "project" not in raw:
        out["use_case"] = use_case
    fb = raw.get("feedbacks")
    if isinstance(fb, dict):
        out["feedbacks"] = [{"metric": k, "value": v} for k, v in fb.items()]
    return out


def is_openai_finetune(raw: Any) -> bool:
    if not isinstance(raw, dict) or "completion" in raw:
        return False
    messages = raw.get("messages")
    return (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "assistant"
    )
