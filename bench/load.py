"""Ingest and list load on loopback against a real server (`make bench-load`).

Starts `istore serve` on a fresh data root, drives it with wrk (a C load generator,
Debian package `wrk`), then checks that the store holds exactly what was
acknowledged. Prints one line per scenario; `--json` writes them to a file."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_data.generate import generate  # noqa: E402
from tests.conftest import Server  # noqa: E402


def _ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _strip_ids(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def wrk(url: str, body: Path, ctype: str, conns: int, seconds: int) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(conns),
            "-d",
            f"{seconds}s",
            "-s",
            str(ROOT / "bench/post.lua"),
            url,
        ],
        env={**os.environ, "BODY": str(body), "CTYPE": ctype},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    reqs = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"p50_ms=([\d.]+) p99_ms=([\d.]+)", out)
    assert reqs and p50, out
    return {
        "requests": int(reqs.group(1)),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": float(p50.group(1)),
        "p99_ms": float(p50.group(2)),
    }


def count(url: str) -> int:
    r = httpx.post(
        url + "/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"}, timeout=60
    )
    return int(r.json()["data"][0]["n"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--list-rows", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="istore-bench-"))
    try:
        rows = _strip_ids(list(generate(args.batch, seed=11)))
        batch_body = work / "batch.ndjson"
        batch_body.write_bytes(_ndjson(rows))
        single_body = work / "single.json"
        single_body.write_bytes(orjson.dumps(rows[3]))

        server = Server(work / "data").start()
        try:
            url = server.url + "/api/v1/interactions"
            r = wrk(url, batch_body, "application/x-ndjson", 4, args.seconds)
            stored = count(server.url)
            acked = (r["requests"] - r["errors"]) * args.batch
            results["ingest_batch_1000"] = {
                **r,
                "interactions_per_s": acked / args.seconds,
                "acked": acked,
                "stored": stored,
            }
            print(
                f"batched ingest: {acked / args.seconds:,.0f} interactions/s "
                f"(p50 {r['p50_ms']} ms/request, acked {acked}, stored {stored})"
            )
            before = stored
            r = wrk(url, single_body, "application/json", 32, args.seconds)
            stored = count(server.url) - before
            acked = r["requests"] - r["errors"]
            results["ingest_single_c32"] = {
                **r,
                "interactions_per_s": acked / args.seconds,
                "acked": acked,
                "stored": stored,
            }
            print(
                f"single ingest, 32 concurrent: {acked / args.seconds:,.0f}/s "
                f"(p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, acked {acked}, stored {stored})"
            )
        finally:
            server.stop()

        # List latency over a big table: import generated rows with the CLI path.
        if args.list_rows:
            big = work / "big"
            src = work / "big.ndjson"
            with open(src, "wb") as f:
                for r0 in generate(args.list_rows, seed=5, days=30):
                    f.write(orjson.dumps(r0) + b"\n")
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "istore.cli", "import", "--data", str(big), str(src)],
                check=True,
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            t_import = time.perf_counter() - t0
            subprocess.run(
                [sys.executable, "-m", "istore.cli", "compact", "--data", str(big)],
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            server = Server(big).start(timeout=300)
            try:
                with httpx.Client(base_url=server.url, timeout=60) as c:
                    uc = c.post(
                        "/api/v1/sql",
                        json={
                            "sql": "SELECT use_case FROM interactions GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
                        },
                    ).json()["data"][0]["use_case"]
                    params = {"use_case": uc, "label": "project:atlas", "limit": "50"}
                    lat = []
                    for _ in range(40):
                        t = time.perf_counter()
                        resp = c.get("/api/v1/interactions", params=params)
                        lat.append((time.perf_counter() - t) * 1000)
                        assert resp.status_code == 200, resp.text
                    n = len(resp.json()["data"])
                lat = lat[5:]
                results["list_use_case_label_1M"] = {
                    "rows": args.list_rows,
                    "p50_ms": statistics.median(lat),
                    "p95_ms": sorted(lat)[int(len(lat) * 0.95) - 1],
                    "returned": n,
                    "import_s": t_import,
                }
                print(
                    f"list use_case+label over {args.list_rows:,}: p50 {statistics.median(lat):.1f} ms "
                    f"(returned {n}; import {t_import:.0f} s = {args.list_rows / t_import:,.0f}/s)"
                )
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
