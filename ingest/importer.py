"""Bulk import of files into a store (``istore import``, sample loading).

A file is NDJSON (one record per line) or a JSON array of records, either of them
gzipped (``.gz``, or the gzip magic bytes); each record is any of the shapes of
``ingest.formats``. Errors name the file and the record's true line (``line 1234``;
``item 17`` in an array). Chunks are parsed while earlier chunks are being made
durable (a few writes in flight), so parsing and fsync overlap.

A bad record stops the import (``ImportFailed``, with what was stored before it), or
with ``skip_invalid`` is counted and skipped. What was imported stays, and importing
again stores nothing twice for records with an ``id``; OpenAI fine-tuning examples get
one from their content (``ingest.formats.from_openai_finetune``)."""

from __future__ import annotations

import gzip
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from ingest import pipeline
from ingest.parse import expand
from store.ack import Ack
from store.engine import Store, WriteResult
from store.errors import InvalidRequest, StoreError
from store.jsonutil import loads

IN_FLIGHT = 4
SHOWN_SKIPS = 5  # invalid records whose errors are kept (the others are counted)


@dataclass
class ImportResult:
    read: int = 0  # interactions read from valid records
    stored: int = 0  # of them, new (the rest were already stored)
    skipped: int = 0  # invalid records left out (skip_invalid)
    errors: list[str] = field(default_factory=list)  # the first SHOWN_SKIPS skipped, why
    last_good: str | None = None  # where the last record stored before a failure was


class ImportFailed(StoreError):
    """A record that stops the import; ``result`` says what was stored before it.
    Keeps the kind (``type``/``code``) of the error it wraps."""

    def __init__(self, cause: StoreError, where: str, result: ImportResult) -> None:
        super().__init__(f"{where}: {cause.message}", param=cause.param, code=cause.code)
        self.type = cause.type
        self.cause = cause
        self.result = result


class _Counted:
    """The bytes read so far of the file under a stream (compressed bytes for a gzip
    file), for the progress bar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.seen = 0

    def take(self) -> int:
        pos = self.raw.tell()
        n, self.seen = pos - self.seen, pos
        return n


def _open(path: Path) -> tuple[IO[bytes], _Counted]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    magic = raw.read(2)
    raw.seek(0)
    stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if magic == b"\x1f\x8b" else raw
    return stream, _Counted(raw)


def records(
    path: Path, progress: Callable[[int], Any] = lambda n: None
) -> Iterator[tuple[str, Any]]:
    """(where, the record, or the StoreError reading it raised) for each record of the
    file: NDJSON lines (blank ones skipped) or the items of a JSON array. ``progress``
    gets the bytes of the file read, now and then."""
    stream, counted = _open(path)
    try:
        try:
            head = getattr(stream, "peek", lambda n: b"")(64)[:64]
        except (OSError, EOFError) as exc:
            raise InvalidRequest(f"cannot be read: {exc}") from None
        if head.lstrip()[:1] == b"[":
            yield from _array(stream)
            return
        n = 0
        try:
            for n, line in enumerate(stream, 1):  # noqa: B007 - n is read after the loop
                if n % 256 == 0:
                    progress(counted.take())
                if not line.strip():
                    continue
                try:
                    raw = loads(line)
                except (orjson.JSONDecodeError, ValueError, UnicodeError) as exc:
                    raw = InvalidRequest(f"not valid JSON: {exc}", param="body")
                yield f"line {n}", raw
        except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
            raise InvalidRequest(f"after line {n}: cannot be read: {exc}") from None
    finally:
        progress(counted.take())
        stream.close()
        counted.raw.close()


def _array(stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """A file holding one JSON array (read whole: such files are written whole)."""
    try:
        items = loads(stream.read())
    except (orjson.JSONDecodeError, ValueError, UnicodeError) as exc:
        raise InvalidRequest(f"not a valid JSON array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InvalidRequest(f"cannot be read: {exc}") from None
    if not isinstance(items, list):
        raise InvalidRequest("starts with '[' but is not one JSON array")
    for i, item in enumerate(items):
        yield f"item {i}", item


def import_files(
    store: Store,
    paths: list[Path],
    *,
    source: str = "import",
    chunk_rows: int = 2000,
    use_case: str | None = None,
    skip_invalid: bool = False,
    progress: Callable[[int], Any] = lambda n: None,
) -> ImportResult:
    """Import files of records: interactions, gateway logs, OpenAI fine-tuning examples
    or Adaptive dataset lines (``ingest.formats``), mixed freely; ``use_case`` for
    records that have none. Raises ``ImportFailed`` at the first invalid record
    (``skip_invalid``: counts it and goes on)."""
    result = ImportResult()
    pending: deque[Ack[WriteResult]] = deque()
    chunk: list[dict[str, Any]] = []
    last = ""

    def settle() -> None:
        result.stored += pending.popleft().result().stored

    def send() -> None:
        items = list(chunk)
        chunk.clear()
        pending.append(pipeline.submit(store, items, source=source).ack)
        result.read += len(items)
        while len(pending) > IN_FLIGHT:
            settle()

    def fail(exc: StoreError, where: str) -> ImportFailed:
        if chunk:
            send()
        while pending:
            settle()
        result.last_good = last or None
        return ImportFailed(exc, where, result)

    try:
        for path in paths:
            try:
                for where, raw in records(path, progress):
                    try:
                        if isinstance(raw, StoreError):
                            raise raw
                        items = expand(raw, "", files=True, use_case=use_case)
                    except StoreError as exc:
                        if not skip_invalid:
                            raise fail(exc, f"{path}: {where}") from None
                        result.skipped += 1
                        if len(result.errors) < SHOWN_SKIPS:
                            result.errors.append(f"{path}: {where}: {exc.message}")
                        continue
                    chunk.extend(items)
                    last = f"{path}: {where}"
                    if len(chunk) >= chunk_rows:
                        send()
            except ImportFailed:
                raise
            except StoreError as exc:  # the file itself (unreadable, not JSON, a bad write)
                raise fail(exc, str(path)) from None
        if chunk:
            send()
    finally:
        while pending:
            settle()
    return result
