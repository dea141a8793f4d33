"""The write-ahead log: what makes an acknowledgement durable.

Records are framed as ``magic | length | lsn | table code | crc32 | payload`` in
segment files ``wal-<first lsn>.log``. One writer thread owns the file: callers hand
it payloads and get a future; the thread writes every payload that is waiting, calls
``fdatasync`` once for all of them (group commit) and only then resolves their
futures. A frame whose header or checksum does not hold (a torn tail after a crash,
flipped bytes) ends its segment: it and everything after it in that segment are cut
on recovery, never replayed.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from store.ack import Ack
from store.errors import PayloadTooLarge, Unavailable

log = logging.getLogger("istore.wal")

MAGIC = b"ISW1"
# magic, payload length, lsn, table code, crc32 (of length|lsn|code|payload)
HEADER = struct.Struct("<4sIQBI")
MAX_PAYLOAD = 1 << 30
SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log\Z")


@dataclass(slots=True)
class Record:
    lsn: int
    code: int
    payload: bytes


@dataclass(slots=True)
class _Pending:
    code: int
    payload: bytes
    future: Ack[int]
    meta: object = None


@dataclass
class RecoveryReport:
    records: int = 0
    segments: int = 0
    cut_bytes: int = 0
    cut_segments: list[str] = field(default_factory=list)


def _frame(lsn: int, code: int, payload: bytes) -> bytes:
    head = struct.pack("<IQB", len(payload), lsn, code)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return HEADER.pack(MAGIC, len(payload), lsn, code, crc) + payload


def _segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.log"


def list_segments(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if SEGMENT_RE.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def read_segment(path: Path) -> tuple[list[Record], int]:
    """Every valid record of one segment, and the byte offset where validity ends."""
    data = path.read_bytes()
    records: list[Record] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, lsn, code, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if magic != MAGIC or length > MAX_PAYLOAD or end > len(data):
            break
        payload = data[pos + HEADER.size : end]
        head = struct.pack("<IQB", length, lsn, code)
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            break
        records.append(Record(lsn, code, payload))
        pos = end
    return records, pos


def scan(directory: Path, *, repair: bool) -> tuple[list[Record], RecoveryReport]:
    """Read all segments in order. With ``repair`` a corrupt or torn tail is truncated
    away on disk (the writer does this at start); without it the files are untouched
    (read-only handles opened beside a running server)."""
    report = RecoveryReport()
    records: list[Record] = []
    for path in list_segments(directory):
        seg_records, valid = read_segment(path)
        size = path.stat().st_size
        report.segments += 1
        if valid < size:
            report.cut_bytes += size - valid
            report.cut_segments.append(path.name)
            if repair:
                # Keep the cut bytes: whatever they hold is out of the log, not gone.
                aside = directory / f"cut-{path.name}-{valid}.bin"
                with open(path, "rb") as src:
                    src.seek(valid)
                    aside.write_bytes(src.read())
                log.warning(
                    "write-ahead log %s: %d corrupt or torn bytes after offset %d cut",
                    path.name,
                    size - valid,
                    valid,
                )
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
        records.extend(seg_records)
        report.records += len(seg_records)
    return records, report


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so new entries in it survive)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """Group-committing appender. ``on_durable`` runs in the writer thread, after the
    fsync and before any future is resolved, with the records just made durable: the
    store uses it to make them visible to readers before the client hears "201"."""

    def __init__(
        self,
        directory: Path,
        *,
        next_lsn: int,
        on_durable: Callable[[list[tuple[Record, object]]], None],
        segment_bytes: int = 64 << 20,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._next_lsn = next_lsn
        self._on_durable = on_durable
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._fd: int | None = None
        self._seg_path: Path | None = None
        self._seg_size = 0
        self._seg_last_lsn: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()  # the segment file: the writer thread and rotate()
        self._closed = False
        self.fsyncs = 0
        self.last_error: str | None = None
        self.fatal: str | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for path in list_segments(directory):
            recs, _ = read_segment(path)
            self._seg_last_lsn[path] = recs[-1].lsn if recs else 0
        self._thread = threading.Thread(target=self._run, name="istore-wal", daemon=True)
        self._thread.start()

    # -- public -------------------------------------------------------------------------
    def append(self, code: int, payload: bytes, meta: object = None) -> Ack[int]:
        fut: Ack[int] = Ack()
        if len(payload) > MAX_PAYLOAD:  # recovery would take it for corruption
            fut.set_exception(PayloadTooLarge(
                f"one write of {len(payload)} bytes; at most {MAX_PAYLOAD} fit in one log record"
            ))  # fmt: skip
            return fut
        if self._closed:
            fut.set_exception(Unavailable("the store is shutting down"))
            return fut
        if self.fatal is not None:
            fut.set_exception(Unavailable(self.fatal, retry_after=30))
            return fut
        self._queue.put(_Pending(code, payload, fut, meta))
        return fut

    def release(self, applied_lsn: int) -> int:
        """Delete closed segments whose every record is applied (≤ applied_lsn)."""
        removed = 0
        with self._lock:
            for path, last in list(self._seg_last_lsn.items()):
                if path == self._seg_path or last > applied_lsn:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                del self._seg_last_lsn[path]
                removed += 1
        return removed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- writer thread --------------------------------------------------------------
    def _open_segment(self, first_lsn: int) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        path = self.directory / _segment_name(first_lsn)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_path(self.directory)
        self._seg_path = path
        self._seg_size = os.fstat(self._fd).st_size
        with self._lock:
            self._seg_last_lsn.setdefault(path, 0)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)

    def rotate(self) -> None:
        """Close the segment being written (its frames are already fsynced); the next
        write opens a new one, and ``release`` may delete this one once applied."""
        with self._io_lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)
                self._seg_path = None

    def _commit(self, batch: list[_Pending]) -> None:
        with self._io_lock:
            self._commit_locked(batch)

    def _commit_locked(self, batch: list[_Pending]) -> None:
        lsns = list(range(self._next_lsn, self._next_lsn + len(batch)))
        # LSNs are never reused, even when the write fails: a failed frame may sit on disk.
        self._next_lsn += len(batch)
        buf = b"".join(_frame(lsn, p.code, p.payload) for lsn, p in zip(lsns, batch, strict=True))
        try:
            if self._fd is None or self._seg_size >= self.segment_bytes:
                self._open_segment(lsns[0])
            assert self._fd is not None
            start = self._seg_size
            try:
                view = memoryview(buf)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                os.fdatasync(self._fd)
            except OSError:
                self._undo(start)
                raise
        except OSError as exc:
            self.last_error = f"{errno.errorcode.get(exc.errno or 0, 'EIO')}: {exc.strerror}"
            log.error("write-ahead log append failed, nothing acknowledged: %s", self.last_error)
            err = Unavailable(
                f"the store could not persist the write ({self.last_error}); nothing was stored",
                retry_after=5,
            )
            for p in batch:
                p.future.set_exception(err)
            return
        self.fsyncs += 1
        self.last_error = self.fatal
        self._seg_size += len(buf)
        assert self._seg_path is not None
        with self._lock:
            self._seg_last_lsn[self._seg_path] = lsns[-1]
        records = [
            (Record(lsn, p.code, p.payload), p.meta) for lsn, p in zip(lsns, batch, strict=True)
        ]
        try:
            self._on_durable(records)
        except Exception as exc:
            # The records are durable but not visible: the in-memory state can no longer
            # be trusted. Refuse every further write; a restart replays the log.
            log.exception("applying durable records in memory failed; restart the server")
            self.fatal = f"in-memory state lost after a durable write ({exc}); restart needed"
            self.last_error = self.fatal
            for p in batch:
                p.future.set_exception(Unavailable(self.fatal, retry_after=30))
            return
        for lsn, p in zip(lsns, batch, strict=True):
            p.future.set_result(lsn)

    def _undo(self, good_size: int) -> None:
        """Cut a partly written group so later frames are not hidden behind it."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, good_size)
        except OSError:
            # Could not cut: abandon this segment; recovery cuts the torn tail and
            # continues with the next segment.
            os.close(self._fd)
            self._fd = None
            return


def iter_records(records: list[Record], code: int, after: int) -> Iterator[Record]:
    return (r for r in records if r.code == code and r.lsn > after)
