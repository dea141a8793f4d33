"""Gateway overhead (`make bench-gateway`): the latency the gateway adds to a chat
call, against calling the same instant upstream directly, in the same run, and (with
``--litellm``) the same for LiteLLM's proxy (``bench.litellm_peer``).

An instant upstream (``bench.instant_upstream``, raw ASGI on uvicorn), ``istore serve``
with a routing file pointing at it (one process, an API key) and LiteLLM (one worker, a
master key) each run in their own process; ``wrk`` (C) drives them with the same request
body, alternating direct, gateway and LiteLLM rounds, at 1 connection and at 32 (closed
loop: each connection sends its next call as soon as the last is answered). Added
latency = proxy percentile − direct percentile, the median over rounds; server CPU per
call = the process's user + system time (``/proc/<pid>/stat``, children included) over
a round divided by its calls. Afterwards the store must hold one interaction per
answered gateway call, and LiteLLM's log one record per answered call. Prints a
markdown table; ``--json FILE`` also writes the numbers."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import litellm_peer  # noqa: E402
from bench.load import wrk  # noqa: E402
from testkit import Server, free_port  # noqa: E402

BODY = {
    "model": "bench/instant",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant for an industrial tools shop."},
        {"role": "user", "content": "Which cordless drill should I buy for concrete walls?"},
    ],
    "temperature": 0.2,
    "max_tokens": 256,
    "labels": {"project": "RAG Bot", "topic": "Industrial Tools"},
}


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.instant_upstream:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the instant upstream did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants (``/proc``), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def create_key(data: Path) -> str:
    """An ingest + read key (the gateway logs with the caller's key; read for the count)."""
    out = subprocess.run(
        [sys.executable, "-m", "istore.cli", "keys", "create", "--data", str(data),
         "--scope", "ingest", "--scope", "read", "--name", "bench"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1].strip()


def count(url: str, key: str) -> int:
    r = httpx.post(url + "/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"},
                   headers={"authorization": f"Bearer {key}"}, timeout=120)  # fmt: skip
    return int(r.json()["data"][0]["n"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8, help="length of each wrk round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--litellm", type=Path, help="the `litellm` executable of its own venv")
    ap.add_argument("--skip-db-probe", action="store_true",
                    help="do not try LiteLLM's PostgreSQL logging first")  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="istore-bench-gw-"))
    port = free_port()
    config = work / "gateway.toml"
    config.write_text(
        f'[models.instant]\nbase_url = "http://127.0.0.1:{port}/v1"\n\n'
        '[use_cases.bench]\ndefault_model = "instant"\n'
    )
    body = work / "chat.json"
    body.write_bytes(orjson.dumps(BODY))
    peer_body = work / "chat-peer.json"  # without our `labels` extension
    peer_body.write_bytes(orjson.dumps({k: v for k, v in BODY.items() if k != "labels"}))
    key = create_key(work / "data")
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    upstream = start_upstream(port)
    try:
        run(args, work, port, body, peer_body, key, config, results)
    finally:
        upstream.terminate()
        upstream.wait()
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def run(
    args: argparse.Namespace,
    work: Path,
    port: int,
    body: Path,
    peer_body: Path,
    key: str,
    config: Path,
    results: dict[str, Any],
) -> None:
    """The rounds, with LiteLLM (``--litellm``) and our server started and stopped here."""
    peer: litellm_peer.LiteLLM | None = None
    if args.litellm:
        exe = args.litellm.resolve()
        if not args.skip_db_probe:
            probe = litellm_peer.database_probe(exe, work / "litellm-db", port)
            results["litellm_database_logging"] = probe
            print(f"LiteLLM with DATABASE_URL: {probe}", flush=True)
        peer = litellm_peer.LiteLLM(exe, work / "litellm", port).start()
        results["litellm_logging"] = (
            "a CustomLogger callback appending each call's standard_logging_object to a "
            "local JSON-lines file (flushed per call, no fsync)"
        )
    try:
        # One process each side: the comparison is per process.
        server = Server(work / "data", ISTORE_GATEWAY_CONFIG=str(config), ISTORE_WORKERS="1")
        server.start()
        try:
            measure(args, port, body, peer_body, key, server, peer, results)
        finally:
            server.stop()
    finally:
        if peer is not None:
            peer.stop()


