"""Sustained mixed load (`make soak`; a short run in CI): one real `istore serve` takes
ingest (single and batched), feedback, lists, stats, SQL and exports at a steady rate
while its maintenance job compacts, for ``--minutes``. It must answer every request
without an error, and its memory must stay flat: RSS at the end within 20 % of RSS
after the first minute (warm-up). Prints latency percentiles per minute and the totals
(requests / errors / RSS); ``--json FILE`` also writes them. Exit 1 on a failure."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit import Server, interaction  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Recorder:
    def __init__(self, start: float) -> None:
        self.start = start
        self.lock = threading.Lock()
        self.lat: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.requests = 0

    def record(self, kind: str, seconds: float, status: int, detail: str = "") -> None:
        minute = int((time.monotonic() - self.start) // 60)
        with self.lock:
            self.requests += 1
            self.lat[(minute, kind)].append(seconds * 1000)
            if status >= 400:
                self.errors.append(f"{kind}: {status} {detail[:200]}")


def _call(rec: Recorder, kind: str, method: Any, *args: Any, **kwargs: Any) -> Any:
    ok = (200, 201)
    t = time.perf_counter()
    try:
        r = method(*args, **kwargs)
    except httpx.HTTPError as exc:
        rec.record(kind, time.perf_counter() - t, 599, repr(exc))
        return None
    rec.record(kind, time.perf_counter() - t, 0 if r.status_code in ok else r.status_code,
               r.text)  # fmt: skip
    return r


def preload(data: Path, rows: int) -> float:
    """Fill ``data`` with ``rows`` generated interactions (``istore import``) before the
    server starts, so the run measures a store in service rather than one growing
    tenfold from empty. Returns the seconds it took."""
    import subprocess

    from sample_data.generate import generate

    started = time.monotonic()
    src = data.parent / "preload.ndjson"
    with open(src, "wb") as f:
        for row in generate(rows, seed=3):
            f.write(orjson.dumps(row) + b"\n")
    cmd = [sys.executable, "-m", "istore", "import", "--data", str(data), str(src)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    src.unlink()
    return time.monotonic() - started


def run(
    minutes: float,
    rate: float,
    seed: int = 7,
    ingest_minutes: float | None = None,
    preload_rows: int = 0,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="istore-soak-"))
    if preload_rows:
        took = preload(work / "data", preload_rows)
        print(f"preloaded {preload_rows} interactions in {took:.0f} s", flush=True)
    server = Server(work / "data", ISTORE_FLUSH_INTERVAL_S="1",
                    ISTORE_MAINTENANCE_INTERVAL_S="30").start()  # fmt: skip
    assert server.proc is not None
    pid = server.proc.pid
    stop = threading.Event()
    start = time.monotonic()
    rec = Recorder(start)
    ids: list[str] = []
    rss: list[tuple[float, float]] = []
    rnd = random.Random(seed)
    use_cases = ["support", "sales", "search", "coding"]

    def ingest(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            k = 0
            ingest_until = start + (ingest_minutes if ingest_minutes is not None else minutes) * 60
            while not stop.is_set() and time.monotonic() < ingest_until:
                k += 1
                uc = use_cases[k % len(use_cases)]
                if k % 10:
                    body = interaction(k, use_case=uc, labels={"topic": f"t{k % 50}"})
                    r = _call(rec, "ingest_one", c.post, "/api/v1/interactions", json=body)
                    if r is not None and r.status_code == 201:
                        ids.append(r.json()["completion_id"])
                    time.sleep(max(0.0, 4 / rate - 0.001))
                else:
                    lines = b"\n".join(orjson.dumps(interaction(j, use_case=uc)) for j in range(50))
                    _call(rec, "ingest_batch50", c.post, "/api/v1/interactions", content=lines,
                          headers={"content-type": "application/x-ndjson"})  # fmt: skip

    def query() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                uc = rnd.choice(use_cases)
                label = f"topic:t{rnd.randrange(50)}"
                _call(rec, "list", c.get, "/api/v1/interactions",
                      params={"use_case": uc, "label": label})  # fmt: skip
                _call(rec, "stats", c.get, "/api/v1/interactions/stats",
                      params={"group_by": "label:topic", "use_case": uc})  # fmt: skip
                sql = "SELECT use_case, count(*) AS n FROM interactions GROUP BY 1"
                _call(rec, "sql", c.post, "/api/v1/sql", json={"sql": sql})
                if ids:
                    fb = {"completion_id": rnd.choice(ids[-1000:]), "metric": "thumbs_up",
                          "value": 1}  # fmt: skip
                    _call(rec, "feedback", c.post, "/api/v1/feedback", json=fb)
                time.sleep(0.2)

    def export() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            while not stop.is_set():
                uc = rnd.choice(use_cases)
                params = {"format": "openai", "use_case": uc, "max_examples": 20000}
                _call(rec, "export", c.get, "/api/v1/export", params=params)
                stop.wait(5)

    gauges: list[tuple[float, dict[str, float]]] = []

    def sample() -> None:
        names = ("istore_arrow_allocated_bytes", "istore_duckdb_memory_bytes",
                 "istore_python_allocated_blocks", "istore_table_files")  # fmt: skip
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                rss.append((time.monotonic() - start, rss_mb(pid)))
                got: dict[str, float] = {}
                for line in c.get("/metrics").text.splitlines():
                    name = line.split("{")[0].split(" ")[0]
                    if name in names:
                        got[name] = got.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
                gauges.append((time.monotonic() - start, got))
                stop.wait(5)

    threads = [threading.Thread(target=ingest, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=query), threading.Thread(target=export),
                threading.Thread(target=sample)]  # fmt: skip
    for t in threads:
        t.start()
    try:
        stop.wait(minutes * 60)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    out = summarize(rec, rss, minutes)
    warm_at = min(60.0, minutes * 60 / 3)
    after = [g for t, g in gauges if t >= warm_at]
    out["memory_gauges"] = {"after_warmup": after[0] if after else {},
                            "end": gauges[-1][1] if gauges else {}}  # fmt: skip
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def summarize(rec: Recorder, rss: list[tuple[float, float]], minutes: float) -> dict[str, Any]:
    warm_at = min(60.0, minutes * 60 / 3)
    warm = [m for t, m in rss if t >= warm_at]
    per_minute = []
    for minute in sorted({m for m, _ in rec.lat}):
        row: dict[str, Any] = {"minute": minute + 1}
        for (m, kind), xs in sorted(rec.lat.items()):
            if m == minute:
                row[kind] = {"n": len(xs), "p50": statistics.median(xs),
                             "p95": _pct(xs, 0.95), "p99": _pct(xs, 0.99)}  # fmt: skip
        row["rss_mb"] = max((mb for t, mb in rss if minute * 60 <= t < (minute + 1) * 60),
                            default=0.0)  # fmt: skip
        per_minute.append(row)
    rss_warm = warm[0] if warm else 0.0
    rss_end = rss[-1][1] if rss else 0.0
    return {
        "minutes": minutes,
        "requests": rec.requests,
        "errors": len(rec.errors),
        "first_errors": rec.errors[:10],
        "rss_after_warmup_mb": rss_warm,
        "rss_end_mb": rss_end,
        "rss_growth": (rss_end / rss_warm - 1) if rss_warm else 0.0,
        "per_minute": per_minute,
    }


def table(s: dict[str, Any]) -> str:
    kinds = sorted({k for row in s["per_minute"] for k in row if k not in ("minute", "rss_mb")})
    lines = ["| minute | " + " | ".join(f"{k} p50/p99 ms (n)" for k in kinds) + " | RSS MB |",
             "|---" * (len(kinds) + 2) + "|"]  # fmt: skip
    for row in s["per_minute"]:
        cells = []
        for k in kinds:
            v = row.get(k)
            cells.append(f"{v['p50']:.0f}/{v['p99']:.0f} ({v['n']})" if v else "–")
        lines.append(f"| {row['minute']} | " + " | ".join(cells) + f" | {row['rss_mb']:.0f} |")
    lines.append("")
    growth = s["rss_growth"] * 100
    lines.append(f"requests={s['requests']} errors={s['errors']} "
                 f"rss_after_warmup={s['rss_after_warmup_mb']:.0f}MB "
                 f"rss_end={s['rss_end_mb']:.0f}MB growth={growth:+.1f}%")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0, help="single ingests per second")
    ap.add_argument("--ingest-minutes", type=float, default=None,
                    help="stop ingesting after this long (default: the whole run)")  # fmt: skip
    ap.add_argument(
        "--preload",
        type=int,
        default=0,
        help="interactions in the store before the run starts (istore import)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    s = run(args.minutes, args.rate, ingest_minutes=args.ingest_minutes,
            preload_rows=args.preload)  # fmt: skip
    s["preload_rows"] = args.preload
    print(table(s))
    for e in s["first_errors"]:
        print("error:", e)
    print("memory gauges:", orjson.dumps(s["memory_gauges"]).decode())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(s, option=orjson.OPT_INDENT_2))
    failed = s["errors"] > 0 or s["rss_growth"] > 0.20
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
