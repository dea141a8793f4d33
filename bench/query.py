"""Query latency over a large store, via HTTP on a real server (`make bench-query`).

    python bench/query.py [--rows 10000000] [--runs 30] [--json FILE]

Builds a compacted store of ``--rows`` synthetic interactions straight into the Delta
table (vectorised, seeded; not through the write-ahead log, which the ingest
benchmarks measure): 10 use cases, 6 models, 30 days, labels ``project`` (5 values),
``topic`` (500) and ``customer_id`` (100,000). Then times, on one `istore serve`:

- lookup: one use case + 2 labels (``project`` and ``topic``), newest 100;
- lookup_rare: one use case + ``customer_id`` (a ~10-row answer);
- stats: ``group_by=label:topic`` over one use case (count, p95 latency);
- stats_2d: ``group_by=model,day`` over one use case with 4 metrics.

Prints p50/p95 per query (the first 5 runs are warm-up) as a markdown table."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from deltalake import write_deltalake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store.engine import Store  # noqa: E402
from store.maintenance import compact, writer_properties  # noqa: E402
from testkit import Server  # noqa: E402
from testkit.synthetic import chunk  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--data", type=Path, default=None, help="Reuse/keep a data root here.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-q-"))
    data = args.data or work / "data"
    results: dict[str, dict[str, float]] = {}
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
    finally:
        server.stop()
    rows = args.rows
    print(f"\n{rows:,} interactions, {platform.machine()}, {platform.python_version()}\n")
    print("| query | p50 ms | p95 ms | rows returned |\n|---|---:|---:|---:|")
    for name, r in results.items():
        if "p50_ms" in r:
            print(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {int(r['returned'])} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
