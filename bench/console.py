"""Server time per console page over a generated store (``make bench-console``).

Generates ``--rows`` interactions with ``sample_data/generate.py`` over the 30 days up
to now (so "the last 7 days" holds a quarter of them), imports and compacts them, starts
a real ``istore serve`` and times each page over HTTP on loopback (``--runs`` after 5
warm-up requests), next to the API call that answers the same question in the same run
(the ratio is what the page adds: templates, the extra queries a page makes). A store
made by an earlier run with the same row count is reused (``--data``). The machine's
load average before and after is recorded: other work on the machine skews every figure,
the page/API ratio less.

Targets (issue 19): p95 ≤ 150 ms for the list filtered by a label, the conversation and
the 7-day overview."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_data.generate import generate  # noqa: E402
from tests.conftest import Server  # noqa: E402

TARGET_MS = 150.0
TARGETS = ("list_label", "list_use_case_label", "conversation", "overview_7d")


def build(data: Path, rows: int) -> float:
    """The store: generated, imported, compacted. Seconds taken (0 when reused)."""
    marker = data / f".bench-console-{rows}"
    if marker.exists():
        return 0.0
    t0 = time.perf_counter()
    data.mkdir(parents=True, exist_ok=True)
    src = data.parent / f"console-{rows}.ndjson"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with open(src, "wb") as f:
        for r in generate(rows, seed=19, start=end, days=30):
            f.write(orjson.dumps(r) + b"\n")
    cli = [sys.executable, "-m", "istore.cli"]
    subprocess.run([*cli, "import", "--data", str(data), str(src)], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    subprocess.run([*cli, "compact", "--data", str(data)], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    src.unlink()
    marker.touch()
    return time.perf_counter() - t0


def timed(c: httpx.Client, urls: list[str], runs: int) -> dict[str, float]:
    """p50/p95 ms over ``runs`` requests (cycling through ``urls``), after 5 warm-up."""
    lat = []
    for i in range(runs + 5):
        t = time.perf_counter()
        r = c.get(urls[i % len(urls)])
        ms = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, (urls[i % len(urls)], r.status_code, r.text[:300])
        if i >= 5:
            lat.append(ms)
    lat.sort()
    return {"p50_ms": round(statistics.median(lat), 1),
            "p95_ms": round(lat[max(0, int(len(lat) * 0.95) - 1)], 1),
            "runs": runs}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--data", type=Path, default=ROOT / ".bench-data" / "console")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = args.data / str(args.rows)
    built_s = build(data, args.rows)
    server = Server(data).start(timeout=900)
    out: dict[str, Any] = {"rows": args.rows, "built_s": round(built_s, 1), "pages": {},
                           "loadavg_before": os.getloadavg()}  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            sample = c.post(
                "/api/v1/sql",
                json={"sql": ("SELECT id, session_id FROM interactions USING SAMPLE 200 ROWS")},
            ).json()["data"]
            random.Random(1).shuffle(sample)
            ids = [r["id"] for r in sample][:40]
            sessions = [r["session_id"] for r in sample if r["session_id"]][:40]
            both = "use_case=support&label=project:helpdesk"
            pairs: list[tuple[str, list[str], list[str]]] = [
                ("list", ["/ui/interactions"], ["/api/v1/interactions"]),
                ("list_label", ["/ui/interactions?label=project:helpdesk"],
                 ["/api/v1/interactions?label=project:helpdesk"]),
                ("list_use_case_label", [f"/ui/interactions?{both}"],
                 [f"/api/v1/interactions?{both}"]),
                ("conversation", [f"/ui/interactions/{i}" for i in ids],
                 [f"/api/v1/interactions/{i}" for i in ids]),
                ("session", [f"/ui/sessions/{s}" for s in sessions],
                 [f"/api/v1/interactions?session_id={s}" for s in sessions]),
                ("overview_7d", ["/ui/?range=7d"],
                 ["/api/v1/interactions/stats?group_by=day&group_by=use_case&metrics=count,"
                  "error_rate,p50_latency_ms,p95_latency_ms,sum_tokens&from=" + _ago(7)]),
                ("overview_24h", ["/ui/?range=24h"],
                 ["/api/v1/interactions/stats?group_by=hour&group_by=use_case&metrics=count,"
                  "error_rate,p50_latency_ms,p95_latency_ms,sum_tokens&from=" + _ago(1)]),
                ("overview_30d", ["/ui/?range=30d"],
                 ["/api/v1/interactions/stats?group_by=day&group_by=use_case&metrics=count,"
                  "error_rate,p50_latency_ms,p95_latency_ms,sum_tokens&from=" + _ago(30)]),
                ("labels", ["/ui/labels?use_case=support"], ["/api/v1/labels?use_case=support"]),
                ("export", ["/ui/export?use_case=support"],
                 ["/api/v1/export?use_case=support&max_examples=3"]),
                ("sql", ["/ui/sql"], ["/healthz"]),
            ]  # fmt: skip
            for name, page, api in pairs:
                p = timed(c, page, args.runs)
                a = timed(c, api, args.runs)
                out["pages"][name] = {"page": p, "api": a,
                                      "ratio_p50": round(p["p50_ms"] / a["p50_ms"], 2)}  # fmt: skip
                print(f"{name:22} page p50 {p['p50_ms']:8.1f} p95 {p['p95_ms']:8.1f} ms | "
                      f"api p50 {a['p50_ms']:8.1f} p95 {a['p95_ms']:8.1f} ms | "
                      f"x{out['pages'][name]['ratio_p50']}", flush=True)  # fmt: skip
    finally:
        server.stop()
    out["loadavg_after"] = os.getloadavg()  # other work on the machine skews every figure
    out["targets"] = {n: {"p95_ms": out["pages"][n]["page"]["p95_ms"], "target_ms": TARGET_MS,
                          "met": out["pages"][n]["page"]["p95_ms"] <= TARGET_MS}
                      for n in TARGETS}  # fmt: skip
    print(orjson.dumps(out["targets"], option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


def _ago(days: int) -> str:
    t = datetime.now(UTC).timestamp() - days * 86400
    return str(int(t))


if __name__ == "__main__":
    main()
