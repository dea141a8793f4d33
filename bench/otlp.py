"""OTLP ingest, side by side with Arize Phoenix (`make bench-otlp`).

The same load goes to both, on this machine, one after the other: ``--spans`` LLM-call
spans with their content (OpenInference attributes, the convention Phoenix reads
natively), serialized once beforehand as OTLP/HTTP protobuf requests of 512 spans (how
the SDK's BatchSpanProcessor batches them), sent by ``--senders`` concurrent exporters.
Measured per server: spans/s accepted (first request to last 200), seconds from the
last 200 until every span is queryable, peak RSS of the server's processes, bytes on
disk afterwards; and that nothing was lost (the count, and spot checks of content).

istore runs as ``istore serve`` on a fresh data root; Phoenix as ``phoenix serve``
(its own OTLP/HTTP endpoint, embedded SQLite in a fresh working directory) from the
venv the make target builds. Prints a markdown table; ``--json FILE`` keeps the numbers."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server, free_port  # noqa: E402
from tests.otlp_payloads import PROTOBUF, llm_span, traces  # noqa: E402

BATCH = 512
QUESTION = ("Our order #{i} of 40 cordless drills arrived with two damaged units; what are "
            "the steps to get replacements, and can they ship before Friday?")  # fmt: skip
ANSWER = (
    "I'm sorry about the damaged drills. Reply with photos of the two units and the "
    "order number; we ship replacements the same day, so Friday delivery works. "
) * 2


def requests(n: int) -> list[bytes]:
    out = []
    for start in range(0, n, BATCH):
        spans = []
        for i in range(start, min(n, start + BATCH)):
            trace, span = (i + 1).to_bytes(16, "big"), (i + 1).to_bytes(8, "big")
            s = llm_span(trace, span, i, content=QUESTION.format(i=i),
                         **{"llm.output_messages.0.message.content": ANSWER + str(i),
                            "session.id": f"s{i % 1000}", "user.id": f"u{i % 5000}",
                            "metadata": '{"use_case": "support", "tier": "gold"}'})  # fmt: skip
            s.start_time_unix_nano = time.time_ns() - 40_000_000
            s.end_time_unix_nano = s.start_time_unix_nano + 40_000_000
            spans.append(s)
        out.append(traces(*spans, resource={"service.name": "support-bot"}))
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.1)


def drive(url: str, bodies: list[bytes], senders: int, headers: dict[str, str]) -> float:
    """Seconds from the first request to the last 200; every request must be a 200."""
    lock = threading.Lock()
    todo = list(reversed(bodies))

    def sender() -> None:
        with httpx.Client(timeout=600) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    body = todo.pop()
                for attempt in range(100):
                    r = c.post(url, content=body, headers=headers)
                    if r.status_code == 200:
                        ps = ExportTraceServiceResponse.FromString(r.content).partial_success
                        if ps.rejected_spans:
                            raise RuntimeError(f"{url}: spans rejected: {ps.error_message}")
                        break
                    if r.status_code not in (429, 503):
                        raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
                    time.sleep(float(r.headers.get("retry-after", "1")) * (attempt + 1) / 4)
                else:
                    raise RuntimeError(f"{url}: still refused after retries")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        for f in [pool.submit(sender) for _ in range(senders)]:
            f.result()
    return time.perf_counter() - t0


def wait_count(count: Callable[[], int], n: int, timeout: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    seen = 0
    while time.perf_counter() - t0 < timeout:
        seen = count()
        if seen >= n:
            return time.perf_counter() - t0, seen
        time.sleep(0.05)
    return float("nan"), seen


def run_istore(bodies: list[bytes], n: int, senders: int, work: Path) -> dict[str, Any]:
    data = work / "istore"
    server = Server(data).start()
    assert server.proc is not None
    sampler = Sampler(server.proc.pid)
    sampler.start()
    try:
        accept_s = drive(server.url + "/v1/traces", bodies, senders, PROTOBUF)
        sql = {"sql": "SELECT count(*) AS n FROM interactions WHERE source = 'otlp'"}

        def count() -> int:
            return int(httpx.post(server.url + "/api/v1/sql", json=sql).json()["data"][0]["n"])

        visible_s, seen = wait_count(count, n, 600)
        last = f"otlp-{n.to_bytes(16, 'big').hex()}-{n.to_bytes(8, 'big').hex()}"
        r = httpx.get(server.url + "/api/v1/interactions/" + last)
        one = r.json()
        assert one["messages"][1]["content"] == QUESTION.format(i=n - 1), one
        assert one["completion"] == ANSWER + str(n - 1) and one["use_case"] == "support"
        time.sleep(2)  # the flusher writes the log's tail into the tables
    finally:
        sampler.stop.set()
        server.stop()
    return {"accept_s": accept_s, "visible_after_ack_s": visible_s, "stored": seen,
            "peak_rss_bytes": sampler.peak, "disk_bytes": du(data)}  # fmt: skip


PHOENIX_COUNT = """query { projects { edges { node { name recordCount } } } }"""


def run_phoenix(phoenix: str, bodies: list[bytes], n: int, senders: int,
                work: Path) -> dict[str, Any]:  # fmt: skip
    wd = work / "phoenix"
    wd.mkdir()
    port = free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(wd), "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(free_port()), "PHOENIX_HOST": "127.0.0.1"}  # fmt: skip
    proc = subprocess.Popen([phoenix, "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(work / "phoenix.log", "wb"))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("phoenix did not start: " + (work / "phoenix.log").read_text())
            time.sleep(0.2)
        sampler = Sampler(proc.pid)
        sampler.start()
        accept_s = drive(url + "/v1/traces", bodies, senders, PROTOBUF)

        def count() -> int:
            r = httpx.post(url + "/graphql", json={"query": PHOENIX_COUNT}, timeout=60)
            edges = r.json()["data"]["projects"]["edges"]
            return sum(int(e["node"]["recordCount"]) for e in edges)

        visible_s, seen = wait_count(count, n, 3600)
        sampler.stop.set()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"accept_s": accept_s, "visible_after_ack_s": visible_s, "stored": seen,
            "peak_rss_bytes": sampler.peak, "disk_bytes": du(wd),
            "version": subprocess.run([str(Path(phoenix).parent / "python"), "-c",
                                       "import phoenix; print(phoenix.__version__)"],
                                      capture_output=True, text=True).stdout.strip()}  # fmt: skip


def table(n: int, res: dict[str, dict[str, Any]]) -> str:
    rows = ["| | spans/s accepted | queryable after the last ack | spans/s end to end | lost "
            "| peak RSS | on disk |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in res.items():
        rows.append(
            f"| {name} | {n / r['accept_s']:,.0f} | {r['visible_after_ack_s']:.2f} s | "
            f"{n / (r['accept_s'] + r['visible_after_ack_s']):,.0f} | "
            f"{n - r['stored']} | {r['peak_rss_bytes'] / 2**20:,.0f} MiB | "
            f"{r['disk_bytes'] / 2**20:,.1f} MiB |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--phoenix", help="path of the `phoenix` command (omit: istore only)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bodies = requests(args.spans)
    work = Path(tempfile.mkdtemp(prefix="istore-bench-otlp-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        results["istore"] = run_istore(bodies, args.spans, args.senders, work)
        if args.phoenix:
            results["phoenix"] = run_phoenix(args.phoenix, bodies, args.spans, args.senders,
                                             work)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "spans": args.spans,
        "batch": BATCH,
        "senders": args.senders,
        "request_bytes": sum(map(len, bodies)) // len(bodies),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "results": results,
    }
    if "phoenix" in results:
        ours, theirs = results["istore"], results["phoenix"]
        out["accept_ratio"] = theirs["accept_s"] / ours["accept_s"]
        out["end_to_end_ratio"] = (theirs["accept_s"] + theirs["visible_after_ack_s"]) / (
            ours["accept_s"] + ours["visible_after_ack_s"]
        )
    print(table(args.spans, results))
    if "accept_ratio" in out:
        print(f"\nistore/Phoenix: {out['accept_ratio']:.1f}x the spans/s accepted, "
              f"{out['end_to_end_ratio']:.1f}x end to end")  # fmt: skip
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
