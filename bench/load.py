"""Ingest and list load on loopback against a real server (`make bench-load`).

Starts `istore serve` on a fresh data root and drives it with wrk (a C load
generator; Debian package `wrk`), then checks that the store holds exactly what was
acknowledged. List latency is measured over a store of `--list-rows` generated
interactions. Prints a markdown table; `--json FILE` also writes the numbers."""

from __future__ import annotations

import argparse
import os
import platform
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
from testkit import Server  # noqa: E402

SQL_COUNT = {"sql": "SELECT count(*) AS n FROM interactions"}


def ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def without_ids(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def wrk(
    url: str,
    body: Path,
    ctype: str,
    conns: int,
    seconds: int,
    *,
    cycle: bool = False,
    auth: str | None = None,
) -> dict[str, float]:
    """wrk POSTing ``body`` (or, with ``cycle``, each line of ``body`` in turn); ``auth``:
    a bearer token (post.lua only)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(ROOT / ("bench/cycle.lua" if cycle else "bench/post.lua")), url]
    env = {**os.environ, "BODY": str(body), "BODIES": str(body), "CTYPE": ctype}
    if auth:
        env["AUTH"] = auth
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    reqs = re.search(r"(\d+) requests in ([\d.]+)s", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"Socket errors: .*timeout (\d+)", out)
    lat = re.search(r"p50_ms=([\d.]+) p99_ms=([\d.]+)", out)
    assert reqs and lat, out
    return {
        "requests": int(reqs.group(1)),
        "seconds": float(reqs.group(2)),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
        "p50_ms": float(lat.group(1)),
        "p99_ms": float(lat.group(2)),
    }


def count(url: str) -> int:
    return int(httpx.post(url + "/api/v1/sql", json=SQL_COUNT, timeout=120).json()["data"][0]["n"])


def ingest(work: Path, seconds: int, batch: int) -> dict[str, dict[str, float]]:
    rows = without_ids(list(generate(batch, seed=11)))
    batch_body = work / "batch.ndjson"
    batch_body.write_bytes(ndjson(rows))
    single_body = work / "single.json"
    single_body.write_bytes(orjson.dumps(rows[3]))
    out: dict[str, dict[str, float]] = {}
    server = Server(work / "ingest-data").start()
    try:
        url = server.url + "/api/v1/interactions"
        for name, body, ctype, conns, per in [
            ("ingest_ndjson_1000", batch_body, "application/x-ndjson", 4, batch),
            ("ingest_single_c32", single_body, "application/json", 32, 1),
        ]:
            before = count(server.url)
            r = wrk(url, body, ctype, conns, seconds)
            acked = (r["requests"] - r["errors"]) * per
            stored = count(server.url) - before
            size = len(body.read_bytes()) / per
            out[name] = {**r, "acked": acked, "stored": stored,
                         "per_s": acked / r["seconds"], "bytes_per_row": size}  # fmt: skip
    finally:
        server.stop()
    return out


def list_latency(work: Path, rows: int) -> dict[str, dict[str, float]]:
    data = work / "list-data"
    src = work / "list.ndjson"
    with open(src, "wb") as f:
        for r in generate(rows, seed=5, days=30):
            f.write(orjson.dumps(r) + b"\n")
    t0 = time.perf_counter()
    cli = [sys.executable, "-m", "istore.cli"]
    subprocess.run([*cli, "import", "--data", str(data), str(src)], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    import_s = time.perf_counter() - t0
    subprocess.run([*cli, "compact", "--data", str(data)], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    out: dict[str, dict[str, float]] = {"import_cli": {"rows": rows, "seconds": import_s,
                                                       "per_s": rows / import_s}}  # fmt: skip
    server = Server(data).start(timeout=600)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for name, params in [
                ("list_use_case_label", {"use_case": "support", "label": "project:helpdesk"}),
                ("list_use_case", {"use_case": "support"}),
                ("list_label_any_use_case", {"label": "project:helpdesk"}),
                ("list_use_case_label_no_match", {"use_case": "support", "label": "project:none"}),
            ]:
                lat = []
                for _ in range(30):
                    t = time.perf_counter()
                    resp = c.get("/api/v1/interactions", params={**params, "limit": "50"})
                    lat.append((time.perf_counter() - t) * 1000)
                    assert resp.status_code == 200, resp.text
                lat = sorted(lat[5:])
                out[name] = {"rows": rows, "p50_ms": statistics.median(lat),
                             "p95_ms": lat[int(len(lat) * 0.95) - 1],
                             "returned": len(resp.json()["data"])}  # fmt: skip
    finally:
        server.stop()
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| scenario | result | latency |", "|---|---|---|"]
    for name, r in results.items():
        if "per_s" in r and name.startswith("ingest"):
            res = f"{r['per_s']:,.0f} interactions/s ({r['bytes_per_row']:,.0f} B each; " \
                  f"acked {r['acked']:,}, stored {r['stored']:,})"  # fmt: skip
            lat = f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms per request"
        elif name == "import_cli":
            res, lat = f"{r['per_s']:,.0f} interactions/s ({r['rows']:,} rows)", "–"
        else:
            res = f"{r['returned']:.0f} rows of {r['rows']:,}"
            lat = f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms"
        lines.append(f"| {name} | {res} | {lat} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--list-rows", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-"))
    try:
        results = ingest(work, args.seconds, args.batch)
        if args.list_rows:
            results.update(list_latency(work, args.list_rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")  # fmt: skip
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
