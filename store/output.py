"""Arrow result tables → the bytes of an output format, in chunks (for streaming).

Formats: ``json`` (one document), ``ndjson``, ``csv`` (nested values as JSON text),
``parquet``, ``arrow`` (Arrow IPC stream). Shared by ``POST /sql`` and ``istore sql``.

In the text formats values read as the rest of the API writes them: a map (``labels``)
is a JSON object, and a timestamp is ISO-8601 in UTC with ``Z``, microseconds only when
there are some (``2026-11-25T10:00:05Z``, ``2026-11-25T10:00:05.250000Z``); a
timestamp without a time zone is UTC (the SQL session's zone)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.errors import InvalidQuery

FORMATS = ("json", "ndjson", "csv", "parquet", "arrow")
MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_CHUNK_ROWS = 4096


JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=JSON_OPTIONS)


def rows(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """Python rows (maps as dicts), or InvalidQuery when a value has no JSON form."""
    try:
        return table.to_pylist(maps_as_pydicts="lossy")  # DuckDB maps have unique keys
    except (OverflowError, ValueError, pa.ArrowException) as exc:
        raise InvalidQuery(
            f"a value in the result cannot be returned as JSON ({exc}); cast it to VARCHAR",
            param="sql",
        ) from exc


def _flat(table: pa.Table) -> pa.Table:
    """Nested columns (maps, structs, lists) as JSON text and timestamps as ISO-8601
    text with ``Z``, for CSV."""
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        t = field.type
        if pa.types.is_nested(t) or pa.types.is_map(t):
            values = [None if v is None else _dumps(v).decode()
                      for v in col.to_pylist(maps_as_pydicts="lossy")]  # fmt: skip
            col = pa.chunked_array([pa.array(values, pa.string())])
        elif pa.types.is_timestamp(t):
            col = iso_z(col)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def iso_z(col: Any) -> Any:
    """Timestamps → ``2026-11-25T10:00:05Z`` (``.250000`` when there is a fraction): the
    form of ``datetime.isoformat`` that the API writes, in UTC."""
    if col.type.tz not in (None, "UTC", "Etc/UTC", "+00:00"):
        col = pc.cast(col, pa.timestamp(col.type.unit, tz="UTC"))
    text = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(
        pc.replace_substring_regex(text, pattern=r"\.0+$", replacement=""), "Z", ""
    )


def encode(table: pa.Table, fmt: str, *, truncated: bool = False) -> Iterator[bytes]:
    """The table in format ``fmt``, chunk by chunk."""
    if fmt == "json":
        yield _dumps(
            {
                "object": "list",
                "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                "data": rows(table),
                "truncated": truncated,
            }
        )
    elif fmt == "ndjson":
        for batch in table.to_batches(_CHUNK_ROWS):
            yield b"".join(_dumps(r) + b"\n" for r in rows(batch))
    elif fmt == "csv":  # polars: quotes only where needed (pyarrow quotes every string)
        flat = _flat(table)
        for i, batch in enumerate(flat.to_batches(_CHUNK_ROWS) or [flat]):
            df = pl.from_arrow(batch)
            assert isinstance(df, pl.DataFrame)
            yield df.write_csv(include_header=i == 0).encode()
    elif fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        yield buf.getvalue()
    elif fmt == "arrow":
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(_CHUNK_ROWS):
                writer.write_batch(batch)
                yield sink.getvalue()
                sink.seek(0)
                sink.truncate()
        yield sink.getvalue()
    else:
        raise InvalidQuery(f"format: must be one of {', '.join(FORMATS)}", param="format")
