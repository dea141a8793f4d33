"""Request bodies → canonical interaction dicts: one object, a JSON array, or NDJSON.

Every error names where it is: ``body[3].messages[0].role`` for the fourth item of
an array or the fourth line of NDJSON. Nothing is stored unless all items validate.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from ingest.fastpath import canonical
from ingest.models import InteractionIn
from store.errors import InvalidRequest, ValidationFailed

_ONE = TypeAdapter(InteractionIn)

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


def loc_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
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


def parse_ndjson(body: bytes) -> list[Any]:
    lines = [line for line in body.splitlines() if line.strip()]
    try:  # one parser call for the whole body; line by line only to locate an error
        items = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(items) == len(lines):
            return items  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        pass
    items = []
    for n, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(
                f"line {n + 1} of the NDJSON body is not valid JSON: {exc}", param=f"body[{n}]"
            ) from None
    return items


def validate(raw: Any, prefix: str = "") -> dict[str, Any]:
    """One interaction object → its canonical dict, or ValidationFailed naming the field."""
    fast = canonical(raw)
    if fast is not None:
        return fast
    try:
        return _ONE.validate_python(raw).canonical()
    except ValidationError as exc:
        _raise(exc, prefix)
    raise AssertionError("unreachable")


def parse_interactions(body: bytes, content_type: str) -> tuple[list[dict[str, Any]], bool]:
    """The validated interactions, and whether the body was a single object."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in NDJSON_TYPES:
        raw: Any = parse_ndjson(body)
        single = False
    else:
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
        single = isinstance(raw, dict)
    if single:
        return [validate(raw)], True
    if not isinstance(raw, list):
        raise InvalidRequest(
            "the body must be an interaction object, an array of them, or NDJSON", param="body"
        )
    if not raw:
        raise ValidationFailed("the body holds no interaction", param="body")
    return [validate(item, f"body[{n}]") for n, item in enumerate(raw)], False
