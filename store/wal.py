"""The write-ahead log: what makes an acknowledgement durable.

Records live in segment files ``wal-<first lsn>.log`` as frames::

    magic 0xFF "IW2" | length u32 | lsn u64 | table code u8 | payload crc32 | header crc32 | payload

(little-endian; the header crc covers the 21 bytes before it). One writer thread owns
the file: callers hand it payloads and get a future; the thread writes every payload
that is waiting, calls ``fdatasync`` once for all of them (group commit) and only then
resolves their futures.

Reading heals around damage. A frame counts only if its header checksum, its payload
checksum and an LSN above the previous frame's all hold. After a damaged stretch (bit
rot, a torn sector) the reader resynchronises at the next offset where a whole valid
frame starts, so every intact frame after the damage is replayed and nothing damaged
is applied (a record is one frame: all of it or none). The magic starts with 0xFF,
which never occurs in UTF-8, and payloads are UTF-8 JSON (``store.rows``): payload
bytes can never pose as a frame. Each damaged stretch is reported (``Damage``: segment,
offset, length, the LSN of the lost record when its header survived). A stretch that
runs to the end of the segment (a torn tail: what a crash mid-append leaves) is cut
from the file on repair and kept aside as ``cut-<segment>-<offset>.bin``; a stretch
between intact frames is left in place (the segment is deleted once its records are
applied) and copied aside as ``damaged-<segment>-<offset>.bin``.

Segments written before this framing (magic ``ISW1``, one crc32 over length, lsn, code
and payload) are read too, with the same resynchronisation: a store upgraded with
records in its log loses none of them.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from store.ack import Ack
from store.errors import PayloadTooLarge, Unavailable
from store.files import fsync_path

log = logging.getLogger("istore.wal")

MAGIC = b"\xffIW2"
# magic, payload length, lsn, table code, crc32 of the payload, crc32 of the 21 bytes before
HEADER = struct.Struct("<4sIQBII")
_HEAD_BODY = HEADER.size - 4
# The framing before resynchronisation (read only): magic, length, lsn, code,
# crc32 of (length|lsn|code|payload).
MAGIC_V1 = b"ISW1"
HEADER_V1 = struct.Struct("<4sIQBI")
MAX_PAYLOAD = 1 << 30
SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log\Z")


@dataclass(slots=True)
class Record:
    lsn: int
    code: int
    payload: bytes
    offset: int = -1  # where its frame starts in its segment (when read from disk)


@dataclass(slots=True)
class _Pending:
    code: int
    payload: bytes
    future: Ack[int]
    meta: object = None


@dataclass(frozen=True)
class Damage:
    """A stretch of a segment that holds no valid frame. ``lsn``: the record lost
    there, when its header survived; ``after``/``before``: the LSNs of the intact
    frames around it (0 / None at the segment's start / end), so the records lost
    are those in between; ``tail``: it runs to the end of the segment."""

    segment: str
    offset: int
    length: int
    lsn: int | None
    after: int
    before: int | None
    tail: bool

    def describe(self) -> str:
        lost = f"record {self.lsn}" if self.lsn is not None else (
            f"records after {self.after}" if self.before is None
            else f"records between {self.after} and {self.before}"
        )  # fmt: skip
        where = "at the end" if self.tail else "in the middle"
        return (f"{self.length} damaged bytes at offset {self.offset} of {self.segment} "
                f"({where}; {lost})")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SegmentScan:
    records: list[Record]
    damage: list[Damage]
    valid_end: int  # the end of the last valid frame: a torn tail starts here
    size: int


@dataclass
class RecoveryReport:
    records: int = 0
    segments: int = 0
    cut_bytes: int = 0  # torn tails cut off (or, read-only, that would be)
    cut_segments: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)  # every damaged stretch found

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "segments": self.segments,
            "cut_bytes": self.cut_bytes,
            "damaged": [d.as_dict() for d in self.damaged],
        }


def _frame(lsn: int, code: int, payload: bytes) -> bytes:
    head = struct.pack("<4sIQBI", MAGIC, len(payload), lsn, code, zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def _segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.log"


def list_segments(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if SEGMENT_RE.match(p.name)]
    return sorted(found, key=lambda p: p.name)


_OK, _BAD_PAYLOAD = 1, 2


def _frame_at(data: bytes, pos: int, prev: int) -> tuple[int, int, int, int, int]:
    """What starts at ``pos``: (kind, end, lsn, code, payload start). kind 0: no frame;
    ``_BAD_PAYLOAD``: a frame whose header holds but whose payload does not (its
    length is then trusted, so the reader knows where the next frame starts)."""
    magic = data[pos : pos + 4]
    if magic == MAGIC:
        if pos + HEADER.size > len(data):
            return 0, 0, 0, 0, 0
        _, length, lsn, code, pcrc, hcrc = HEADER.unpack_from(data, pos)
        if zlib.crc32(data[pos : pos + _HEAD_BODY]) != hcrc or lsn <= prev:
            return 0, 0, 0, 0, 0
        start = pos + HEADER.size
        end = start + length
        if length > MAX_PAYLOAD or end > len(data):
            return 0, 0, 0, 0, 0  # torn: the payload never reached the disk
        ok = zlib.crc32(memoryview(data)[start:end]) == pcrc
        return (_OK if ok else _BAD_PAYLOAD), end, lsn, code, start
    if magic == MAGIC_V1:
        if pos + HEADER_V1.size > len(data):
            return 0, 0, 0, 0, 0
        _, length, lsn, code, crc = HEADER_V1.unpack_from(data, pos)
        start = pos + HEADER_V1.size
        end = start + length
        if length > MAX_PAYLOAD or end > len(data) or lsn <= prev:
            return 0, 0, 0, 0, 0
        head = struct.pack("<IQB", length, lsn, code)
        if zlib.crc32(memoryview(data)[start:end], zlib.crc32(head)) != crc:
            return 0, 0, 0, 0, 0
        return _OK, end, lsn, code, start
    return 0, 0, 0, 0, 0


def _resync(data: bytes, pos: int, prev: int) -> int:
    """The first offset ≥ ``pos`` where a frame (valid, or with a valid header) starts;
    ``len(data)`` if none does."""
    while pos < len(data):
        hits = [h for h in (data.find(MAGIC, pos), data.find(MAGIC_V1, pos)) if h >= 0]
        if not hits:
            return len(data)
        pos = min(hits)
        if _frame_at(data, pos, prev)[0]:
            return pos
        pos += 1
    return len(data)


def scan_bytes(data: bytes, segment: str = "") -> SegmentScan:
    """Every valid record in ``data`` (one segment's bytes) and every damaged stretch."""
    records: list[Record] = []
    damage: list[Damage] = []
    pos = prev = valid_end = 0
    while pos < len(data):
        kind, end, lsn, code, start = _frame_at(data, pos, prev)
        if kind == _OK:
            records.append(Record(lsn, code, data[start:end], pos))
            prev, pos, valid_end = lsn, end, end
            continue
        lost = lsn if kind == _BAD_PAYLOAD else None
        after = prev
        if lost is not None:
            prev = lost
        nxt = _resync(data, end if kind == _BAD_PAYLOAD else pos + 1, prev)
        before = _frame_at(data, nxt, prev)[2] if nxt < len(data) else None
        damage.append(Damage(segment, pos, nxt - pos, lost, after, before, nxt == len(data)))
        pos = nxt
    return SegmentScan(records, damage, valid_end, len(data))


def inspect_segment(path: Path) -> SegmentScan:
    return scan_bytes(path.read_bytes(), path.name)


def read_segment(path: Path) -> tuple[list[Record], int]:
    """Every valid record of one segment, and the offset where its valid frames end."""
    found = inspect_segment(path)
    return found.records, found.valid_end


def scan(directory: Path, *, repair: bool) -> tuple[list[Record], RecoveryReport]:
    """Read all segments in order: every intact record once, and a report of the
    damage. With ``repair`` (the writer, at start) a torn tail is cut from its file
    and kept aside, a damaged stretch between intact frames is copied aside, and each
    is logged; without it the files are untouched (read-only handles beside a running
    server, ``istore doctor``)."""
    report = RecoveryReport()
    records: list[Record] = []
    last = 0
    for path in list_segments(directory):
        found = inspect_segment(path)
        report.segments += 1
        for d in found.damage:
            report.damaged.append(d)
            if d.tail:
                report.cut_bytes += d.length
                report.cut_segments.append(path.name)
            if repair:
                _set_aside(directory, path, d)
        if repair and found.valid_end < found.size and found.damage and found.damage[-1].tail:
            with open(path, "r+b") as f:
                f.truncate(found.valid_end)
                os.fsync(f.fileno())
        for r in found.records:
            if r.lsn > last:  # a record is replayed once, whatever the segments hold
                records.append(r)
                last = r.lsn
        report.records += len(found.records)
    return records, report


def _set_aside(directory: Path, path: Path, d: Damage) -> None:
    """Keep the damaged bytes: whatever they hold is out of the log, not gone."""
    prefix = "cut" if d.tail else "damaged"
    aside = directory / f"{prefix}-{path.name}-{d.offset}.bin"
    if not aside.exists():
        with open(path, "rb") as src:
            src.seek(d.offset)
            aside.write_bytes(src.read(d.length))
    if d.tail:
        log.warning(
            "write-ahead log %s: %d corrupt or torn bytes after offset %d cut (%s); kept in %s",
            path.name, d.length, d.offset, d.describe(), aside.name,
        )  # fmt: skip
    else:
        log.error(
            "write-ahead log %s: %s skipped, never applied; the intact frames after it are "
            "replayed; the damaged bytes are kept in %s",
            path.name, d.describe(), aside.name,
        )  # fmt: skip


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
            # Past any damage: a segment is deleted only once its last record is applied.
            recs, _ = read_segment(path)
            self._seg_last_lsn[path] = max((r.lsn for r in recs), default=0)
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