def measure(
    args: argparse.Namespace,
    port: int,
    body: Path,
    peer_body: Path,
    key: str,
    server: Server,
    peer: litellm_peer.LiteLLM | None,
    results: dict[str, Any],
) -> None:
    assert server.proc is not None
    sides: dict[str, tuple[str, Path, str | None, int | None]] = {
        "direct": (f"http://127.0.0.1:{port}/v1/chat/completions", body, None, None),
        "gateway": (server.url + "/api/v1/chat/completions", body, key, server.proc.pid),
    }
    if peer is not None:
        assert peer.proc is not None
        sides["litellm"] = (peer.url + "/v1/chat/completions", peer_body,
                            litellm_peer.MASTER_KEY, peer.proc.pid)  # fmt: skip
    answered = {side: 0 for side in sides}
    for url, b, auth, _ in sides.values():  # warm up
        wrk(url, b, "application/json", 8, 2, auth=auth)
    before = count(server.url, key)
    peer_before = peer.logged() if peer is not None else 0
    for conns in (1, 32):
        rounds: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, (url, b, auth, pid) in sides.items():
                cpu = cpu_seconds(pid) if pid else 0.0
                r = wrk(url, b, "application/json", conns, args.seconds, auth=auth)
                if pid:
                    r["cpu_us_per_call"] = (cpu_seconds(pid) - cpu) / r["requests"] * 1e6
                if side == "gateway":
                    assert r["errors"] == 0, r
                answered[side] += int(r["requests"] - r["errors"])
                rounds[side].append(r)
        summary: dict[str, object] = {}
        for side, rs in rounds.items():
            summary[side] = {
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "per_s": statistics.median(r["requests"] / r["seconds"] for r in rs),
                "errors": sum(r["errors"] + r["timeouts"] for r in rs),
            }
            if side != "direct":
                pairs = list(zip(rs, rounds["direct"], strict=True))
                summary[side]["added"] = {  # type: ignore[index]
                    q: statistics.median(g[q] - d[q] for g, d in pairs)
                    for q in ("p50_ms", "p99_ms")
                }
                summary[side]["cpu_us_per_call"] = statistics.median(  # type: ignore[index]
                    r["cpu_us_per_call"] for r in rs
                )
        summary["rounds"] = rounds
        results[f"c{conns}"] = summary
    # wrk's in-flight calls at the end of a round are answered too, and logged.
    time.sleep(3)
    results["logged"] = {"answered_by_wrk": answered["gateway"],
                         "logged": count(server.url, key) - before}  # fmt: skip
    if peer is not None:
        results["litellm_logged"] = {"answered_by_wrk": answered["litellm"],
                                     "logged": peer.logged() - peer_before}  # fmt: skip


def table(results: dict[str, Any]) -> str:
    peer = "litellm" in results["c1"]
    lines = [
        f"Gateway overhead on {results['machine']} (wrk, instant upstream on loopback, "
        "one server process each)",
        "",
        "| clients | side | p50 / p99 | added p50 / p99 | calls/s | server CPU per call |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("c1", "c32"):
        s = results[key]
        d = s["direct"]
        lines.append(f"| {key[1:]} | direct | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms | – | "
                     f"{d['per_s']:,.0f} | – |")  # fmt: skip
        for side, name in [("gateway", "**istore gateway**"), ("litellm", "LiteLLM proxy")]:
            if side not in s:
                continue
            g = s[side]
            a = g["added"]
            errors = f" ({g['errors']:,} errors)" if g["errors"] else ""
            lines.append(
                f"| {key[1:]} | {name} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} ms | "
                f"{a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms | {g['per_s']:,.0f}{errors} | "
                f"{g['cpu_us_per_call']:,.0f} µs |"
            )
        if peer:
            ratio = s["gateway"]["per_s"] / s["litellm"]["per_s"]
            lines.append(f"| {key[1:]} | ratio | | | **{ratio:.1f}×** | |")
    lg = results["logged"]
    lines += ["", f"istore logged {lg['logged']:,} interactions for {lg['answered_by_wrk']:,} "
              "calls wrk counted as answered (wrk does not count calls in flight when a "
              "round ends)."]  # fmt: skip
    if peer:
        ll = results["litellm_logged"]
        lines.append(f"LiteLLM logged {ll['logged']:,} calls for {ll['answered_by_wrk']:,} "
                     f"answered, through {results['litellm_logging']}.")  # fmt: skip
        probe = results.get("litellm_database_logging")
        if probe and not probe.get("ok"):
            lines.append(f"LiteLLM's database logging: blocked: {probe.get('error')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
