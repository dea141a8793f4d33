"""``istore serve --workers N``: N server processes on one port, each writing through
its own write-ahead log to the same tables.

Every worker listens on the port with ``SO_REUSEPORT``; the kernel spreads
connections over them. Worker ``i`` writes through
``<wal base>/worker-<i>``: the log, its lock and its writer id stay with the index, so
a worker that dies is restarted on its own log and replays it. Before starting, the
supervisor drains any log no worker will own: the data root's own log (from a
single-process run) and the logs of workers beyond N (from a run with more workers).
Maintenance runs in whichever worker holds the data root's maintenance lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from service.settings import Settings
from store.engine import Store
from store.errors import StoreLocked
from store.location import Location

log = logging.getLogger("istore.workers")

RESTART_DELAY_S = 1.0


def worker_wal(settings: Settings, index: int) -> Path:
    return settings.log_folder() / f"worker-{index}"


def drain(settings: Settings, wal: Path) -> bool:
    """Replay one worker log into the tables (unless a live process holds it)."""
    with contextlib.suppress(StoreLocked):
        Store(settings.data, options=settings.store_options(), wal_dir=wal,
              state_dir=settings.state_folder()).close()  # fmt: skip
        return True
    return False


def drain_orphans(settings: Settings, keep: int, *, own_log: bool = True) -> list[str]:
    """Replay into the tables every log that no worker of this run owns: workers
    ``keep`` and up, and (``own_log``) the data root's own log. A log another process
    holds is left to it. Returns the folders drained."""
    drained = []
    location = Location.parse(settings.data)
    opts = settings.store_options()
    if own_log and not location.remote and not settings.wal_dir:
        with contextlib.suppress(StoreLocked):
            Store(settings.data, options=opts).close()
            drained.append(str(location.path / "wal"))
    base = settings.log_folder()
    if base.exists():
        for d in sorted(base.glob("worker-*")):
            suffix = d.name.removeprefix("worker-")
            if d.is_dir() and suffix.isdigit() and int(suffix) >= keep and drain(settings, d):
                drained.append(str(d))
    return drained


def listen(host: str, port: int) -> socket.socket:
    """A socket in the port's ``SO_REUSEPORT`` group: the kernel spreads incoming
    connections evenly over the workers' sockets (one shared socket would hand most
    of them to whichever process happens to be waiting first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    """In a worker, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so
    no worker is left serving the port on its own."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run ``settings.workers`` workers until SIGTERM/SIGINT; restart any that dies.
    ``argv`` are the ``istore serve`` options to pass on to each worker."""
    for d in drain_orphans(settings, settings.workers):
        log.info("replayed the write-ahead log in %s into the tables", d)
    # The port must be free: a plain bind (no SO_REUSEPORT) fails while anyone listens.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    stopping = False

    def spawn(i: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            ISTORE_WAL_DIR=str(worker_wal(settings, i)),
            ISTORE_STATE_DIR=str(settings.state_folder()),
            ISTORE_WORKERS="1",
        )
        cmd = [sys.executable, "-m", "istore", "serve", *argv, "--worker-index", str(i)]
        return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    procs = {i: spawn(i) for i in range(settings.workers)}
    started = {i: time.monotonic() for i in procs}
    delay = {i: RESTART_DELAY_S / 2 for i in procs}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    print(
        f"istore supervising {settings.workers} workers on "
        f"http://{settings.host}:{settings.port} (logs under {settings.log_folder()})",
        flush=True,
    )
    deadline: float | None = None
    while procs:
        time.sleep(0.2)
        if stopping and deadline is None:
            deadline = time.monotonic() + settings.shutdown_timeout_s + 60
        for i, p in list(procs.items()):
            rc = p.poll()
            if rc is None:
                if deadline is not None and time.monotonic() > deadline:
                    p.kill()  # its log keeps what it acknowledged
                continue
            if stopping:
                del procs[i]
                continue
            # Back off when a worker keeps dying at start (its log locked, a bad disk).
            quick = time.monotonic() - started[i] < 10
            delay[i] = min(delay[i] * 2, 30.0) if quick else RESTART_DELAY_S
            log.warning("worker %d exited with %s; restarting it on its own log in %.0f s",
                        i, rc, delay[i])  # fmt: skip
            time.sleep(delay[i])
            procs[i] = spawn(i)
            started[i] = time.monotonic()
    # A worker stopped before it had opened its log (a SIGTERM while it was still
    # starting, after a restart) leaves what it had acknowledged in the log: the
    # tables get it now, not at the next start.
    for i in range(settings.workers):
        if drain(settings, worker_wal(settings, i)):
            log.info("worker %d's log is in the tables", i)
    return 0
