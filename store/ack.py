"""A light, thread-safe future for write acknowledgements.

``concurrent.futures.Future`` builds a Condition per instance, which shows up at
thousands of writes a second; this one takes a plain lock and only makes an Event
when somebody blocks on it. ``wait()`` awaits one from asyncio."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("istore.store")

_UNSET: Any = object()


class Ack(Generic[T]):
    __slots__ = ("_lock", "_result", "_exc", "_callbacks", "_event")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._result: T = _UNSET
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[Ack[T]], Any]] = []
        self._event: threading.Event | None = None

    @classmethod
    def resolved(cls, value: T) -> Ack[T]:
        ack: Ack[T] = cls()
        ack._result = value
        return ack

    def done(self) -> bool:
        return self._result is not _UNSET or self._exc is not None

    def _finish(self) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
            event = self._event
        if event is not None:
            event.set()
        for cb in callbacks:
            self._run(cb)

    def _run(self, cb: Callable[[Ack[T]], Any]) -> None:
        try:
            cb(self)
        except Exception:  # a waiter's problem must not take down the thread resolving it
            log.exception("acknowledgement callback failed")

    def set_result(self, value: T) -> None:
        with self._lock:
            if self.done():
                return
            self._result = value
        self._finish()

    def set_exception(self, exc: BaseException) -> None:
        with self._lock:
            if self.done():
                return
            self._exc = exc
        self._finish()

    def add_done_callback(self, fn: Callable[[Ack[T]], Any]) -> None:
        with self._lock:
            if not self.done():
                self._callbacks.append(fn)
                return
        self._run(fn)

    def exception(self) -> BaseException | None:
        self._wait(None)
        return self._exc

    def result(self, timeout: float | None = None) -> T:
        self._wait(timeout)
        if self._exc is not None:
            raise self._exc
        return self._result

    def _wait(self, timeout: float | None) -> None:
        with self._lock:
            if self.done():
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            raise TimeoutError("the write was not acknowledged in time")


async def wait(ack: Ack[T]) -> T:
    """Await an Ack from the event loop without blocking it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def _deliver(a: Ack[T]) -> None:
        if fut.done():
            return
        if a._exc is not None:
            fut.set_exception(a._exc)
        else:
            fut.set_result(a._result)

    def _cb(a: Ack[T]) -> None:
        loop.call_soon_threadsafe(_deliver, a)

    ack.add_done_callback(_cb)
    return await fut


def combine(futures: Sequence[Ack[Any]], result: T) -> Ack[T]:
    """A future that resolves with ``result`` once every future in ``futures`` has."""
    out: Ack[T] = Ack()
    if not futures:
        out.set_result(result)
        return out
    remaining = [len(futures)]
    lock = threading.Lock()

    def _done(f: Ack[Any]) -> None:
        exc = f.exception()
        with lock:
            remaining[0] -= 1
            if out.done():
                return
            if exc is not None:
                out.set_exception(exc)
            elif remaining[0] == 0:
                out.set_result(result)

    for f in futures:
        f.add_done_callback(_done)
    return out


def chain(result: Ack[T], waits: Sequence[Ack[Any]]) -> Ack[T]:
    """Resolve after ``result`` and the writes it depends on (same ids in flight)."""
    out: Ack[T] = Ack()

    def _own(f: Ack[T]) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        dep = combine(waits, f.result())

        def _deps(d: Ack[T]) -> None:
            dexc = d.exception()
            if dexc is not None:
                out.set_exception(dexc)
            else:
                out.set_result(d.result())

        dep.add_done_callback(_deps)

    result.add_done_callback(_own)
    return out
