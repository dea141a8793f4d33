"""``istore doctor``: check a data root and say what to do about what is wrong.

Each check gives ``ok``, ``warn`` or ``FAIL`` with a line of advice; any ``FAIL`` makes
the command exit 1. It only reads: it never repairs, cuts or rewrites anything."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from store.delta import APP_ID, WRITER_FILE
from store.location import Location
from store.rows import decode_tables
from store.schema import TABLES
from store.wal import list_segments, scan

MIN_FREE_BYTES = 1 << 30
SMALL_FILE_BYTES = 16 << 20


@dataclass
class Finding:
    level: str  # ok, warn, FAIL
    check: str
    detail: str
    advice: str = ""


def _locked(root: Path) -> bool:
    path = root / "LOCK"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def check(
    root: Path | str, gateway_config: str | None = None, wal_dir: str | None = None
) -> Iterator[Finding]:
    location = Location.parse(root)
    if location.remote:
        yield from _check_tables(location, {})
        if wal_dir:
            yield from _check_logs(Path(wal_dir), location)
        else:
            yield Finding("FAIL", "write-ahead log", "no ISTORE_WAL_DIR for an object-store "
                          "data root", "pass --wal-dir or set ISTORE_WAL_DIR")  # fmt: skip
        yield from _check_shared(location, Path(wal_dir) if wal_dir else None)
        return
    root = location.path
    if not root.exists():
        yield Finding("FAIL", "data root", f"{root} does not exist",
                      "start `istore serve` or `istore import` to create it, "
                      "or pass --data")  # fmt: skip
        return
    running = _locked(root)
    yield Finding("ok", "server", "a server holds this data root" if running
                  else "no server is running on this data root")  # fmt: skip

    usage = shutil.disk_usage(root)
    free_pct = usage.free / usage.total * 100 if usage.total else 0
    level = "FAIL" if usage.free < MIN_FREE_BYTES // 4 else (
        "warn" if usage.free < MIN_FREE_BYTES or free_pct < 5 else "ok")  # fmt: skip
    yield Finding(level, "free disk", f"{usage.free / 2**30:.1f} GiB free ({free_pct:.0f} %)",
                  "" if level == "ok" else "free space or move ISTORE_DATA: at 0 bytes "
                  "ingest answers 503 until space returns")  # fmt: skip
    if not os.access(root, os.W_OK):
        yield Finding("FAIL", "permissions", f"{root} is not writable by this user",
                      "run the server as the owner of the data root")  # fmt: skip

    yield from _check_tables(location, {})
    yield from _check_logs(Path(wal_dir) if wal_dir else root / "wal", location)

    keys = root / "keys.json"
    if keys.exists():
        mode = stat.S_IMODE(keys.stat().st_mode)
        if mode & 0o077:
            yield Finding("FAIL", "API keys", f"keys.json is mode {mode:o}: others can read "
                          "the key hashes", f"chmod 600 {keys}")  # fmt: skip
        else:
            yield Finding("ok", "API keys", f"keys.json mode {mode:o}")
    else:
        yield Finding("warn", "API keys", "no key exists: the server is open to anyone who "
                      "can reach it (loopback only)",
                      "istore keys create --scope admin")  # fmt: skip

    try:
        from store.lifecycle import Retention

        policy = Retention.load(root)
        rules = len(policy.use_cases) + (policy.default_days is not None)
        yield Finding("ok", "retention", f"{rules} rules" if rules else "keep everything")
    except Exception as exc:
        yield Finding("FAIL", "retention", f"retention.json is unreadable: {exc}",
                      "fix or remove it; `istore retention show` prints the rules")  # fmt: skip

    if gateway_config:
        from gateway.config import ConfigError, load

        try:
            routing = load(gateway_config)
            yield Finding("ok", "gateway", f"{len(routing.models)} models, "
                          f"{len(routing.use_cases)} use cases")  # fmt: skip
        except ConfigError as exc:
            yield Finding("FAIL", "gateway", f"{gateway_config}: {exc}",
                          "fix the routing file (see gateway.example.toml)")  # fmt: skip


def _check_shared(location: Location, local: Path | None) -> Iterator[Finding]:
    """The keys and retention rules in the bucket (read only: no copy of this node's
    is uploaded here, unlike at a server's start)."""
    from service.keys import KeyRing
    from store.lifecycle import Retention
    from store.state import SharedState

    state = SharedState(location)  # no local folder: nothing migrated, nothing cached
    try:
        keys = KeyRing(state.document("keys.json")).describe()
        live = sum(1 for k in keys if not k.get("revoked_at"))
        yield Finding("ok" if keys else "warn", "API keys",
                      f"{live} active keys in {state.document('keys.json').where}" if keys
                      else "no key exists: the servers are open to anyone who can reach them",
                      "" if keys else "istore keys create --scope admin")  # fmt: skip
    except Exception as exc:
        yield Finding("FAIL", "API keys", f"cannot read the shared keys: {exc}",
                      "check the bucket's credentials and endpoint")  # fmt: skip
    try:
        policy = Retention.load(state.document("retention.json"))
        rules = len(policy.use_cases) + (policy.default_days is not None)
        yield Finding("ok", "retention", f"{rules} rules" if rules else "keep everything")
    except Exception as exc:
        yield Finding("FAIL", "retention", f"the shared retention rules are unreadable: {exc}",
                      "fix them with `istore retention set`")  # fmt: skip
    for name in ("keys.json", "retention.json"):
        if local is not None and (local / name).exists():
            yield Finding("warn", name, f"{local / name} is this node's own copy from before "
                          "the documents were shared", "the next `istore serve` on this node "
                          "uploads it if the bucket has none (and renames it "
                          f"{name}.migrated)")  # fmt: skip


def _check_tables(location: Location, opened: dict[str, DeltaTable]) -> Iterator[Finding]:
    """Each table opens, and every data file of its current version exists."""
    for name in TABLES:
        if not location.is_table(name):
            yield Finding("warn", f"table {name}", "missing (created at the next start)")
            continue
        try:
            dt = location.open(name)
            files = dt.file_uris()
        except Exception as exc:
            yield Finding("FAIL", f"table {name}", f"cannot be opened: {exc}",
                          "restore the _delta_log folder from a backup")  # fmt: skip
            continue
        missing = [] if location.remote else [
            f for f in files if not Path(f.removeprefix("file://")).exists()
        ]  # fmt: skip
        if missing:
            yield Finding("FAIL", f"table {name}",
                          f"{len(missing)} data files of version {dt.version()} are missing, "
                          f"e.g. {missing[0]}",
                          "restore them from a backup; never delete files under a table "
                          "by hand (use istore vacuum)")  # fmt: skip
            continue
        opened[name] = dt
        actions = dt.get_add_actions(flatten=True)
        sizes: list[int] = pa.table(actions).column("size_bytes").to_pylist() if len(files) else []
        small = sum(1 for s in sizes if s < SMALL_FILE_BYTES)
        level = "warn" if small > 200 else "ok"
        yield Finding(level, f"table {name}",
                      f"version {dt.version()}, {len(files)} files ({small} small)",
                      "run `istore compact` (a server compacts on its maintenance schedule)"
                      if level == "warn" else "")  # fmt: skip


def _check_logs(wal: Path, location: Location) -> Iterator[Finding]:
    """The write-ahead log in ``wal``, and the worker logs under it (``--workers``):
    damaged frames (with their position; a torn tail is a warning, damage between intact
    frames a failure: an acknowledged record is lost), the bytes earlier starts set
    aside, and records not yet in the tables (by each log's own Delta app transaction)."""
    if not wal.exists():
        yield Finding("ok", "write-ahead log", "empty (no writes yet)")
        return
    tables = {n: location.open(n) for n in TABLES if location.is_table(n)}
    logs = [wal] + sorted(d for d in wal.glob("worker-*") if d.is_dir())
    for log_dir in logs:
        writer = (log_dir / WRITER_FILE).read_text().strip() if (
            log_dir / WRITER_FILE).exists() else ""  # fmt: skip
        app = f"{APP_ID}-{writer}" if writer else APP_ID
        applied = {n: dt.transaction_version(app) or 0 for n, dt in tables.items()}
        label = "write-ahead log" if log_dir == wal else f"write-ahead log {log_dir.name}"
        segments = list_segments(log_dir)
        size = sum(p.stat().st_size for p in segments)
        records, report = scan(log_dir, repair=False)
        pending = sum(
            1 for r in records
            if any(r.lsn > applied.get(n, 0) for n in decode_tables(r.payload))
        )  # fmt: skip
        for d in report.damaged:
            if d.tail:
                yield Finding("warn", label, d.describe(),
                              "torn tails are what a crash mid-append leaves (unacknowledged "
                              "writes); the next start cuts them and keeps them aside as "
                              "cut-*.bin")  # fmt: skip
            else:
                yield Finding("FAIL", label, d.describe(),
                              "an acknowledged record was damaged on disk and cannot be "
                              "replayed: the next start skips it, replays every intact record "
                              "after it and keeps the bytes aside as damaged-*.bin; check the "
                              "disk (dmesg, smartctl) and have the client resend what was "
                              "lost")  # fmt: skip
        if not report.damaged:
            yield Finding("ok", label,
                          f"{len(segments)} segments, {size / 2**20:.1f} MiB, "
                          f"{pending} records not yet in every table")  # fmt: skip
        aside = sorted(p.name for p in log_dir.glob("cut-*.bin"))
        if aside:
            yield Finding("warn", label, f"{len(aside)} cut tails kept aside "
                          f"({aside[0]} …)", "they hold unacknowledged writes from a crash: "
                          "inspect, then delete them")  # fmt: skip
        damaged = sorted(p.name for p in log_dir.glob("damaged-*.bin"))
        if damaged:
            yield Finding("warn", label, f"{len(damaged)} damaged frames kept aside "
                          f"({', '.join(damaged[:3])}{' …' if len(damaged) > 3 else ''})",
                          "a start skipped them (the log names their records); the intact "
                          "records around them were replayed: inspect, then delete "
                          "them")  # fmt: skip
