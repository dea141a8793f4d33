"""Ingest while maintenance runs, against the same load without it
(`make bench-maintenance`).

    python bench/maintenance.py [--rows 1000000] [--rate 150] [--connections 16]
                                [--window 60] [--json FILE]

Builds a store of ``--rows`` synthetic interactions (``testkit.synthetic``: 10 use
cases over 30 days) written in ten appends and not compacted, so that every partition
holds ten small files, and deletes ~5 % of them (tombstones through the store, as
``DELETE`` does). Then on one `istore serve` (scheduled maintenance off):

1. baseline: single-interaction ``POST /api/v1/interactions`` at ``--rate`` per second
   over ``--connections`` connections for ``--window`` seconds;
2. the same load while ``POST /api/v1/maintenance?steps=purge,compact`` runs (started
   2 s into the window; the window lasts until it answered, and at least ``--window``).

Latency is measured from when each request was due (a fixed-rate schedule), so a
stalled server is charged for the requests it delayed. Reports p50/p99, 503s and other
errors per window, their ratio, the largest flush lag seen (``istore_pending_rows``),
and checks that the table holds exactly the rows it should (none lost, none twice)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from deltalake import write_deltalake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store.delta import writer_properties  # noqa: E402
from store.engine import Store  # noqa: E402
from store.lifecycle import chunks, tombstones  # noqa: E402
from store.schema import AMENDMENTS_TABLE, INTERACTIONS_TABLE  # noqa: E402
from testkit import Server, interaction  # noqa: E402
from testkit.synthetic import chunk  # noqa: E402

DELETE_EVERY = 20  # ~5 % of the rows are deleted before the windows


def build(root: Path, rows: int, seed: int = 11) -> dict[str, Any]:
    """``rows`` interactions in ten appends (small files for compaction to merge);
    every ``DELETE_EVERY``-th tombstoned. Returns the counts."""
    Store(root).close()  # the tables the store expects
    rng = np.random.default_rng(seed)
    step = max(rows // 10, 1)
    for start in range(0, rows, step):
        write_deltalake(str(root / "interactions"), chunk(rng, start, min(step, rows - start)),
                        mode="append", partition_by=["use_case", "day"],
                        writer_properties=writer_properties())  # fmt: skip
    with Store(root) as store:
        pairs = [
            (r["id"], r["use_case"])
            for r in store.query(
                "SELECT id, use_case FROM interactions "
                f"WHERE CAST(substr(id, 4) AS BIGINT) % {DELETE_EVERY} = 0",
                max_rows=None,
            ).to_pylist()
        ]
        for part in chunks(pairs):
            store.write(AMENDMENTS_TABLE, tombstones(part)).result(60)
    files = len(list((root / "interactions").rglob("*.parquet")))
    return {"rows": rows, "deleted": len(pairs), "files": files}


class Load:
    """Single-interaction posts on a fixed schedule over ``connections`` connections."""

    def __init__(self, url: str, rate: float, connections: int, tag: str) -> None:
        self.url, self.rate, self.connections, self.tag = url, rate, connections, tag
        self.latencies: list[float] = []
        self.acked: list[str] = []
        self.unavailable = 0
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()

    async def _worker(self, j: int, t0: float) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as c:
            k = 0
            while not self.stop.is_set():
                due = t0 + (j + k * self.connections) / self.rate
                k += 1
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                id_ = f"{self.tag}-{j}-{k}"
                try:
                    r = await c.post("/api/v1/interactions", json=interaction(k, id=id_))
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                    continue
                self.latencies.append((time.perf_counter() - due) * 1000)
                if r.status_code == 201:
                    self.acked.append(id_)
                elif r.status_code == 503:
                    self.unavailable += 1
                else:
                    key = str(r.status_code)
                    self.errors[key] = self.errors.get(key, 0) + 1

    def run(self) -> None:
        async def main() -> None:
            t0 = time.perf_counter() + 0.2
            await asyncio.gather(*(self._worker(j, t0) for j in range(self.connections)))

        asyncio.run(main())

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = np.array(self.latencies or [0.0])
        return {
            "seconds": round(seconds, 1),
            "requests": len(self.latencies) + sum(self.errors.values()),
            "acked": len(self.acked),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 1),
            "503": self.unavailable,
            "errors": dict(self.errors),
        }


def indexed(url: str, timeout: float = 1800) -> None:
    """Wait until the on-disk index covers every data file (``/readyz``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = httpx.get(url + "/readyz", timeout=30).json().get("index") or {}
        if index.get("waiting") == 0:
            return
        time.sleep(1)
    raise RuntimeError("the index did not cover the table in time")


def pending_rows(url: str) -> float:
    """The flush lag now (rows acknowledged, not yet in the tables); 0 when /metrics
    does not answer in time (the windows' figures do not depend on it)."""
    try:
        text = httpx.get(url + "/metrics", timeout=30).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("istore_pending_rows "):
            return float(line.split()[1])
    return 0.0


def window(server: Server, args: argparse.Namespace, tag: str, maintain: bool) -> dict[str, Any]:
    load = Load(server.url, args.rate, args.connections, tag)
    thread = threading.Thread(target=load.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    lag = 0.0
    result: dict[str, Any] = {}
    runner = None
    if maintain:
        time.sleep(2)

        def maintenance() -> None:
            t = time.perf_counter()
            r = httpx.post(server.url + "/api/v1/maintenance", params={"steps": "purge,compact"},
                           timeout=3600)  # fmt: skip
            result.update(r.json(), status=r.status_code, seconds=time.perf_counter() - t)

        runner = threading.Thread(target=maintenance, daemon=True)
        runner.start()
    try:
        while time.perf_counter() - started < args.window or (runner and runner.is_alive()):
            lag = max(lag, pending_rows(server.url))
            time.sleep(0.5)
        if runner is not None:
            time.sleep(2)  # the load goes on a little after the maintenance answered
    finally:
        load.stop.set()
        thread.join()
    out = load.summary(time.perf_counter() - started)
    out["max_pending_rows"] = int(lag)
    if maintain:
        out["maintenance"] = result
    out["_acked"] = load.acked
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    # What the Python client and the server sustain together on a shared 2-core machine
    # (the latency is measured from when a request was due: an overloaded baseline
    # would measure the queue, not the server).
    ap.add_argument("--rate", type=float, default=150.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="istore-bench-maint-"))
    root = tmp / "data"
    try:
        t = time.perf_counter()
        built = build(root, args.rows)
        print(f"built {built} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        server = Server(root, ISTORE_MAINTENANCE_INTERVAL_S="0").start(timeout=120)
        try:
            t = time.perf_counter()
            indexed(server.url)  # until then every write scans the files for its id
            print(f"index built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            base = window(server, args, "base", maintain=False)
            print(f"baseline: {base | {'_acked': len(base['_acked'])}}", file=sys.stderr)
            maint = window(server, args, "maint", maintain=True)
            print(f"maintenance: {maint | {'_acked': len(maint['_acked'])}}", file=sys.stderr)
        finally:
            server.stop()
        with Store(root, writable=False) as store:
            n = store.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM interactions")
            total, distinct = n.column("n")[0].as_py(), n.column("d")[0].as_py()
            raw = store.committed(INTERACTIONS_TABLE, "count(*) AS n").column("n")[0].as_py()
        expect = built["rows"] - built["deleted"] + len(base["_acked"]) + len(maint["_acked"])
        check = {"rows_expected": expect, "rows_visible": total, "distinct_ids": distinct,
                 "rows_in_files": raw, "ok": total == distinct == expect == raw}  # fmt: skip
        for w in (base, maint):
            w.pop("_acked")
        ratio = maint["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None
        report = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {platform.processor() or '?'}, "
            f"{os.cpu_count()} CPUs",
            "command": "make bench-maintenance"
            + (f" ROWS={args.rows}" if args.rows != 1_000_000 else ""),  # fmt: skip
            "store": built,
            "load": {"rate_per_s": args.rate, "connections": args.connections},
            "baseline": base,
            "maintenance": maint,
            "p99_ratio": round(ratio, 2) if ratio else None,
            "check": check,
        }
        print("\n| window | s | requests | p50 ms | p99 ms | max ms | 503 | other errors | "
              "max flush lag (rows) |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
        for name, w in (("baseline", base), ("purge + compact", maint)):
            print(f"| {name} | {w['seconds']} | {w['requests']} | {w['p50_ms']} | "
                  f"{w['p99_ms']} | {w['max_ms']} | {w['503']} | {sum(w['errors'].values())} | "
                  f"{w['max_pending_rows']} |")  # fmt: skip
        print(f"\np99 ratio {report['p99_ratio']}; maintenance "
              f"{maint['maintenance'].get('seconds', 0):.1f} s: "
              f"{ {k: v for k, v in maint['maintenance'].items() if k != 'seconds'} }; "
              f"check {check}")  # fmt: skip
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if not check["ok"]:
            sys.exit("the table does not hold exactly what was acknowledged")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
