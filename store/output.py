"""SQL results → the bytes of an output format, chunk by chunk, within the query's limits.

Formats: ``json`` (one document), ``ndjson``, ``csv`` (nested values as JSON text),
``parquet``, ``arrow`` (Arrow IPC stream). Shared by ``POST /sql`` and ``istore sql``.

Encoding is where a small result in DuckDB becomes a large one: a list of a thousand
one-byte structs is a thousand Python dicts. So rows are converted a *piece* at a time,
a piece bounded by an estimate of the Python objects it makes (``_weights``), never a
whole table; between pieces the query's guard is checked (the deadline and memory
ceiling keep counting while we encode) and the GIL is let go, so other requests run.
``spool`` collects the chunks up to a byte budget in a temporary file (memory up to a
few MiB, then disk), so a result is either whole and its size known, or a clean 400
before the first byte is sent.

In the text formats values read as the rest of the API writes them: a map (``labels``)
is a JSON object, and a timestamp is ISO-8601 in UTC with ``Z``, microseconds only when
there are some (``2026-11-25T10:00:05Z``, ``2026-11-25T10:00:05.250000Z``); a
timestamp without a time zone is UTC (the SQL session's zone).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
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
# One piece converts to about this many Python objects (~10 ms of GIL, a few MiB).
PIECE_WEIGHT = 16_384
# A single row bigger than this has no JSON/CSV form here (Arrow and Parquet have no limit).
MAX_ROW_WEIGHT = 2_000_000
_STRING_BYTES_PER_UNIT = 256
# Parquet row groups of about this many rows (or bytes of Arrow data), whichever first.
_ROW_GROUP_ROWS = 65_536
_ROW_GROUP_BYTES = 32 << 20
SPOOL_MEMORY_BYTES = 8 << 20


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


# What the encoders raise on a value their format cannot hold (an infinite date in CSV,
# an interval in Parquet, bytes in CSV); polars panics are BaseExceptions.
_UNENCODABLE = (
    pa.ArrowException,
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    ValueError,
    OverflowError,
    TypeError,
)


@contextlib.contextmanager
def _encoding(fmt: str) -> Iterator[None]:
    try:
        yield
    except _UNENCODABLE as exc:
        first = str(exc).split("\n")[0]
        raise InvalidQuery(
            f"a value in the result cannot be written as {fmt} ({first}); cast it to VARCHAR "
            "or ask for another format",
            param="sql",
        ) from exc


def _weights(arr: pa.Array) -> np.ndarray:
    """Per row of ``arr``: about how many Python objects ``to_pylist`` makes of it
    (strings count their bytes too). Vectorised: costs far less than converting."""
    t = arr.type
    n = len(arr)
    if pa.types.is_struct(t):
        w = np.ones(n, np.int64)
        fields = arr.flatten() if arr.offset else [arr.field(i) for i in range(t.num_fields)]
        for child in fields:
            w += _weights(child)
        return w
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        child = _weights(arr.values)
        cum = np.concatenate(([0], np.cumsum(child)))
        return cum[offsets[1:]] - cum[offsets[:-1]] + 1
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        child = _weights(arr.values)
        cum = np.concatenate(([0], np.cumsum(child)))
        starts = (np.arange(n, dtype=np.int64) + arr.offset) * size
        return cum[starts + size] - cum[starts] + 1
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
        return 1 + lengths.astype(np.int64) // _STRING_BYTES_PER_UNIT
    if pa.types.is_union(t):
        return np.full(n, 8, np.int64)
    return np.ones(n, np.int64)


def pieces(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """``batch`` in slices of about ``PIECE_WEIGHT`` objects each (at least a row)."""
    if batch.num_rows == 0:
        return
    w = np.zeros(batch.num_rows, np.int64)
    for col in batch.columns:
        w += _weights(col)
    heaviest = int(w.max())
    if heaviest > MAX_ROW_WEIGHT:
        raise InvalidQuery(
            f"a row of the result is too large to return as JSON or CSV (about {heaviest:,} "
            "values); select less of it, or ask for format=parquet or arrow",
            param="sql",
        )
    cum = np.cumsum(w)
    start = 0
    while start < batch.num_rows:
        base = int(cum[start - 1]) if start else 0
        end = int(np.searchsorted(cum, base + PIECE_WEIGHT, side="right"))
        end = max(end, start + 1)
        yield batch.slice(start, end - start)
        start = end


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested columns (maps, structs, lists) as JSON text and timestamps as ISO-8601
    text with ``Z``, for CSV."""
    cols = []
    for field, col in zip(batch.schema, batch.columns, strict=True):
        t = field.type
        if pa.types.is_nested(t) or pa.types.is_map(t):
            values = [None if v is None else _dumps(v).decode()
                      for v in col.to_pylist(maps_as_pydicts="lossy")]  # fmt: skip
            col = pa.array(values, pa.string())
        elif pa.types.is_timestamp(t):
            col = iso_z(col)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def iso_z(col: Any) -> Any:
    """Timestamps → ``2026-11-25T10:00:05Z`` (``.250000`` when there is a fraction): the
    form of ``datetime.isoformat`` that the API writes, in UTC."""
    if col.type.tz not in (None, "UTC", "Etc/UTC", "+00:00"):
        col = pc.cast(col, pa.timestamp(col.type.unit, tz="UTC"))
    text = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(
        pc.replace_substring_regex(text, pattern=r"\.0+$", replacement=""), "Z", ""
    )


