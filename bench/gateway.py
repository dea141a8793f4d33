"""Gateway overhead (`make bench-gateway`): the latency the gateway adds to a chat
call, against calling the same instant upstream directly, in the same run.

An instant upstream (``bench.instant_upstream``, raw ASGI on uvicorn) and ``istore
serve`` with a routing file pointing at it each run in their own process; ``wrk`` (C)
drives both with the same request body, alternating direct and gateway rounds. At 32
connections (closed loop: each connection sends its next call as soon as the last is
answered) and at 1. Added latency = gateway percentile − direct percentile, the median
over rounds. Afterwards the store must hold one interaction per answered gateway call.
Prints a markdown table; ``--json FILE`` also writes the numbers."""

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

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import count, wrk  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8, help="length of each wrk round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="istore-bench-gw-"))
    port = free_port()
    upstream = start_upstream(port)
    config = work / "gateway.toml"
    config.write_text(
        f'[models.instant]\nbase_url = "http://127.0.0.1:{port}/v1"\n\n'
        '[use_cases.bench]\ndefault_model = "instant"\n'
    )
    body = work / "chat.json"
    body.write_bytes(orjson.dumps(BODY))
    server = Server(work / "data", ISTORE_GATEWAY_CONFIG=str(config)).start()
    results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    answered = 0
    try:
        direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        gw_url = server.url + "/api/v1/chat/completions"
        wrk(gw_url, body, "application/json", 8, 2)  # warm both up
        wrk(direct_url, body, "application/json", 8, 1)
        before = count(server.url)
        for conns in (32, 1):
            rounds: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                rounds["direct"].append(wrk(direct_url, body, "application/json", conns,
                                            args.seconds))  # fmt: skip
                r = wrk(gw_url, body, "application/json", conns, args.seconds)
                assert r["errors"] == 0, r
                answered += int(r["requests"])
                rounds["gateway"].append(r)
            summary = {}
            for side, rs in rounds.items():
                summary[side] = {
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "per_s": statistics.median(r["requests"] / r["seconds"] for r in rs),
                }
            pairs = list(zip(rounds["gateway"], rounds["direct"], strict=True))
            summary["added"] = {
                q: statistics.median(g[q] - d[q] for g, d in pairs) for q in ("p50_ms", "p99_ms")
            }
            summary["rounds"] = rounds  # type: ignore[assignment]
            results[f"c{conns}"] = summary
        # wrk's in-flight calls at the end of a round are answered too, and logged.
        time.sleep(1.5)
        logged = count(server.url) - before
        results["logged"] = {"answered_by_wrk": answered, "logged": logged}
    finally:
        server.stop()
        upstream.terminate()
        upstream.wait()
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def table(results: dict[str, object]) -> str:
    lines = [
        f"Gateway overhead on {results['machine']} (wrk, instant upstream on loopback)",
        "",
        "| clients | direct p50 / p99 | gateway p50 / p99 | added p50 / p99 | gateway calls/s |",
        "|---|---|---|---|---|",
    ]
    for key in ("c32", "c1"):
        s = results[key]
        assert isinstance(s, dict)
        d, g, a = s["direct"], s["gateway"], s["added"]
        lines.append(
            f"| {key[1:]} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms | "
            f"{g['p50_ms']:.2f} / {g['p99_ms']:.2f} ms | "
            f"**{a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms** | "
            f"{g['per_s']:,.0f} (direct {d['per_s']:,.0f}) |"
        )
    lg = results["logged"]
    assert isinstance(lg, dict)
    lines += ["", f"Logged {lg['logged']:,} interactions for {lg['answered_by_wrk']:,} calls "
              "wrk counted as answered (wrk does not count calls in flight when a round "
              "ends)."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
