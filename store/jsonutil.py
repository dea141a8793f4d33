"""JSON with exact integers of any size.

Parsing uses pydantic-core's parser (jiter): as fast as orjson here, and it keeps
integers beyond 64 bits exact where orjson turns them into floats. Writing uses
orjson, falling back to the standard library for such integers."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic_core import from_json


def loads(data: bytes | str) -> Any:
    """Parse JSON. Invalid JSON (lone surrogates, NaN literals included) → ValueError."""
    return from_json(data, allow_inf_nan=False)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any, default: Any = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
        return text.encode()
