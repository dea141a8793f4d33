"""Query latency over a large store, via HTTP on a real server (`make bench-query`).

    python bench/query.py [--rows 10000000] [--runs 30] [--json FILE]

Builds a compacted store of ``--rows`` synthetic interactions straight into the Delta
table (vectorised, seeded; not through the write-ahead log, which the ingest
benchmarks measure): 10 use cases, 6 models, 30 days, labels ``project`` (5 values),
``topic`` (500) and ``customer_id`` (100,000). Then times, on one `istore serve`:

- lookup: one use case + 2 labels (``project`` and ``topic``), newest 100;
- lookup_rare: one use case + ``customer_id`` (a ~10-row answer);
- stats: ``group_by=label:topic`` over one use case (count, p95 latency);
- stats_2d: ``group_by=model,day`` over one use case with 4 metrics;
- the on-disk index (issue 17): ``GET /interactions/{id}`` for 400 random stored ids
  (p50/p99), one label across every use case over a week (newest 100), a retry storm
  (32 connections resending 5,000 stored interactions, wrk) against fresh single
  ingest on the same server, start-up to ready on a second start, and the index's size.

Run at 1M and 10M to see what grows with the table. Prints p50/p95 per query (the
first 5 runs are warm-up) as a markdown table."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from deltalake import write_deltalake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.load import wrk  # noqa: E402
from store.engine import Store  # noqa: E402
from store.index import FILE as INDEX_FILE  # noqa: E402
from store.maintenance import compact, writer_properties  # noqa: E402
from testkit import Server, interaction  # noqa: E402
from testkit.synthetic import START_US, chunk  # noqa: E402


def build(root: Path, rows: int, seed: int = 7) -> float:
    Store(root).close()  # creates the tables the store expects
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    step = 1_000_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        write_deltalake(str(root / "interactions"), chunk(rng, start, n), mode="append",
                        partition_by=["use_case", "day"],
                        writer_properties=writer_properties())  # fmt: skip
        print(f"  wrote {start + n:,} rows", file=sys.stderr)
    compact(root)
    return time.perf_counter() - t0


def timed(c: httpx.Client, path: str, params: dict[str, object], runs: int) -> dict[str, float]:
    lat = []
    for _ in range(runs + 5):
        t = time.perf_counter()
        r = c.get(path, params=params)  # type: ignore[arg-type]
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    body = r.json()
    kept = sorted(lat[5:])
    return {"p50_ms": statistics.median(kept), "p95_ms": kept[int(len(kept) * 0.95) - 1],
            "returned": len(body["data"])}  # fmt: skip


def index_figures(c: httpx.Client, url: str, work: Path, results: dict[str, Any]) -> None:
    """Point reads, one label across use cases, and a retry storm: what the on-disk
    index answers, and what must stay flat from 1M to 10M rows."""
    ids = [r["id"] for r in c.post("/api/v1/sql", json={
        "sql": "SELECT id FROM interactions USING SAMPLE 420 ROWS"}).json()["data"]]  # fmt: skip
    lat = []
    for id_ in ids:
        t = time.perf_counter()
        r = c.get(f"/api/v1/interactions/{id_}")
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    kept = sorted(lat[20:])
    results["point_read"] = {"p50_ms": statistics.median(kept),
                             "p99_ms": kept[int(len(kept) * 0.99) - 1], "n": len(kept)}  # fmt: skip
    end = START_US // 1_000_000 + 30 * 86_400
    results["label_all_use_cases_week"] = timed(c, "/api/v1/interactions", {
        "label": "topic:topic-7", "from": end - 7 * 86_400, "to": end, "limit": 100},
        30)  # fmt: skip
    stored = [interaction(i, id=f"retry-{i:05d}", use_case="uc-1") for i in range(5000)]
    body = b"".join(orjson.dumps(x) + b"\n" for x in stored)
    r = c.post("/api/v1/interactions", content=body,
               headers={"content-type": "application/x-ndjson"})  # fmt: skip
    assert r.status_code == 201, r.text
    (work / "stored.ndjson").write_bytes(body)
    (work / "fresh.json").write_bytes(orjson.dumps(interaction(1)))
    retry = wrk(url + "/api/v1/interactions", work / "stored.ndjson", "application/json", 32, 10,
                cycle=True)  # fmt: skip
    fresh = wrk(url + "/api/v1/interactions", work / "fresh.json", "application/json", 32, 10)
    results["retry_storm"] = {
        "repeats_per_s": retry["requests"] / retry["seconds"], "repeat_p99_ms": retry["p99_ms"],
        "timeouts": retry["timeouts"], "errors": retry["errors"],
        "fresh_per_s": fresh["requests"] / fresh["seconds"], "fresh_p99_ms": fresh["p99_ms"],
    }  # fmt: skip
    for name in ("point_read", "label_all_use_cases_week", "retry_storm"):
        print(f"  {name}: {results[name]}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--data", type=Path, default=None, help="Reuse/keep a data root here.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-q-"))
    data = args.data or work / "data"
    results: dict[str, Any] = {}
    if not (data / "interactions" / "_delta_log").exists() or not any(
        (data / "interactions").glob("use_case=*")
    ):
        results["build"] = {"rows": args.rows, "seconds": build(data, args.rows)}
    server = Server(data).start(timeout=600)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            t0 = time.perf_counter()  # the label index builds in the background after start
            while c.get("/readyz").json()["index"]["waiting"]:
                time.sleep(0.5)
            results["index_build"] = {"seconds": time.perf_counter() - t0}
            lookups = {
                "lookup_use_case_2_labels": ("/api/v1/interactions", {
                    "use_case": "uc-3", "label": ["project:legal", "topic:topic-7"],
                    "limit": 100}),
                "lookup_use_case_customer": ("/api/v1/interactions", {
                    "use_case": "uc-3", "label": "customer_id:cust-4242", "limit": 100}),
                "stats_label_topic_one_use_case": ("/api/v1/interactions/stats", {
                    "use_case": "uc-3", "group_by": "label:topic",
                    "metrics": "count,p95_latency_ms"}),
                "stats_model_day_one_use_case": ("/api/v1/interactions/stats", {
                    "use_case": "uc-3", "group_by": "model,day",
                    "metrics": "count,sum_tokens,p95_latency_ms,error_rate"}),
            }  # fmt: skip
            for name, (path, params) in lookups.items():
                results[name] = timed(c, path, params, args.runs)
                print(f"  {name}: {results[name]}", file=sys.stderr)
            index_figures(c, server.url, work, results)
    finally:
        server.stop()
    t0 = time.perf_counter()
    again = Server(data).start(timeout=600)
    results["startup"] = {"seconds": time.perf_counter() - t0}
    again.stop()
    size = (data / INDEX_FILE).stat().st_size
    results["index_bytes"] = {"bytes": size, "per_row": size / args.rows}
    print(f"  startup: {results['startup']}, index: {results['index_bytes']}", file=sys.stderr)
    rows = args.rows
    print(f"\n{rows:,} interactions, {platform.machine()}, {platform.python_version()}\n")
    print("| query | p50 ms | p95 ms | rows returned |\n|---|---:|---:|---:|")
    for name, r in results.items():
        if "p95_ms" in r:
            print(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {int(r['returned'])} |")
    for name in ("point_read", "retry_storm", "startup", "index_bytes", "index_build"):
        print(f"{name}: {results.get(name)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
