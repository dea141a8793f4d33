"""Request bodies → canonical interaction dicts: one object, a JSON array, or NDJSON.

Every error names where it is: ``body[3].messages[0].role`` for the fourth item of
an array or the fourth line of NDJSON. Nothing is stored unless all items validate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from ingest.fastpath import canonical
from ingest.formats import (
    completion_of,
    from_adaptive_dataset,
    from_gateway_log,
    from_openai_finetune,
    is_gateway_log,
    is_openai_finetune,
    rename_error,
)
from ingest.models import InteractionIn
from store.errors import InvalidRequest, PayloadTooLarge, ValidationFailed
from store.jsonutil import loads

_ONE = TypeAdapter(InteractionIn)
T = TypeVar("T")

NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
)


def _is_tag(part: str) -> bool:
    """pydantic's names for union members and validators, not field names."""
    return (
        part in ("str", "int", "float", "bool")
        or any(c in part for c in "[(-")
        or (part[:1].isupper())
    )


def loc_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_tag(part):
            out += f".{part}" if out else str(part)
    return out


def _raise(exc: ValidationError, prefix: str) -> None:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and field.isidentifier():  # a model-level check names its own field
        loc, msg = (*loc, field), rest
    param = loc_path(loc, prefix) or prefix or None
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    raise ValidationFailed(f"{where}{msg}{more}", param=param) from None


def parse_ndjson(body: bytes) -> list[tuple[int, Any]]:
    """(line index, object) for every non-blank line."""
    items = []
    for n, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            items.append((n, loads(line)))
        except (orjson.JSONDecodeError, ValueError, UnicodeError) as exc:
            raise InvalidRequest(
                f"line {n + 1} of the NDJSON body is not valid JSON: {exc}", param=f"body[{n}]"
            ) from None
    return items


# Fields of other APIs' shapes sent here, and what this one calls them.
_ANSWER = "the answer goes in completion (a string, or an assistant message)"
MISNAMED = {
    "prompt": 'send the conversation as messages: [{"role": "user", "content": "…"}] '
    "(a prompt string is not a chat); " + _ANSWER,
    "input": 'send the conversation as messages: [{"role": "user", "content": "…"}]; ' + _ANSWER,
    "output": _ANSWER,
    "answer": _ANSWER,
    "response": _ANSWER + '; a whole call is logged as {"request": …, "response": …}',
    "interaction_id": "an interaction's own id is id (an idempotency key)",
    "completion_id": "an interaction's own id is id (an idempotency key)",
    "tags": 'labels are a map of strings: labels: {"key": "value"}',
}


def validate(raw: Any, prefix: str = "") -> dict[str, Any]:
    """One interaction object → its canonical dict, or ValidationFailed naming the field."""
    fast = canonical(raw)
    if fast is not None:
        return fast
    try:
        return _ONE.validate_python(raw).canonical()
    except ValidationError as exc:
        misnamed(raw, prefix, "an interaction")
        _raise(exc, prefix)
    raise AssertionError("unreachable")


def misnamed(raw: Any, prefix: str, what: str) -> None:
    """ValidationFailed saying how to fix a field of another API's shape, if ``raw``
    (which did not validate) has one."""
    if not isinstance(raw, dict):
        return
    for name, fix in MISNAMED.items():
        if name in raw:
            where = f"{prefix}.{name}" if prefix else name
            raise ValidationFailed(f"{where}: not a field of {what}; {fix}", param=where)


def split_body(
    body: bytes, content_type: str, what: str = "interaction"
) -> tuple[list[tuple[int, Any]], bool]:
    """The items of a body that is one JSON object, a JSON array of them, or NDJSON,
    numbered by array index or line; and whether it was a single object."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in NDJSON_TYPES:
        numbered = parse_ndjson(body)
    else:
        try:
            raw = loads(body)
        except (orjson.JSONDecodeError, ValueError, UnicodeError) as exc:
            raise InvalidRequest(
                f"the body is not valid JSON: {exc}{_ndjson_hint(body)}", param="body"
            ) from None
        if isinstance(raw, dict):
            return [(0, raw)], True
        if not isinstance(raw, list):
            raise InvalidRequest(
                f"the body must be an {what} object, an array of them, or NDJSON", param="body"
            )
        numbered = list(enumerate(raw))
    if not numbered:
        raise ValidationFailed(f"the body holds no {what}", param="body")
    return numbered, False


def _ndjson_hint(body: bytes) -> str:
    """A hint when a body sent as JSON is NDJSON (one object per line)."""
    first, _, rest = body.lstrip().partition(b"\n")
    if not rest.strip():
        return ""
    try:
        loads(first)
    except (orjson.JSONDecodeError, ValueError, UnicodeError):
        return ""
    return (
        "; it looks like NDJSON (one JSON object per line): send it with "
        "Content-Type: application/x-ndjson"
    )


def validate_model(adapter: TypeAdapter[T], raw: Any, prefix: str = "") -> T:
    """``raw`` as the adapter's type, or ValidationFailed naming the field."""
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        _raise(exc, prefix)
    raise AssertionError("unreachable")


