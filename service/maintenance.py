"""The server's background maintenance: on a schedule (``ISTORE_MAINTENANCE_INTERVAL_S``)
apply retention, purge deleted interactions, compact small files, write a Delta
checkpoint and clean the old log entries, and vacuum files older than
``ISTORE_VACUUM_RETENTION_HOURS``. One job at a time; every run is logged and counted."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from store.engine import Store
from store.lifecycle import Retention, apply_retention, plan_purge, purge
from store.maintenance import MIN_RETENTION_HOURS, compact_tiered
from store.schema import TABLES
from store.state import Lease

log = logging.getLogger("istore.maintenance")

# The steps of a pass, in order; ``POST /api/v1/maintenance?steps=…`` runs some of them.
STEPS = ("retention", "purge", "compact", "vacuum")


class MaintenanceJob:
    def __init__(
        self, store: Store, interval_s: float, vacuum_hours: float, compact_interval_s: float = 0
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        # Between full runs, passes of compaction alone (cheap: tiered, only full levels).
        self.compact_interval_s = compact_interval_s
        self.vacuum_hours = vacuum_hours
        self.runs = 0
        self.failures = 0
        self.skipped = 0
        self.last_run: float | None = None
        self.last_error: str | None = None
        self.last_result: dict[str, Any] = {}
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="istore-maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask a running pass to stop (between steps and between the chunks of a
        purge) and wait up to ``timeout`` for it. A Delta operation under way cannot be
        interrupted; a pass still running after that is left behind: it holds no lock
        the final flush needs, and what it had not committed is never part of a table
        (``vacuum`` removes its files)."""
        self._stop.set()
        self.store.maintenance_stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        tick = self.interval_s
        if 0 < self.compact_interval_s < tick:
            tick = self.compact_interval_s
        next_full = time.monotonic() + self.interval_s
        while not self._stop.wait(tick):
            try:
                if time.monotonic() >= next_full - tick / 2:
                    next_full = time.monotonic() + self.interval_s
                    self.run_once()
                else:
                    self.run_once(("compact",))
            except Exception:  # never let the thread die: the next interval tries again
                log.exception("maintenance run failed")

    def run_once(self, steps: tuple[str, ...] = STEPS, *, dry_run: bool = False) -> dict[str, Any]:
        """One pass (``steps`` of it); errors are logged and counted, never raised.
        Among several writers of the same tables, one runs it at a time (``Lease``);
        the others skip. ``dry_run``: what retention, the purge and vacuum would
        delete, deleting nothing (compaction is left out)."""
        with self._run_lock:
            if dry_run:
                return self._plan(steps)
            if not self.store.shared:
                return self._run(steps)
            lease = Lease(self.store.location, "maintenance", self.store.app_id)
            try:
                with lease as held:
                    if held:
                        return self._run(steps)
            except Exception as exc:  # the lease itself (object store, lock file)
                self.failures += 1
                self.last_error = f"lease: {type(exc).__name__}: {exc}"
                log.exception("maintenance lease failed")
                return {"error": self.last_error}
            self.skipped += 1
            log.info("maintenance skipped: another writer of these tables runs it")
            out: dict[str, Any] = {"skipped": "another writer runs maintenance"}
            # The index is this node's own: its sweep needs no lease.
            if set(steps) & {"retention", "purge", "compact"}:
                try:
                    out["index"] = self.store.sweep_index()
                except Exception as exc:
                    log.exception("index sweep failed")
                    out["errors"] = [f"index: {type(exc).__name__}: {exc}"]
            return out

    def _plan(self, steps: tuple[str, ...]) -> dict[str, Any]:
        store = self.store
        plan: dict[str, Any] = {"dry_run": True}
        if "retention" in steps:
            plan["retention"] = apply_retention(
                store, Retention.load(store.retention_rules()), dry_run=True
            )
        if "purge" in steps:
            plan["purged"] = plan_purge(store)
        if "vacuum" in steps:
            plan["vacuumed"] = self._vacuum(dry_run=True)
        return plan

    def _run(self, steps: tuple[str, ...] = STEPS) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {}
        store = self.store
        errors = []
        # Each step on its own: a bad retention file must not stop the purge.
        for name, step in (
            ("retention", lambda: apply_retention(store, Retention.load(store.retention_rules()))),
            ("purged", lambda: purge(store)),
            ("compacted", self._compact),
            ("refresh", store.refresh),  # the compacted files, before vacuum
            ("index", store.sweep_index),  # what the index holds of files gone
            ("vacuumed", self._vacuum),
        ):
            # The index's sweep follows any step that makes files dead.
            wanted = {"purged": ("purge",), "compacted": ("compact",), "vacuumed": ("vacuum",),
                      "refresh": ("compact",), "index": ("retention", "purge", "compact"),
                      }.get(name, (name,))  # fmt: skip
            if not set(wanted) & set(steps):
                continue
            if store.maintenance_stop.is_set():
                errors.append(f"{name}: not run, the server is stopping")
                continue
            try:
                result[name] = step()
            except Exception as exc:  # the next run tries again
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                log.exception("maintenance step %s failed", name)
        result.pop("refresh", None)
        if errors:
            result["errors"] = errors
            self.failures += 1
        self.last_error = "; ".join(errors) or None
        self.runs += 1
        self.last_run = time.time()
        self.last_result = result
        elapsed = time.perf_counter() - started
        self.store.metrics.timer("run").observe(elapsed)
        compacted = result.get("compacted", {})
        quiet = steps == ("compact",) and not errors and not any(compacted.values())
        (log.debug if quiet else log.info)(
            "maintenance run %d in %.2f s: %s", self.runs, elapsed, result
        )
        return result

    def _compact(self) -> dict[str, int]:
        out = {}
        # Beside the flusher's appends: Delta never makes an append conflict with a
        # compaction (which changes no data), and the compacted files become visible
        # at the ``refresh`` step, indexed before it takes the flush lock.
        with self.store.maintenance():
            for name in TABLES:
                if self.store.maintenance_stop.is_set():
                    break
                dt = self.store.location.open_if_exists(name)
                if dt is None:
                    continue
                out[name] = compact_tiered(dt)["files_removed"]
                if out[name]:
                    dt = self.store.location.open(name)
                    dt.create_checkpoint()
                    dt.cleanup_metadata()
        return out

    def _vacuum(self, dry_run: bool = False) -> dict[str, int]:
        out = {}
        for name in TABLES:
            dt = self.store.location.open_if_exists(name)
            if dt is not None:
                # Other writers' files are uncommitted for a moment after they are
                # written: never vacuum a shared table below the minimum window.
                hours = self.vacuum_hours
                if self.store.shared:
                    hours = max(hours, MIN_RETENTION_HOURS)
                removed = dt.vacuum(
                    retention_hours=math.ceil(hours),
                    dry_run=dry_run,
                    enforce_retention_duration=False,
                )
                out[name] = len(removed)
        return out

    def status(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "runs": self.runs,
            "failures": self.failures,
            "skipped": self.skipped,
            "last_run": self.last_run,
            "last_error": self.last_error,
        }
