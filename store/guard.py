"""A deadline and a memory ceiling for one user query, from its first plan to the last
byte of its encoded result.

DuckDB enforces its ``memory_limit`` on what its buffer manager tracks, and stops a
query when interrupted between vectors. Neither covers everything a query costs: a
constant string repeated into each row of an Arrow batch, a value built by one long
function call, or the conversion of the result to Python and JSON happen outside
both. The guard watches from a thread: past the deadline, or when the process's
memory that DuckDB does not track has grown by more than ``max_untracked_bytes``
since the query started, it interrupts the cursor and records why; the code that
encodes the result calls ``check()`` between chunks, so encoding stops too. The
memory watch needs ``/proc/self/statm`` (Linux); elsewhere only the deadline applies.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import duckdb

from store.errors import InvalidQuery, QueryTimeout, StoreError

POLL_S = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """The process's resident memory now, or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class QueryGuard:
    """Start with ``start()``, stop with ``close()``; ``check()`` raises the error
    that ended the query (``QueryTimeout``, or ``InvalidQuery`` for memory)."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        timeout_s: float | None,
        tracked_bytes: Callable[[], int] | None = None,
        max_untracked_bytes: int | None = None,
    ) -> None:
        self._cur = cursor
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        self._tracked = tracked_bytes
        self._max_untracked = max_untracked_bytes
        self._base: int | None = None
        self.reason: str | None = None  # "time" or "memory" once tripped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _untracked(self) -> int | None:
        rss = rss_bytes()
        if rss is None or self._tracked is None:
            return None
        return rss - self._tracked()

    def start(self) -> QueryGuard:
        if self._max_untracked is not None:
            self._base = self._untracked()
        if self.deadline is not None or self._base is not None:
            self._thread = threading.Thread(target=self._watch, name="query-guard", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._trip("time")
                return
            if self._base is not None and self._max_untracked is not None:
                try:
                    now = self._untracked()
                except duckdb.Error:
                    now = None
                if now is not None and now - self._base > self._max_untracked:
                    self._trip("memory")
                    return

    def _trip(self, reason: str) -> None:
        self.reason = reason
        self._cur.interrupt()

    def expired(self) -> bool:
        return self.reason is not None or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )

    def error(self) -> StoreError:
        if self.reason == "memory":
            limit = (self._max_untracked or 0) >> 20
            return InvalidQuery(
                f"the query needs more memory than allowed (more than {limit} MiB outside "
                "the query memory limit); select fewer or smaller rows",
                param="sql",
            )
        return QueryTimeout(f"the query ran longer than {self.timeout_s:g} s")

    def check(self) -> None:
        """Raise if the deadline passed or the memory ceiling was crossed."""
        if self.expired():
            if self.reason is None:
                self.reason = "time"
            raise self.error()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