def expand(
    raw: Any,
    prefix: str = "",
    *,
    files: bool = False,
    use_case: str | None = None,
    limits: Limits | None = None,
) -> list[dict[str, Any]]:
    """One item of a body → canonical interactions, within ``limits``. An interaction
    object gives itself; a gateway log record one per response choice
    (``ingest.formats``). With ``files`` (``istore import``) also OpenAI fine-tuning
    and Adaptive dataset lines, ``use_case`` filling in a missing use case."""
    if is_gateway_log(raw):
        out = []
        for item, sources in from_gateway_log(raw, prefix):
            try:
                canon = validate(item, prefix)
                if limits is not None:
                    check_limits(canon, limits, prefix)
            except ValidationFailed as exc:
                raise rename_error(exc, prefix, sources) from None
            out.append(canon)
        return out
    if files:
        if is_openai_finetune(raw):
            raw = from_openai_finetune(raw, use_case, prefix)
        elif isinstance(raw, dict):
            raw = from_adaptive_dataset(raw, use_case)
    else:
        raw = split_last_answer(raw)
    canon = validate(raw, prefix)
    if limits is not None:
        check_limits(canon, limits, prefix)
    return [canon]


def split_last_answer(raw: Any) -> Any:
    """An interaction whose messages end with the assistant's answer and that has no
    completion (OpenAI's fine-tuning shape) → the prompt in ``messages`` and that answer
    in ``completion``, as ``istore import`` does: else the answer would be part of the
    prompt, and exports would train on an empty completion. Not for a failed call
    (``status: error``), and not when the answer is the only message."""
    if not isinstance(raw, dict) or raw.get("completion") is not None:
        return raw
    if raw.get("status") == "error":
        return raw
    messages = raw.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return raw
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return raw
    answer = completion_of(last)
    if answer is None:  # an empty assistant turn: nothing to move
        return raw
    return {**raw, "messages": messages[:-1], "completion": answer}


@dataclass(frozen=True)
class Limits:
    """Per-request ingest limits (``service.settings``; the label limits are in the model)."""

    max_items: int = 10_000
    max_messages: int = 2_000
    max_content_chars: int = 1 << 20


def content_chars(content: Any) -> int:
    """Characters of a content: a string, or the strings in a list of parts (their
    text, image URLs, audio data …; not the part ``type``)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(content_chars(p) for p in content)
    if isinstance(content, dict):
        return sum(content_chars(v) for k, v in content.items() if k != "type")
    return 0


def check_limits(item: dict[str, Any], limits: Limits, prefix: str) -> None:
    messages = item["messages"]
    if len(messages) > limits.max_messages:
        where = _join(prefix, "messages")
        raise ValidationFailed(
            f"{where}: {len(messages)} messages, at most {limits.max_messages} are accepted",
            param=where,
        )
    for j, m in enumerate(messages):
        n = content_chars(m.get("content"))
        if n > limits.max_content_chars:
            where = _join(prefix, f"messages[{j}].content")
            raise ValidationFailed(
                f"{where}: {n} characters, at most {limits.max_content_chars} are accepted",
                param=where,
            )
    completion = item["completion"]
    n = content_chars(completion.get("content") if isinstance(completion, dict) else completion)
    if n > limits.max_content_chars:
        where = _join(prefix, "completion")
        raise ValidationFailed(
            f"{where}: {n} characters, at most {limits.max_content_chars} are accepted",
            param=where,
        )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_interactions(
    body: bytes,
    content_type: str,
    *,
    files: bool = False,
    use_case: str | None = None,
    limits: Limits | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """The validated interactions, and whether the body was a single one."""
    items, _, single = parse_located(
        body, content_type, files=files, use_case=use_case, limits=limits
    )
    return items, single


def parse_located(
    body: bytes,
    content_type: str,
    *,
    files: bool = False,
    use_case: str | None = None,
    limits: Limits | None = None,
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """``parse_interactions``, plus where each interaction is in the body (``body[3]``,
    or "" for a single object), for errors found later (e.g. a forbidden use case)."""
    numbered, single = split_body(body, content_type)
    if limits is not None and len(numbered) > limits.max_items:
        _too_many(len(numbered), limits)
    out: list[dict[str, Any]] = []
    wheres: list[str] = []
    for n, raw in numbered:
        prefix = "" if single else f"body[{n}]"
        items = expand(raw, prefix, files=files, use_case=use_case, limits=limits)
        out.extend(items)
        wheres.extend([prefix] * len(items))
    if limits is not None and len(out) > limits.max_items:
        _too_many(len(out), limits)  # response choices count
    return out, wheres, single and len(out) == 1


def _too_many(n: int, limits: Limits) -> None:
    raise PayloadTooLarge(
        f"the body holds {n} interactions; at most {limits.max_items} are accepted per request",
        param="body",
    )
