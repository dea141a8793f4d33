"""One node, several workers, object storage: what each layout ingests, and what it
costs in object-store requests (``make bench-scaling``).

Every layout gets the same generated interactions (``sample_data/generate.py``),
posted as NDJSON batches of 1,000 by client threads for ``--seconds``, durable acks
only. Layouts:

- ``local``: one process on a local folder (the default);
- ``local-workers``: ``istore serve --workers 2`` on the same folder;
- ``s3``: one process on a loopback S3 server (moto), its log on local disk;
- ``s3-3-nodes``: three processes on that bucket, each with its own log.

For the S3 layouts it also counts the S3 requests the servers make (by method), and
measures cross-node visibility: a write on one node until a read on another sees it.
Compare the ratios within one run; the absolute numbers belong to this machine, and
moto is a Python emulator far slower than a real object store."""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

BATCH = 1000


def bodies(n_batches: int) -> list[bytes]:
    from sample_data.generate import generate

    rows = generate(n_batches * BATCH, seed=11)
    out = []
    for _ in range(n_batches):
        chunk = list(itertools.islice(rows, BATCH))
        out.append(b"\n".join(orjson.dumps(r) for r in chunk) + b"\n")
    return out


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], url: str) -> None:
        self.url = url
        self.p = subprocess.Popen(
            [sys.executable, "-m", "istore", "serve", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server {args} did not start")

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)


def drive(urls: list[str], payloads: list[bytes], seconds: float, clients: int) -> dict[str, Any]:
    """Post NDJSON batches round-robin over ``urls`` for ``seconds``; rows acked/s."""
    acked = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds
    headers = {"content-type": "application/x-ndjson"}

    def run(k: int) -> None:
        with httpx.Client(timeout=60) as c:
            i = k
            while time.monotonic() < stop:
                url = urls[i % len(urls)]
                body = payloads[i % len(payloads)]
                # fresh ids: a reused body would be a duplicate, not new work
                body = body.replace(b'"id":"', f'"id":"{uuid.uuid4().hex[:8]}'.encode())
                r = c.post(url + "/api/v1/interactions", content=body, headers=headers)
                if r.status_code in (200, 201):
                    acked[k] += BATCH
                else:
                    errors[k] += 1
                i += clients

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"rows_per_s": round(sum(acked) / elapsed), "errors": sum(errors)}


def visibility(write_url: str, read_url: str, tries: int = 5) -> float:
    from tests.conftest import interaction

    out = []
    for _ in range(tries):
        row = interaction(0, id=str(uuid.uuid4()))
        httpx.post(write_url + "/api/v1/interactions", json=row).raise_for_status()
        t0 = time.monotonic()
        while httpx.get(f"{read_url}/api/v1/interactions/{row['id']}").status_code != 200:
            time.sleep(0.05)
            if time.monotonic() - t0 > 60:
                break
        out.append(time.monotonic() - t0)
    out.sort()
    return round(out[len(out) // 2], 2)


def lookup(url: str) -> float:
    """Seconds for one ``GET /interactions/{id}`` of a stored interaction (a full
    scan of the id column: no id index on disk)."""
    first = httpx.get(url + "/api/v1/interactions", params={"limit": 1}, timeout=600)
    id_ = first.json()["data"][0]["id"]
    t0 = time.monotonic()
    assert httpx.get(f"{url}/api/v1/interactions/{id_}", timeout=600).status_code == 200
    return round(time.monotonic() - t0, 2)


class S3Counter(logging.Handler):
    """Counts the S3 requests moto serves, by method."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for method in ("GET", "PUT", "POST", "HEAD", "DELETE"):
            if f'"{method} ' in msg:
                self.counts[method] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--layouts", default="local,local-workers,s3,s3-3-nodes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    payloads = bodies(20)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": args.seconds,
        "clients": args.clients,
        "batch": BATCH,
    }
    tmp = Path(tempfile.mkdtemp(prefix="istore-scaling-"))
    counter = S3Counter()
    moto = None
    s3env: dict[str, str] = {}
    if "s3" in args.layouts:
        from tests.s3 import start_s3

        wl = logging.getLogger("werkzeug")
        wl.setLevel(logging.INFO)
        wl.propagate = False
        wl.handlers = [counter]
        moto, s3env = start_s3("bench")
    common = {"ISTORE_MAINTENANCE_INTERVAL_S": "0", "ISTORE_LOG_LEVEL": "warning"}
    try:
        for layout in args.layouts.split(","):
            procs: list[Proc] = []
            if layout == "local":
                port = free_port()
                procs.append(Proc(["--data", str(tmp / "l1"), "--port", str(port)], common,
                                  f"http://127.0.0.1:{port}"))  # fmt: skip
            elif layout == "local-workers":
                port = free_port()
                argv = ["--data", str(tmp / "l2"), "--port", str(port), "--workers", "2"]
                procs.append(Proc(argv, common, f"http://127.0.0.1:{port}"))
            elif layout in ("s3", "s3-3-nodes"):
                n = 1 if layout == "s3" else 3
                for i in range(n):
                    port = free_port()
                    env = {**common, **s3env, "ISTORE_WAL_DIR": str(tmp / layout / f"n{i}")}
                    procs.append(Proc(["--data", f"s3://bench/{layout}", "--port", str(port)],
                                      env, f"http://127.0.0.1:{port}"))  # fmt: skip
            else:
                raise SystemExit(f"unknown layout {layout}")
            urls = [p.url for p in procs]
            counter.counts.clear()
            r = drive(urls, payloads, args.seconds, args.clients)
            r["s3_requests_per_s"] = {
                k: round(v / args.seconds, 1) for k, v in sorted(counter.counts.items())
            }
            if len(urls) > 1:
                from tests.test_scaling import cross_node_visibility

                for p in procs:  # the backlog first: visibility when the nodes keep up
                    while httpx.get(p.url + "/readyz").json()["pending_rows"]:
                        time.sleep(0.2)
                committed, seen = cross_node_visibility(urls[0], urls[-1], confirm=False)
                r["cross_node_commit_s"], r["cross_node_seen_s"] = (
                    round(committed, 2),
                    round(seen, 2),
                )
            elif not layout.startswith("s3"):
                r["read_after_write_s"] = visibility(urls[0], urls[0])
            r["files"] = httpx.get(urls[0] + "/readyz").json()["index"]
            r["lookup_by_id_s"] = lookup(urls[-1])
            for p in procs:
                p.stop()
            results[layout] = r
            print(layout, json.dumps(r), flush=True)
    finally:
        if moto is not None:
            moto.stop()
    base = results.get("local", {}).get("rows_per_s")
    if base:
        for layout in args.layouts.split(","):
            results[layout]["ratio_to_local"] = round(results[layout]["rows_per_s"] / base, 2)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
