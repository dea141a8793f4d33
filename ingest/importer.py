"""Bulk import of JSONL files into a store (``istore import``, sample loading).

Chunks are parsed while earlier chunks are being made durable (a few writes in
flight), so parsing and fsync overlap. A bad line stops the import with its file and
line; what was imported before it stays (and re-importing is idempotent for rows
that carry an ``id``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ingest import pipeline
from ingest.parse import parse_interactions
from store.ack import Ack
from store.engine import Store, WriteResult
from store.errors import StoreError

IN_FLIGHT = 4


def _chunks(path: Path, size: int) -> Iterator[tuple[int, list[bytes], int]]:
    """(first line number, lines, bytes read) chunks of non-blank lines."""
    chunk: list[bytes] = []
    first = 1
    nbytes = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            nbytes += len(line)
            if not line.strip():
                continue
            if not chunk:
                first = n
            chunk.append(line if line.endswith(b"\n") else line + b"\n")
            if len(chunk) >= size:
                yield first, chunk, nbytes
                chunk, nbytes = [], 0
    if chunk or nbytes:
        yield first, chunk, nbytes


def import_files(
    store: Store,
    paths: list[Path],
    *,
    source: str = "import",
    chunk_rows: int = 2000,
    use_case: str | None = None,
    progress: Callable[[int], Any] = lambda n: None,
) -> tuple[int, int]:
    """Import JSONL files: interactions, gateway logs, OpenAI fine-tuning examples or
    Adaptive dataset lines (``ingest.formats``), mixed freely; ``use_case`` for lines
    that have none. Returns (interactions read, newly stored)."""
    total = stored = 0
    pending: deque[Ack[WriteResult]] = deque()

    def settle() -> None:
        nonlocal stored
        stored += pending.popleft().result().stored

    try:
        for path in paths:
            for first, lines, nbytes in _chunks(path, chunk_rows):
                if lines:
                    try:
                        items, _ = parse_interactions(
                            b"".join(lines), "application/x-ndjson", files=True, use_case=use_case
                        )
                    except StoreError as exc:
                        exc.message = f"{path}: from line {first}: {exc.message}"
                        raise
                    pending.append(pipeline.submit(store, items, source=source).ack)
                    total += len(items)
                    while len(pending) > IN_FLIGHT:
                        settle()
                progress(nbytes)
    finally:
        while pending:
            settle()
    return total, stored
