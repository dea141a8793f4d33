"""Ingest validation cost per row: the fast path against pydantic, on the same bytes.

    python bench/validate.py [--rows 3000] [--repeat 5]

Parses and validates the sample's rows (``sample_data/generate.py``, seed 7; realistic,
~1.8 KB each) as NDJSON three ways:
``parse_interactions`` as the server runs it (fast path, pydantic only for what it
does not accept), the same with the fast path switched off (pydantic for every row),
and the same rows as gateway log records (``{"request", "response"}``). Prints the
median µs per row and the ratios."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import orjson

import ingest.parse as parse
from sample_data.generate import dumps, generate


def _gateway(row: dict[str, Any], i: int) -> dict[str, Any]:
    completion = row.get("completion")
    message = completion if isinstance(completion, dict) else {"role": "assistant",
                                                               "content": completion}  # fmt: skip
    return {
        "request": {"model": f"{row['use_case']}/{row.get('model') or 'm'}",
                    "messages": row["messages"], "metadata": row.get("labels"),
                    "temperature": 0.2},  # fmt: skip
        "response": {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1767225600,
                     "model": "upstream", "choices": [{"index": 0, "finish_reason": "stop",
                                                       "message": message}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                               "total_tokens": 15}},
    }  # fmt: skip


def _time(body: bytes, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        items, _ = parse.parse_interactions(body, "application/x-ndjson", limits=parse.Limits())
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e6 / len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    lines = [dumps(x).encode() for x in generate(args.rows, seed=7)]  # the sample's rows
    native = b"\n".join(lines)
    rows = [orjson.loads(x) for x in lines]
    gateway = b"\n".join(orjson.dumps(_gateway(r, i)) for i, r in enumerate(rows))

    fast = _time(native, args.repeat)
    gw = _time(gateway, args.repeat)
    real = parse.canonical
    parse.canonical = lambda d: None  # type: ignore[assignment]
    try:
        slow = _time(native, args.repeat)
    finally:
        parse.canonical = real
    print(f"rows: {len(lines)} (median of {args.repeat} runs, parse + validate + limits)")
    print(f"fast path          {fast:7.1f} µs/row")
    print(f"pydantic only      {slow:7.1f} µs/row   ({slow / fast:.1f}x the fast path)")
    print(f"gateway log format {gw:7.1f} µs/row   ({gw / fast:.1f}x the fast path)")


if __name__ == "__main__":
    main()
