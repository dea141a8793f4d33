"""JSON with exact integers of any size.

orjson is fast but reads integers beyond 64 bits as floats and cannot write them;
the standard library keeps them exact. Bodies that might hold such an integer (a run
of 19+ digits) take the slow exact path, everything else the fast one."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_BIG_INT = re.compile(r"\d{19}")
_BIG_INT_BYTES = re.compile(rb"\d{19}")


def loads(data: bytes | str) -> Any:
    """Parse JSON. Invalid JSON, including lone surrogates, raises ValueError."""
    big = _BIG_INT_BYTES if isinstance(data, bytes) else _BIG_INT
    if big.search(data):  # type: ignore[arg-type]
        value = json.loads(data)
        json.dumps(value, ensure_ascii=False).encode()  # lone surrogates: invalid, as orjson
        return value
    return orjson.loads(data)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any, default: Any = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
        return text.encode()
