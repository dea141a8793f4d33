"""Export speed against DuckDB's own JSON writer, on the same rows, in one run.

    python bench/export.py --data DIR   (e.g. a store built by bench/query.py)

Times ``istore export --format openai`` (whole pipeline: selection, JSON shaping,
hashing, writing) against ``COPY (SELECT messages, completion …) TO 'x.json'`` over
the same Parquet files, each in a fresh process, and reports rows/s, the ratio, and
each process's peak RSS."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COPY = """
import duckdb, sys
from deltalake import DeltaTable
files = [f.removeprefix("file://") for f in DeltaTable(sys.argv[1] + "/interactions").file_uris()]
con = duckdb.connect(config={"threads": 2})
con.execute(f"COPY (SELECT messages, completion FROM read_parquet({files}) "
            f"WHERE status = 'ok' ORDER BY created_at, id) TO '{sys.argv[2]}' (FORMAT json)")
"""


FIRST = """
import sys, time
t0 = time.perf_counter()
from store.export import ExportOptions, Exporter
from store.filters import Filter
from store.reader import open as open_store
with open_store(sys.argv[1]) as r:
    r.store.labels.close()
    ex = Exporter(r.store, r.store.snapshot_at(None), Filter(), ExportOptions(format="openai"))
    next(iter(ex.sft()))
    print(time.perf_counter() - t0)
"""


def run(cmd: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one process."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return time.perf_counter() - t, int(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-x-"))
    cli = [sys.executable, "-m", "istore.cli", "export", "--data", str(args.data)]
    ours_s, ours_kb = run([*cli, "--format", "openai", "-o", str(work / "o.jsonl")])
    rows = sum(1 for _ in open(work / "o.jsonl", "rb"))
    duck_s, duck_kb = run([sys.executable, "-c", COPY, str(args.data), str(work / "d.json")])
    first = subprocess.run([sys.executable, "-c", FIRST, str(args.data)], cwd=ROOT,
                           capture_output=True, text=True, check=True)  # fmt: skip
    first_s = float(first.stdout.strip())
    out = {
        "rows": rows,
        "istore_export_openai": {"seconds": ours_s, "rows_per_s": rows / ours_s,
                                 "peak_rss_mb": ours_kb / 1024},
        "duckdb_copy_json": {"seconds": duck_s, "rows_per_s": rows / duck_s,
                             "peak_rss_mb": duck_kb / 1024},
        "ratio_to_duckdb": duck_s / ours_s,
        "istore_first_line_s": first_s,  # open the store, plan, first row out
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