class _Sink(io.RawIOBase):
    """A write-only file that hands its bytes out as they come (``take``) and keeps
    its position, which the Parquet writer needs for the footer's offsets."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def encode(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    fmt: str,
    *,
    truncated: Callable[[], bool] = lambda: False,
    check: Callable[[], None] = lambda: None,
) -> Iterator[bytes]:
    """The rows in format ``fmt``, chunk by chunk. ``truncated()`` is asked after the
    last batch (for the JSON document); ``check()`` between pieces."""
    if fmt not in FORMATS:
        raise InvalidQuery(f"format: must be one of {', '.join(FORMATS)}", param="format")
    if fmt == "json":
        columns = [{"name": f.name, "type": str(f.type)} for f in schema]
        yield _dumps({"object": "list", "columns": columns})[:-1] + b',"data":['
        first = True
        for batch in batches:
            for piece in pieces(batch):
                with _encoding(fmt):
                    body = _dumps(rows(piece))[1:-1]
                yield body if first else b"," + body
                first = False
                check()
                time.sleep(0)  # let other threads (the event loop) have the GIL
        yield b'],"truncated":' + _dumps(truncated()) + b"}"
    elif fmt == "ndjson":
        for batch in batches:
            for piece in pieces(batch):
                with _encoding(fmt):
                    lines = b"".join(_dumps(r) + b"\n" for r in rows(piece))
                yield lines
                check()
                time.sleep(0)
    elif fmt == "csv":  # polars: quotes only where needed (pyarrow quotes every string)
        header = True
        for batch in batches:
            for piece in pieces(batch):
                with _encoding(fmt):
                    df = pl.from_arrow(_flat(piece))
                    assert isinstance(df, pl.DataFrame)
                    text = df.write_csv(include_header=header).encode()
                yield text
                header = False
                check()
                time.sleep(0)
        if header:  # no rows: the header alone
            with _encoding(fmt):
                df = pl.from_arrow(_flat(pa.RecordBatch.from_pylist([], schema=schema)))
                assert isinstance(df, pl.DataFrame)
                text = df.write_csv(include_header=True).encode()
            yield text
    elif fmt == "parquet":
        sink = _Sink()
        with _encoding(fmt):
            writer = pq.ParquetWriter(sink, schema, compression="zstd")
        try:
            group: list[pa.RecordBatch] = []
            n = size = 0
            for batch in batches:
                group.append(batch)
                n += batch.num_rows
                size += batch.nbytes
                if n >= _ROW_GROUP_ROWS or size >= _ROW_GROUP_BYTES:
                    with _encoding(fmt):
                        writer.write_table(pa.Table.from_batches(group, schema=schema))
                    group, n, size = [], 0, 0
                    yield sink.take()
                    check()
            with _encoding(fmt):
                if group:
                    writer.write_table(pa.Table.from_batches(group, schema=schema))
                writer.close()  # the footer
        except BaseException:
            with contextlib.suppress(*_UNENCODABLE):
                writer.close()
            raise
        yield sink.take()
    else:  # arrow
        sink = _Sink()
        with _encoding(fmt):
            ipc = pa.ipc.new_stream(sink, schema)
        try:
            for batch in batches:
                with _encoding(fmt):
                    ipc.write_batch(batch)
                yield sink.take()
                check()
            with _encoding(fmt):
                ipc.close()  # the end-of-stream marker
        except BaseException:
            with contextlib.suppress(*_UNENCODABLE):
                ipc.close()
            raise
        yield sink.take()


class Spool:
    """An encoded result, whole: in memory up to ``SPOOL_MEMORY_BYTES``, then in an
    unnamed temporary file. Read it once with ``chunks()``; ``close()`` frees it."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(
            max_size=SPOOL_MEMORY_BYTES, dir=None if directory is None else str(directory)
        )
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def in_memory(self) -> bytes | None:
        """The bytes, when they never left memory."""
        rolled = getattr(self._file, "_rolled", True)
        if rolled:
            return None
        self._file.seek(0)
        return self._file.read()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        try:
            self._file.seek(0)
            while chunk := self._file.read(size):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def spool(
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    check: Callable[[], None] = lambda: None,
    directory: str | Path | None = None,
) -> Spool:
    """All of ``chunks`` in a ``Spool``, or InvalidQuery once they pass ``max_bytes``
    (whatever error ``check()`` or the chunks raise ends it too; nothing is kept)."""
    out = Spool(directory)
    try:
        for chunk in chunks:
            out.write(chunk)
            if out.size > max_bytes:
                raise InvalidQuery(
                    f"the result is larger than {max_bytes >> 20} MiB "
                    "(ISTORE_SQL_MAX_RESULT_BYTES); select fewer rows or columns, "
                    "or aggregate",
                    param="sql",
                )
            check()
    except BaseException:
        out.close()
        raise
    return out
