"""The receiver: spans and log records of one LLM call, in any order and in separate
requests, become one interaction; what was answered 200 is never lost.

A piece (an LLM-call span or one of its GenAI log records) goes one of two ways:
- **complete on arrival** (a span that carries its own content, which is every
  OpenInference and Langfuse span and GenAI spans with ``gen_ai.*.messages``): its
  interaction is written to the store before the request is answered;
- **waiting** (a GenAI span whose content comes as log records, or a log record):
  it is appended to the receiver's own write-ahead log (``store.wal``: fsync, group
  commit) before the request is answered, then joined in memory with the other
  pieces of its call (key: trace id + span id). When the call is complete
  (``mapping.complete``), or ``join_s`` after its first piece came, its interaction
  is written to the store, and only once that write is durable are its pieces
  released (a release record in the log; segments whose pieces are all released are
  deleted).

On start the log is replayed: unreleased pieces are joined again and written when
complete or due. A piece replayed after its interaction was written (a crash between
the write and the release record) names the same interaction id, which the store
already holds: the write is a no-op, so nothing is stored twice.

Pieces that arrive after their call's interaction was written are dropped (the
interaction is immutable here); they are counted in ``late``. So are the log records
of a call whose span was refused: alone they would make a partial interaction.

Everything but the log's own writer thread runs on the event loop: no locks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ingest.otlp import mapping
from ingest.otlp.pieces import Piece
from store.ack import wait
from store.engine import IdConflict
from store.errors import StoreError, Unavailable
from store.wal import WriteAheadLog, scan

log = logging.getLogger("istore.otlp")

PIECES = 1  # payload: [piece.wire(), ...]
RELEASED = 2  # payload: [[lsn, index], ...]
SEGMENT_BYTES = 16 << 20
CLOSED_MAX = 200_000

Persist = Callable[[list[dict[str, Any]]], Awaitable[None]]
Key = tuple[str, str]


@dataclass(eq=False)
class _Group:
    deadline: float
    span: Piece | None = None
    logs: dict[bytes, Piece] = field(default_factory=dict)
    emitting: bool = False

    def pieces(self) -> list[Piece]:
        return ([self.span] if self.span is not None else []) + list(self.logs.values())


def _digest(rec: dict[str, Any]) -> bytes:
    body = {k: v for k, v in rec.items() if k != "seq"}
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).digest()  # fmt: skip


class Receiver:
    def __init__(
        self, folder: Path, *, join_s: float, persist: Persist, max_pending_bytes: int
    ) -> None:
        self.folder = folder
        self.join_s = join_s
        self._persist = persist
        self.max_pending_bytes = max_pending_bytes
        self._groups: dict[Key, _Group] = {}
        self._due: list[tuple[float, int, Key]] = []
        self._closed: dict[Key, float] = {}  # written (or refused) calls → when to forget
        self._refs: dict[int, int] = {}  # lsn → pieces not yet released
        self._sizes: dict[int, int] = {}
        self._released: list[tuple[int, int]] = []
        self._pending_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._wal: WriteAheadLog | None = None
        self._n = 0
        self._inflight = 0  # appends of pieces not yet back: their lsn is unknown
        self.late = 0
        self.written = 0

    # -- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        records, report = await asyncio.to_thread(scan, self.folder, repair=True)
        if report.cut_bytes:
            log.warning("the OTLP receiver's log: %d corrupt bytes cut", report.cut_bytes)
        released: set[tuple[int, int]] = set()
        for r in records:
            if r.code == RELEASED:
                released.update((a, b) for a, b in orjson.loads(r.payload))
        replayed: list[Piece] = []
        for r in records:
            if r.code != PIECES:
                continue
            wires = orjson.loads(r.payload)
            left = [i for i in range(len(wires)) if (r.lsn, i) not in released]
            if not left:
                continue
            self._refs[r.lsn] = len(left)
            self._sizes[r.lsn] = len(r.payload)
            self._pending_bytes += len(r.payload)
            for i in left:
                p = Piece.from_wire(wires[i])
                p.ref = (r.lsn, i)
                p.rec["seq"] = (r.lsn << 20) | i
                replayed.append(p)
        next_lsn = (max(r.lsn for r in records) + 1) if records else 1
        self._wal = WriteAheadLog(self.folder, next_lsn=next_lsn, on_durable=lambda _: None,
                                  segment_bytes=SEGMENT_BYTES)  # fmt: skip
        for p in replayed:
            self._add(p)
        if replayed:
            log.info("OTLP receiver: %d waiting pieces replayed from its log", len(replayed))
        self._tidy_log()
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        self._flush_released()
        if self._wal is not None:
            self._wal.close()

    @property
    def waiting(self) -> int:
        """Calls waiting for more pieces."""
        return len(self._groups)

    # -- requests ------------------------------------------------------------------
    async def submit(self, pieces: list[Piece]) -> list[str]:
        """Make every piece durable (its interaction in the store, or the piece in the
        log); returns when they all are, raises (nothing acknowledged) otherwise. The
        answer: why calls were refused by the store (an id another use case holds)."""
        assert self._wal is not None
        direct: list[dict[str, Any]] = []
        direct_keys: list[Key] = []
        waiting: list[Piece] = []
        self._forget_closed()
        for p in pieces:
            key = p.key
            if key in self._closed:
                self.late += 1
                continue
            if p.item is not None and key not in self._groups and mapping.complete(p.rec, []):
                direct.append(p.item)
                if mapping.convention(p.rec) == mapping.GENAI:  # log records may follow
                    direct_keys.append(key)
            else:
                waiting.append(p)
        ack = None
        if waiting:
            if self._pending_bytes > self.max_pending_bytes:
                raise Unavailable(
                    "the OTLP receiver holds too many calls waiting for their other pieces",
                    retry_after=max(1, int(self.join_s)),
                )
            payload = orjson.dumps([p.wire() for p in waiting])
            ack = self._wal.append(PIECES, payload)
            self._inflight += 1
        failure: BaseException | None = None
        refused: list[str] = []
        if direct:
            try:
                refused = await self._write(direct)
            except Exception as exc:
                failure = exc
        if ack is not None:
            try:
                lsn = await wait(ack)  # raises when the log could not take them
            finally:
                self._inflight -= 1
            self._refs[lsn] = len(waiting)
            self._sizes[lsn] = len(payload)
            self._pending_bytes += len(payload)
            for i, p in enumerate(waiting):
                p.ref = (lsn, i)
                p.rec["seq"] = (lsn << 20) | i
                self._add(p)
        if failure is not None:
            raise failure
        for key in direct_keys:
            self._close(key)
        self.written += len(direct) - len(refused)
        return refused

    async def _write(self, items: list[dict[str, Any]]) -> list[str]:
        """Persist ``items``, leaving out those whose id another use case holds (an
        id names one interaction in the whole store); says which were left out."""
        refused: list[str] = []
        while items:
            try:
                await self._persist(items)
                break
            except IdConflict as exc:
                bad = set(exc.positions)
                refused += [f"interaction {items[i]['id']}: its id is already stored in "
                            "another use case" for i in sorted(bad)]  # fmt: skip
                items = [x for i, x in enumerate(items) if i not in bad]
        return refused

    def refuse(self, keys: list[Key]) -> None:
        """Calls whose span was refused: their log records, waiting or still to come,
        make no interaction (it would be a partial one)."""
        for key in keys:
            g = self._groups.pop(key, None)
            self._close(key)
            if g is not None:
                for p in g.pieces():
                    self._release(p)

    # -- joining -------------------------------------------------------------------
    def _add(self, p: Piece) -> None:
        key = p.key
        if key in self._closed:
            self.late += 1
            self._release(p)
            return
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(p.at + self.join_s)
            self._n += 1
            heapq.heappush(self._due, (g.deadline, self._n, key))
        if p.rec["kind"] == "span":
            if g.span is not None:
                self._release(p)  # a retried export: the same span again
                return
            g.span = p
        else:
            h = _digest(p.rec)
            if h in g.logs:
                self._release(p)
                return
            g.logs[h] = p
        if not g.emitting and mapping.complete(
            g.span.rec if g.span else None, [x.rec for x in g.logs.values()]
        ):
            self._emit_soon(key, g)

    def _emit_soon(self, key: Key, g: _Group) -> None:
        g.emitting = True
        task = asyncio.get_running_loop().create_task(self._emit(key, g))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _build(self, g: _Group) -> dict[str, Any] | None:
        logs = list(g.logs.values())
        span = g.span.rec if g.span is not None else None
        if g.span is None:
            uc = mapping.log_use_case(min(logs, key=lambda p: p.rec["time_ns"]).rec)
        else:
            uc = (g.span.item or mapping.interaction(g.span.rec, []))["use_case"]
        ok = [p.rec for p in logs if p.allowed is None or uc in p.allowed]
        if span is None and not ok:
            return None
        return mapping.interaction(span, ok)

    async def _emit(self, key: Key, g: _Group) -> None:
        try:
            item = self._build(g)
        except mapping.Rejected as exc:
            log.warning("OTLP call %s/%s dropped: %s", key[0], key[1], exc)
            item = None
        except Exception:
            log.exception("OTLP call %s/%s could not be put together; dropped", *key)
            item = None
        if item is not None:
            try:
                refused = await self._write([item])
            except (Unavailable, OSError) as exc:
                g.emitting = False
                g.deadline = time.time() + max(1.0, self.join_s / 4)
                self._n += 1
                heapq.heappush(self._due, (g.deadline, self._n, key))
                log.warning("OTLP call %s/%s not written yet (%s); retrying", *key, exc)
                return
            except StoreError as exc:  # not worth retrying
                refused = [str(exc)]
            if refused:
                log.warning("OTLP call %s/%s dropped: %s", key[0], key[1], refused[0])
            else:
                self.written += 1
        if self._groups.get(key) is g:
            del self._groups[key]
        self._close(key)
        for p in g.pieces():
            self._release(p)

    def _close(self, key: Key) -> None:
        self._closed[key] = time.monotonic() + max(60.0, 6 * self.join_s)
        if len(self._closed) > CLOSED_MAX:
            self._closed.pop(next(iter(self._closed)))

    def _forget_closed(self) -> None:
        now = time.monotonic()
        while self._closed:
            key = next(iter(self._closed))
            if self._closed[key] > now:
                break
            del self._closed[key]

    # -- releasing -----------------------------------------------------------------
    def _release(self, p: Piece) -> None:
        if p.ref is None:
            return
        lsn = p.ref[0]
        self._released.append(p.ref)
        p.ref = None
        left = self._refs[lsn] - 1
        if left:
            self._refs[lsn] = left
        else:
            del self._refs[lsn]
            self._pending_bytes -= self._sizes.pop(lsn, 0)

    def _flush_released(self) -> None:
        if not self._released or self._wal is None:
            return
        done, self._released = self._released, []
        # Not awaited: a release that is lost to a crash only means a replay whose
        # write the store finds already done.
        self._wal.append(RELEASED, orjson.dumps(done))
        self._tidy_log()

    def _tidy_log(self) -> None:
        assert self._wal is not None
        if self._inflight:
            return  # a durable record may not be counted yet: delete nothing
        if not self._refs:
            self._wal.rotate()
            self._wal.release(1 << 62)
        else:
            self._wal.release(min(self._refs) - 1)

    async def _tick(self) -> None:
        period = min(0.25, max(self.join_s / 4, 0.01))
        while True:
            await asyncio.sleep(period)
            try:
                self._due_now()
                self._flush_released()
            except Exception:  # the loop must survive anything one call does
                log.exception("OTLP receiver tick failed")

    def _due_now(self) -> None:
        now = time.time()
        while self._due and self._due[0][0] <= now:
            deadline, _, key = heapq.heappop(self._due)
            g = self._groups.get(key)
            if g is not None and not g.emitting and g.deadline <= now:
                self._emit_soon(key, g)
