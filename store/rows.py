"""Rows in flight: column lists of JSON-native values, as the write-ahead log holds them.

Ingest builds ``Columns`` (timestamps as integer microseconds, days as integer days,
maps as dicts) because that is cheap per request; Arrow tables are built from them
in bulk, off the request path, when a reader or the flusher needs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

Columns = dict[str, list[Any]]


def encode_tables(tables: dict[str, Columns]) -> bytes:
    """One write-ahead log record: rows of one or more tables, written atomically."""
    return orjson.dumps(tables)


def decode_tables(payload: bytes) -> dict[str, Columns]:
    tables = orjson.loads(payload)
    if not isinstance(tables, dict):
        raise ValueError("write-ahead log record is not a table map")
    return tables


def num_rows(cols: Columns) -> int:
    return len(next(iter(cols.values()))) if cols else 0


def select(cols: Columns, keep: Sequence[bool]) -> Columns:
    return {k: [x for x, ok in zip(v, keep, strict=True) if ok] for k, v in cols.items()}


def to_arrow(schema: pa.Schema, chunks: Sequence[Columns]) -> pa.Table:
    if not chunks:
        return schema.empty_table()
    arrays = []
    for f in schema:
        values: list[Any] = []
        for c in chunks:
            values.extend(c[f.name])
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
