"""What ``istore serve --workers N`` buys and costs (`make bench-workers`): single-
interaction ingest at 32 connections (wrk, as ``bench/load.py``) with 1 and with 2
workers, and the resident memory of every process at idle and after ``--ingests``
acknowledged interactions. Checks that the store holds what was acknowledged. Prints a
markdown table; ``--json FILE`` also writes the numbers."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import count, wrk  # noqa: E402
from sample_data.generate import generate  # noqa: E402
from testkit import Server  # noqa: E402


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS of ``pid`` and of each of its children (the workers), in MiB."""
    out: dict[str, float] = {}

    def one(p: int) -> float:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    out[f"main {pid}"] = one(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out[f"worker {child}"] = one(int(child))
    return out


def run(work: Path, body: Path, seconds: int, rounds: int, ingests: int) -> list[dict]:
    """Both layouts up at once, their rounds alternating (so that whatever else the
    machine does weighs on both alike)."""
    servers = {n: Server(work / f"data-{n}", ISTORE_WORKERS=str(n)) for n in (1, 2)}
    for server in servers.values():
        server.start(timeout=60)
    try:
        time.sleep(3)  # every worker up (the port answers as soon as one is)
        out: dict[int, dict] = {}
        for n, server in servers.items():
            assert server.proc is not None
            wrk(server.url + "/api/v1/interactions", body, "application/json", 8, 2)
            out[n] = {"workers": n, "rss_idle_mib": rss_mib(server.proc.pid),
                      "before": count(server.url), "rounds": []}  # fmt: skip
        for _ in range(rounds):
            for n, server in servers.items():
                url = server.url + "/api/v1/interactions"
                out[n]["rounds"].append(wrk(url, body, "application/json", 32, seconds))
        for n, server in servers.items():
            url = server.url + "/api/v1/interactions"
            acked = sum(r["requests"] - r["errors"] for r in out[n]["rounds"])
            while acked < ingests:
                r = wrk(url, body, "application/json", 32, seconds)
                acked += r["requests"] - r["errors"]
            out[n]["acked"] = acked
        time.sleep(2.5)  # a flush, and a refresh on every worker
        for n, server in servers.items():
            assert server.proc is not None
            rs = out[n]["rounds"]
            out[n].update(
                stored=count(server.url) - out[n].pop("before"),
                rss_loaded_mib=rss_mib(server.proc.pid),
                per_s=statistics.median(r["requests"] / r["seconds"] for r in rs),
                p50_ms=statistics.median(r["p50_ms"] for r in rs),
                p99_ms=statistics.median(r["p99_ms"] for r in rs),
                errors=sum(r["errors"] for r in rs),
            )
    finally:
        for server in servers.values():
            server.stop()
    return [out[1], out[2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--ingests", type=int, default=50_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-workers-"))
    body = work / "single.json"
    row = {k: v for k, v in list(generate(4, seed=11))[3].items() if k != "id"}
    body.write_bytes(orjson.dumps(row))
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": []}
    out["runs"] = run(work, body, args.seconds, args.rounds, args.ingests)
    print(table(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


def table(out: dict) -> str:
    lines = [
        f"Single-interaction ingest, 32 connections, on {out['machine']} (wrk on the same machine)",
        "",
        "| workers | interactions/s | p50 / p99 | RSS at idle (MiB) | RSS after the run (MiB) "
        "| acked / stored |",
        "|---|---:|---|---|---|---|",
    ]
    for r in out["runs"]:
        idle = " + ".join(f"{v:.0f}" for v in r["rss_idle_mib"].values())
        loaded = " + ".join(f"{v:.0f}" for v in r["rss_loaded_mib"].values())
        lines.append(
            f"| {r['workers']} | {r['per_s']:,.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms "
            f"| {idle} | {loaded} | {r['acked']:,} / {r['stored']:,} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
