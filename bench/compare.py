"""`make bench`: us against the limit, PostgreSQL 15 and chDB, on the same rows, in one
run, on this machine. ``--scale 1M`` (default), ``10M``, or ``smoke`` (seconds; CI).

Data: ``sample_data/generate.py`` (seeded; real vocabulary with long-tailed lengths,
1-20 turns, tool calls, 7 use cases, 5 models, labels ``project`` ~5 values, ``topic``
~500, ``customer_id`` ~100k at 1M, feedback on ~10 %), written once as NDJSON and cached
in ``.bench-data/``.

Contenders, all fed the same rows:
- **us**: a real ``istore serve`` over HTTP (durable acks), after ``istore compact``
  for the queries and the bytes on disk;
- **the limit**: in-process pyarrow (parse the same NDJSON bytes, write Parquet) for
  ingest; raw DuckDB over our table's very same Parquet files for queries; DuckDB
  ``COPY … TO`` for export; a bare ASGI app on the same server stack for per-request
  overhead;
- **PostgreSQL 15** (Debian package, a private instance on a free port, stopped after):
  one JSONB table, GIN on labels, btree on (use_case, model, created_at), durable
  commits, fed with ``COPY``;
- **chDB** (ClickHouse's engine from PyPI) over the same Parquet files.

Each scenario is the median of ``--runs`` runs (default 5). Prints a markdown table with
the ratios and whether each goal of issue 8 is met; writes ``bench/results/<date>.json``
and ``.md``."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import wrk  # noqa: E402
from tests.conftest import Server, free_port, interaction  # noqa: E402

SCALES = {"smoke": 3_000, "1M": 1_000_000, "10M": 10_000_000}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BATCH = 1000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_of(runs: int, fn: Callable[[], float]) -> dict[str, Any]:
    xs = [fn() for _ in range(runs)]
    return {"median": statistics.median(xs), "runs": xs}


# -- data ----------------------------------------------------------------------------------
def _gen_part(args: tuple[int, int, str]) -> None:
    from sample_data.generate import generate

    n, seed, out = args
    with open(out, "wb") as f:
        for item in generate(n, seed=seed, days=30):
            f.write(orjson.dumps(item) + b"\n")


def dataset(rows: int) -> Path:
    cache = ROOT / ".bench-data"
    cache.mkdir(exist_ok=True)
    path = cache / f"compare-{rows}.ndjson"
    if path.exists():
        return path
    from multiprocessing import Pool

    parts = max(1, min(os.cpu_count() or 1, 8))
    sizes = [rows // parts + (1 if i < rows % parts else 0) for i in range(parts)]
    names = [str(path) + f".part{i}" for i in range(parts)]
    log(f"generating {rows:,} interactions in {parts} processes")
    with Pool(parts) as pool:
        pool.map(
            _gen_part,
            [(n, 1000 + i, name) for i, (n, name) in enumerate(zip(sizes, names, strict=True))],
        )
    with open(str(path) + ".tmp", "wb") as out:
        for name in names:
            with open(name, "rb") as f:
                shutil.copyfileobj(f, out)
            os.unlink(name)
    os.replace(str(path) + ".tmp", path)
    return path


SLICE_ROWS = 1_000_000  # at most this many rows in memory at once (10M: ten slices)


def slices(path: Path, rows: int, k: int) -> Iterator[bytes]:
    """The file in ``k`` (or more, of at most SLICE_ROWS rows) consecutive slices, read
    one at a time."""
    step = min(-(-rows // k), SLICE_ROWS)
    with open(path, "rb") as f:
        while True:
            chunk = b"".join(itertools.islice(f, step))
            if not chunk:
                return
            yield chunk


# -- the limit: in-process pyarrow -------------------------------------------------------
def limit_ingest(data: bytes, out: Path) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = time.perf_counter()
    cols: dict[str, list[Any]] = {k: [] for k in (
        "id", "created_at", "use_case", "model", "messages", "completion", "labels", "user",
        "session_id", "latency_ms", "ttft_ms", "params", "status")}  # fmt: skip
    for line in data.splitlines():
        d = orjson.loads(line)
        comp = d.get("completion")
        cols["id"].append(d.get("id"))
        cols["created_at"].append(d.get("created_at"))
        cols["use_case"].append(d.get("use_case") or d.get("project"))
        cols["model"].append(d.get("model"))
        cols["messages"].append(orjson.dumps(d["messages"]).decode())
        cols["completion"].append(comp if isinstance(comp, str) or comp is None
                                  else orjson.dumps(comp).decode())  # fmt: skip
        cols["labels"].append(list((d.get("labels") or {}).items()))
        cols["user"].append(d.get("user"))
        cols["session_id"].append(d.get("session_id"))
        cols["latency_ms"].append(d.get("latency_ms"))
        cols["ttft_ms"].append(d.get("ttft_ms"))
        cols["params"].append(orjson.dumps(d["params"]).decode() if d.get("params") else None)
        cols["status"].append(d.get("status", "ok"))
    arrays = {k: pa.array(v) for k, v in cols.items() if k not in ("labels", "created_at")}
    arrays["created_at"] = pa.array(cols["created_at"]).cast(pa.timestamp("us", "UTC"))
    arrays["labels"] = pa.array(cols["labels"], pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table(arrays), out, compression="zstd")
    with open(out, "rb") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - t


# -- us ------------------------------------------------------------------------------------
def our_ingest(url: str, data: bytes, threads: int = 4) -> float:
    lines = data.splitlines(keepends=True)
    bodies = [b"".join(lines[i : i + BATCH]) for i in range(0, len(lines), BATCH)]
    it = iter(bodies)
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while True:
                with lock:
                    body = next(it, None)
                if body is None:
                    return
                r = c.post("/api/v1/interactions", content=body,
                           headers={"content-type": "application/x-ndjson"})  # fmt: skip
                if r.status_code != 201:
                    errors.append(r.text[:200])

    t = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[:3]
    return time.perf_counter() - t


def freshness(url: str, n: int) -> dict[str, float]:
    """Ack → visible through the API, for interactions posted one at a time."""
    lat = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            iid = f"fresh-{i}-{time.time_ns()}"
            r = c.post("/api/v1/interactions", json=interaction(i, id=iid))
            assert r.status_code == 201
            t = time.perf_counter()
            while c.get(f"/api/v1/interactions/{iid}").status_code != 200:
                pass
            lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def du(path: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not any(s in p.parts for s in skip):
            total += p.stat().st_size
    return total


# -- PostgreSQL ----------------------------------------------------------------------------
class Postgres:
    def __init__(self, work: Path) -> None:
        # Its own folder: the postgres user must be able to reach it (not under a 0700 dir).
        self.base = Path(tempfile.mkdtemp(prefix="istore-bench-pg-"))
        self.dir = self.base / "pg"
        self.port = free_port()
        self.root = os.geteuid() == 0
        self.conn: Any = None

    def _run(self, *cmd: str) -> None:
        full = [str(PG_BIN / cmd[0]), *cmd[1:]]
        if self.root:
            full = ["runuser", "-u", "postgres", "--", *full]
        subprocess.run(full, check=True, capture_output=True)

    def start(self) -> Postgres:
        import psycopg

        self.dir.mkdir(parents=True)
        if self.root:
            os.chmod(self.base, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses='' -c shared_buffers=1GB "
                "-c max_wal_size=8GB -c work_mem=256MB -c maintenance_work_mem=1GB "
                "-c max_parallel_workers_per_gather=2")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.dir), "-o", opts, "-w", "-l", str(self.dir / "log"),
                  "start")  # fmt: skip
        self.conn = psycopg.connect(host=str(self.dir), port=self.port, user="postgres",
                                    dbname="postgres", autocommit=True)  # fmt: skip
        with self.conn.cursor() as cur:
            cur.execute("""
                CREATE UNLOGGED TABLE raw (doc jsonb);
                CREATE TABLE interactions (
                    id text PRIMARY KEY, created_at timestamptz NOT NULL, use_case text NOT NULL,
                    model text, labels jsonb NOT NULL, doc jsonb NOT NULL);
                CREATE INDEX interactions_labels ON interactions USING gin (labels);
                CREATE INDEX interactions_uc ON interactions (use_case, model, created_at);
            """)
        return self

    def ingest(self, data: bytes) -> float:
        t = time.perf_counter()
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy("COPY raw (doc) FROM STDIN WITH (FORMAT csv, QUOTE e'\\x01', "
                          "DELIMITER e'\\x02')") as cp:  # fmt: skip
                cp.write(data)
            cur.execute("""
                INSERT INTO interactions
                SELECT doc->>'id', (doc->>'created_at')::timestamptz,
                       coalesce(doc->>'use_case', doc->>'project'), doc->>'model',
                       coalesce(doc->'labels', '{}'::jsonb), doc
                FROM raw ON CONFLICT (id) DO NOTHING;
                TRUNCATE raw;
            """)
        return time.perf_counter() - t

    def timed(self, sql: str, params: tuple[Any, ...] = ()) -> float:
        t = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            cur.fetchall()
        return time.perf_counter() - t

    def export(self, out: Path) -> float:
        t = time.perf_counter()
        sql = ("COPY (SELECT jsonb_build_object('messages', (doc->'messages') || "
               "jsonb_build_array(jsonb_build_object('role', 'assistant', 'content', "
               "doc->'completion'))) FROM interactions WHERE coalesce(doc->>'status', 'ok') = 'ok' "
               "ORDER BY created_at, id) TO STDOUT")  # fmt: skip
        with self.conn.cursor() as cur, open(out, "wb") as f:
            with cur.copy(sql) as cp:
                for block in cp:
                    f.write(block)
        return time.perf_counter() - t

    def bytes(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE interactions")
            cur.execute("SELECT pg_total_relation_size('interactions')")
            return int(cur.fetchone()[0])

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if (self.dir / "PG_VERSION").exists():
            self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def pg_available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return (PG_BIN / "initdb").exists()


# -- the run -------------------------------------------------------------------------------
def pick_lookup(files: list[str]) -> tuple[str, str, str]:
    """The (use case, project, topic) whose rows number closest to 100."""
    import duckdb

    row = duckdb.sql(f"""
        SELECT use_case, labels['project'] AS p, labels['topic'] AS t, count(*) AS n
        FROM read_parquet({files}, hive_partitioning = true)
        WHERE labels['project'] IS NOT NULL AND labels['topic'] IS NOT NULL
        GROUP BY ALL ORDER BY abs(n - 100), use_case, p, t LIMIT 1""").fetchall()[0]
    return str(row[0]), str(row[1]), str(row[2])


def single_ingest(s: dict[str, Any], url: str, runs: int, work: Path, seconds: int) -> None:
    log("single-interaction ingest at 32 connections: us vs a bare ASGI app")
    single = work / "single.json"
    single.write_bytes(orjson.dumps(interaction(1)))
    ours_single = [wrk(url + "/api/v1/interactions", single, "application/json", 32, seconds)
                   for _ in range(runs)]  # fmt: skip
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.instant_upstream:app", "--port", str(bare_port),
         "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(2)
    try:
        bare_runs = [wrk(f"http://127.0.0.1:{bare_port}/", single, "application/json", 32, seconds)
                     for _ in range(runs)]  # fmt: skip
    finally:
        bare.terminate()
        bare.wait()
    s["single_ingest_c32_per_s"] = {
        "us": statistics.median(r["requests"] / r["seconds"] for r in ours_single),
        "bare_asgi": statistics.median(r["requests"] / r["seconds"] for r in bare_runs),
        "us_p99_ms": statistics.median(r["p99_ms"] for r in ours_single),
    }


def _pcts(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))]}


def point_reads(s: dict[str, Any], client: httpx.Client, duck: Any, pg: Any, runs: int) -> None:
    """GET /interactions/{id} for random stored ids, against PostgreSQL's primary key."""
    log("point reads: GET /interactions/{id}")
    ids = [r[0] for r in duck.execute("SELECT id FROM t USING SAMPLE 400 ROWS").fetchall()]
    ours = []
    for id_ in ids:
        t = time.perf_counter()
        r = client.get(f"/api/v1/interactions/{id_}")
        ours.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    s["point_read_ms"] = {"us": _pcts(ours[20:])}
    if pg is not None:
        s["point_read_ms"]["postgres"] = _pcts(
            [pg.timed("SELECT doc FROM interactions WHERE id = %s", (i,)) for i in ids][20:]
        )


def label_across_use_cases(s: dict[str, Any], client: httpx.Client, duck: Any, pg: Any,
                           runs: int, files: list[str]) -> None:  # fmt: skip
    """One label, every use case, a time range: newest 100."""
    log("query: one label across use cases and a week")
    topic, hi = duck.execute(
        "SELECT labels['topic'], max(created_at) FROM t WHERE labels['topic'] IS NOT NULL "
        "GROUP BY 1 ORDER BY abs(count(*) - 2000), 1 LIMIT 1"
    ).fetchone()
    since, until = (hi - timedelta(days=7)).isoformat(), (hi + timedelta(seconds=1)).isoformat()

    def ours() -> float:
        t = time.perf_counter()
        r = client.get("/api/v1/interactions", params={
            "label": f"topic:{topic}", "from": since, "to": until, "limit": 100})  # fmt: skip
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    ours()
    s["label_range_ms"] = {"us": median_of(runs * 3, ours)["median"] * 1000}
    if pg is not None:
        q = ("SELECT doc FROM interactions WHERE labels @> %s::jsonb AND created_at >= %s "
             "AND created_at < %s ORDER BY created_at DESC, id DESC LIMIT 100")  # fmt: skip
        args = (json.dumps({"topic": topic}), since, until)
        pg.timed(q, args)
        s["label_range_ms"]["postgres"] = (
            median_of(runs * 3, lambda: pg.timed(q, args))["median"] * 1000
        )


def retry_storm(s: dict[str, Any], url: str, src: Path, work: Path, seconds: int) -> None:
    """32 connections resending interactions that are already stored (what an exporter
    does after a time-out), against fresh single interactions, on the same server."""
    log("retry storm: 32 connections resending stored interactions")
    stored = work / "stored.ndjson"
    with open(src, "rb") as f:
        stored.write_bytes(b"".join(itertools.islice(f, 5000)))
    fresh = work / "fresh.json"
    fresh.write_bytes(orjson.dumps(interaction(1)))
    retry = wrk(url + "/api/v1/interactions", stored, "application/json", 32, seconds, cycle=True)
    new = wrk(url + "/api/v1/interactions", fresh, "application/json", 32, seconds)
    s["retry_storm_c32_per_s"] = {
        "us": retry["requests"] / retry["seconds"],
        "fresh": new["requests"] / new["seconds"],
        "us_p99_ms": retry["p99_ms"],
        "timeouts": retry["timeouts"],
        "errors": retry["errors"],
    }


def run(scale: str, runs: int, work: Path) -> dict[str, Any]:
    """The whole comparison; whatever it started is stopped, even when a step fails."""
    started: list[Any] = []
    try:
        return _run(scale, runs, work, started)
    finally:
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {thing!r}: {exc}")


def _run(scale: str, runs: int, work: Path, started: list[Any]) -> dict[str, Any]:
    import duckdb
    from deltalake import DeltaTable

    rows = SCALES[scale]
    src = dataset(rows)
    ndjson_bytes = src.stat().st_size

    def parts() -> Iterator[bytes]:
        return slices(src, rows, runs)

    res: dict[str, Any] = {
        "scale": scale, "rows": rows, "runs": runs, "ndjson_bytes": ndjson_bytes,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "python": platform.python_version(), "date": date.today().isoformat(),
    }  # fmt: skip
    s: dict[str, dict[str, Any]] = {}
    res["scenarios"] = s

    # Ingest: each run one slice (all runs together load every row), durable acks.
    data_dir = work / "ours"
    server = Server(data_dir, ISTORE_MAINTENANCE_INTERVAL_S="0").start()
    started.append(server)
    assert server.proc is not None
    log("ingest: us (HTTP, NDJSON, 1,000 per request)")
    ours = [len(p.splitlines()) / our_ingest(server.url, p) for p in parts()]
    log("ingest: the limit (pyarrow in process)")
    (work / "limit").mkdir()
    lim = [len(p.splitlines()) / limit_ingest(p, work / "limit" / f"{i}.parquet")
           for i, p in enumerate(parts())]  # fmt: skip
    s["batched_ingest_per_s"] = {"us": statistics.median(ours), "limit": statistics.median(lim)}

    pg = Postgres(work) if pg_available() else None
    if pg is not None:
        started.append(pg)
        pg.start()
    if pg is not None:
        log("ingest: PostgreSQL COPY into JSONB (GIN + btree)")
        s["batched_ingest_per_s"]["postgres"] = statistics.median(
            len(p.splitlines()) / pg.ingest(p) for p in parts()
        )

    if shutil.which("wrk") is not None:
        single_ingest(s, server.url, runs, work, 2 if scale == "smoke" else 5)
    else:
        log("wrk is not installed: no single-interaction ingest scenario (apt-get install wrk)")

    log("freshness: ack → visible")
    s["freshness_ms"] = {"us": freshness(server.url, (10 if scale == "smoke" else 50) * runs)}
    server.stop()

    log("compact + vacuum, then bytes on disk")
    cli = [sys.executable, "-m", "istore.cli"]
    subprocess.run([*cli, "compact", "--data", str(data_dir)], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*cli, "vacuum", "--data", str(data_dir), "--retention-hours", "0", "--force"],
                   cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    stored = DeltaTable(str(data_dir / "interactions")).to_pyarrow_dataset().count_rows()
    s["bytes_per_interaction"] = {
        "us": du(data_dir, skip=("wal",)) / stored,
        "ndjson": ndjson_bytes / rows,
        "limit_parquet": du(work / "limit") / rows,
    }
    if pg is not None:
        s["bytes_per_interaction"]["postgres"] = pg.bytes() / rows

    files = [
        f.removeprefix("file://") for f in DeltaTable(str(data_dir / "interactions")).file_uris()
    ]
    uc, project, topic = pick_lookup(files)
    res["lookup"] = {"use_case": uc, "project": project, "topic": topic}
    server = Server(data_dir, ISTORE_MAINTENANCE_INTERVAL_S="0").start(timeout=600)
    started.append(server)
    assert server.proc is not None
    client = httpx.Client(base_url=server.url, timeout=300)
    deadline = time.monotonic() + 600
    while client.get("/readyz").json()["index"]["waiting"] and time.monotonic() < deadline:
        time.sleep(0.5)
    duck = duckdb.connect(config={"threads": 2})
    duck.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({files}, hive_partitioning = true)")
    import chdb

    glob = str(data_dir / "interactions" / "*" / "*" / "*.parquet")
    chfile = f"file('{glob}', Parquet)"

    def http(path: str, params: dict[str, Any]) -> Callable[[], float]:
        def go() -> float:
            t = time.perf_counter()
            r = client.get(path, params=params)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t

        return go

    def ddb(sql: str) -> Callable[[], float]:
        def go() -> float:
            t = time.perf_counter()
            duck.execute(sql).fetchall()
            return time.perf_counter() - t

        return go

    def ch(sql: str) -> Callable[[], float]:
        def go() -> float:
            t = time.perf_counter()
            chdb.query(sql + " SETTINGS use_hive_partitioning = 1", "Arrow")
            return time.perf_counter() - t

        return go

    queries = {
        "selective_lookup_ms": (
            http(
                "/api/v1/interactions",
                {"use_case": uc, "label": [f"project:{project}", f"topic:{topic}"], "limit": 100},
            ),  # fmt: skip
            ddb(
                f"SELECT * FROM t WHERE use_case = '{uc}' AND labels['project'] = '{project}' "
                f"AND labels['topic'] = '{topic}' ORDER BY created_at DESC, id DESC LIMIT 100"
            ),
            ch(
                f"SELECT * FROM {chfile} WHERE use_case = '{uc}' AND labels['project'] = "
                f"'{project}' AND labels['topic'] = '{topic}' ORDER BY created_at DESC, id DESC "
                "LIMIT 100"
            ),
            (
                "SELECT doc FROM interactions WHERE use_case = %s AND labels @> %s::jsonb "
                "ORDER BY created_at DESC, id DESC LIMIT 100",
                (uc, json.dumps({"project": project, "topic": topic})),
            ),
        ),
        "group_by_label_p95_ms": (
            http(
                "/api/v1/interactions/stats",
                {"use_case": uc, "group_by": "label:topic", "metrics": "count,p95_latency_ms"},
            ),  # fmt: skip
            ddb(
                f"SELECT labels['topic'] AS k, count(*), quantile_cont(latency_ms, 0.95) "
                f"FROM t WHERE use_case = '{uc}' GROUP BY 1"
            ),
            ch(
                f"SELECT labels['topic'] AS k, count(), quantile(0.95)(latency_ms) "
                f"FROM {chfile} WHERE use_case = '{uc}' GROUP BY k"
            ),
            (
                "SELECT labels->>'topic', count(*), percentile_cont(0.95) WITHIN GROUP "
                "(ORDER BY (doc->>'latency_ms')::float8) FROM interactions WHERE use_case = %s "
                "GROUP BY 1",
                (uc,),
            ),
        ),
        "aggregate_day_model_ms": (
            http(
                "/api/v1/interactions/stats",
                {"group_by": "day,model", "metrics": "count,avg_latency_ms"},
            ),  # fmt: skip
            ddb("SELECT day, model, count(*), avg(latency_ms) FROM t GROUP BY 1, 2"),
            ch(f"SELECT day, model, count(), avg(latency_ms) FROM {chfile} GROUP BY day, model"),
            (
                "SELECT date_trunc('day', created_at), model, count(*), "
                "avg((doc->>'latency_ms')::float8) FROM interactions GROUP BY 1, 2",
                (),
            ),
        ),
    }
    for name, (us_q, duck_q, ch_q, pg_q) in queries.items():
        log(f"query: {name}")
        for q in (us_q, duck_q, ch_q):
            q()  # warm
        row = {
            "us": median_of(runs, us_q)["median"] * 1000,
            "duckdb_same_files": median_of(runs, duck_q)["median"] * 1000,
            "chdb_same_files": median_of(runs, ch_q)["median"] * 1000,
        }
        if pg is not None:
            pg.timed(*pg_q)
            row["postgres"] = median_of(runs, lambda q=pg_q: pg.timed(*q))["median"] * 1000
        s[name] = row

    point_reads(s, client, duck, pg, runs)
    label_across_use_cases(s, client, duck, pg, runs, files)
    if shutil.which("wrk") is not None:
        retry_storm(s, server.url, src, work, 2 if scale == "smoke" else 5)

    log("export: openai JSONL")

    def our_export() -> float:
        t = time.perf_counter()
        with client.stream("GET", "/api/v1/export", params={"format": "openai"}) as r, \
                open(work / "ours.jsonl", "wb") as f:  # fmt: skip
            for block in r.iter_bytes():
                f.write(block)
        return time.perf_counter() - t

    def duck_export() -> float:
        t = time.perf_counter()
        target = work / "duck.json"
        duck.execute(f"COPY (SELECT messages, completion FROM t WHERE status = 'ok' "
                     f"ORDER BY created_at, id) TO '{target}' (FORMAT json)")  # fmt: skip
        return time.perf_counter() - t

    s["export_openai_per_s"] = {
        "us": rows / median_of(runs, our_export)["median"],
        "duckdb_copy": rows / median_of(runs, duck_export)["median"],
    }
    if pg is not None:
        s["export_openai_per_s"]["postgres"] = rows / median_of(
            runs, lambda: pg.export(work / "pg.jsonl"))["median"]  # fmt: skip
    s["server_peak_rss_mb"] = {"us": rss_peak_mb(server.proc.pid)}
    client.close()
    server.stop()
    log("start-up: process start → /readyz")
    t0 = time.perf_counter()
    again = Server(data_dir, ISTORE_MAINTENANCE_INTERVAL_S="0").start(timeout=600)
    s["startup_s"] = {"us": time.perf_counter() - t0}
    again.stop()
    if pg is not None:
        pg.stop()
    res["goals"] = goals(s)
    return res


def goals(s: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []

    def goal(text: str, value: float | None, target: float, higher: bool = True) -> None:
        met = None if value is None else (value >= target if higher else value <= target)
        out.append({"goal": text, "value": value, "target": target, "met": met})

    ing = s["batched_ingest_per_s"]
    goal(
        "batched ingest ≥ PostgreSQL COPY (ratio)",
        ing["us"] / ing["postgres"] if "postgres" in ing else None,
        1.0,
    )
    goal("batched ingest ≥ 0.5× the in-process limit", ing["us"] / ing["limit"], 0.5)
    si = s.get("single_ingest_c32_per_s")
    goal("single ingest ≥ 0.6× the bare ASGI app", si["us"] / si["bare_asgi"] if si else None,
         0.6)  # fmt: skip
    lk = s["selective_lookup_ms"]
    goal(
        "selective lookup p50 ≤ PostgreSQL with GIN (ratio)",
        lk["us"] / lk["postgres"] if "postgres" in lk else None,
        1.0,
        higher=False,
    )
    for name in ("group_by_label_p95_ms", "aggregate_day_model_ms"):
        q = s[name]
        goal(
            f"{name}: ≥ 10× faster than PostgreSQL",
            q["postgres"] / q["us"] if "postgres" in q else None,
            10.0,
        )
        goal(f"{name}: faster than chDB", q["chdb_same_files"] / q["us"], 1.0)
        goal(f"{name}: ≤ 1.3× raw DuckDB", q["us"] / q["duckdb_same_files"], 1.3, higher=False)
    pr = s.get("point_read_ms")
    if pr:
        goal("GET by id p50 ≤ 5 ms", pr["us"]["p50_ms"], 5.0, higher=False)
        goal("GET by id p99 ≤ 20 ms", pr["us"]["p99_ms"], 20.0, higher=False)
    rs = s.get("retry_storm_c32_per_s")
    goal("retry storm ≥ 1.0× fresh single ingest", rs["us"] / rs["fresh"] if rs else None, 1.0)
    lr = s.get("label_range_ms")
    ratio = lr["us"] / lr["postgres"] if lr and "postgres" in lr else None
    goal("label across use cases + range ≤ 2× PostgreSQL + GIN", ratio, 2.0, higher=False)
    if "startup_s" in s:
        goal("start-up to ready ≤ 3 s", s["startup_s"]["us"], 3.0, higher=False)
    ex = s["export_openai_per_s"]
    goal("export ≥ 0.7× DuckDB COPY", ex["us"] / ex["duckdb_copy"], 0.7)
    goal("freshness p99 ≤ 1 s (ms)", s["freshness_ms"]["us"]["p99_ms"], 1000.0, higher=False)
    by = s["bytes_per_interaction"]
    goal("on disk ≤ 0.3× the NDJSON bytes", by["us"] / by["ndjson"], 0.3, higher=False)
    return out


def markdown(res: dict[str, Any]) -> str:
    s = res["scenarios"]
    lines = [
        f"{res['rows']:,} interactions ({res['ndjson_bytes'] / 2**20:,.0f} MB of NDJSON), "
        f"{res['machine']}, Python {res['python']}, {res['date']}; median of {res['runs']} runs.",
        "",
        "| scenario | us | the limit | PostgreSQL 15 | chDB |",
        "|---|---:|---:|---:|---:|",
    ]

    def f(v: Any, unit: str) -> str:
        if v is None:
            return "–"
        return f"{v:,.0f}{unit}" if v >= 100 else f"{v:,.1f}{unit}"

    ing = s["batched_ingest_per_s"]
    lines.append(
        f"| batched ingest, NDJSON 1,000/request, durable | {f(ing['us'], '/s')} | "
        f"{f(ing['limit'], '/s')} (pyarrow) | {f(ing.get('postgres'), '/s')} (COPY) | – |"
    )
    si = s.get("single_ingest_c32_per_s")
    if si is None:  # wrk is not installed: say so rather than leave the row out silently
        lines.append("| single-interaction ingest, 32 connections | not run (no wrk) | – | – | – |")
    else:
        lines.append(
            f"| single-interaction ingest, 32 connections | {f(si['us'], '/s')} "
            f"(p99 {si['us_p99_ms']:.0f} ms) | {f(si['bare_asgi'], '/s')} (bare ASGI) | – | – |"
        )
    pr = s.get("point_read_ms")
    if pr:
        pg_pr = pr.get("postgres")
        lines.append(
            f"| GET by id, p50 / p99 | {pr['us']['p50_ms']:.1f} / {pr['us']['p99_ms']:.1f} ms "
            "| – | "
            + (f"{pg_pr['p50_ms']:.2f} / {pg_pr['p99_ms']:.2f} ms (primary key)" if pg_pr else "–")
            + " | – |"
        )
    rs = s.get("retry_storm_c32_per_s")
    if rs:
        lines.append(
            f"| retry storm: 32 connections resending stored ids | {f(rs['us'], '/s')} "
            f"(p99 {rs['us_p99_ms']:.0f} ms, {rs['timeouts']} time-outs) | "
            f"{f(rs['fresh'], '/s')} (fresh single ingest) | – | – |"
        )
    fr = s["freshness_ms"]["us"]
    lines.append(
        f"| ack → visible, p50 / p99 | {fr['p50_ms']:.1f} / {fr['p99_ms']:.1f} ms | – | – | – |"
    )
    lr = s.get("label_range_ms")
    if lr:
        lines.append(f"| one label, all use cases, a week, newest 100 | {f(lr['us'], ' ms')} | – | "
                     f"{f(lr.get('postgres'), ' ms')} | – |")  # fmt: skip
    if "startup_s" in s:
        lines.append(f"| start-up to ready | {s['startup_s']['us']:.1f} s | – | – | – |")
    labels = {
        "selective_lookup_ms": "lookup: use case + 2 labels, ~100 rows",
        "group_by_label_p95_ms": "group by label:topic, count + p95, one use case",
        "aggregate_day_model_ms": "full-table aggregate by day × model",
    }
    for name, label in labels.items():
        q = s[name]
        lines.append(f"| {label} | {f(q['us'], ' ms')} | {f(q['duckdb_same_files'], ' ms')} "
                     f"(DuckDB, same files) | {f(q.get('postgres'), ' ms')} | "
                     f"{f(q['chdb_same_files'], ' ms')} |")  # fmt: skip
    ex = s["export_openai_per_s"]
    lines.append(f"| export to openai JSONL | {f(ex['us'], ' rows/s')} | "
                 f"{f(ex['duckdb_copy'], ' rows/s')} (DuckDB COPY) | "
                 f"{f(ex.get('postgres'), ' rows/s')} | – |")  # fmt: skip
    by = s["bytes_per_interaction"]
    lines.append(f"| bytes on disk per interaction (NDJSON {by['ndjson']:,.0f}) | "
                 f"{by['us']:,.0f} | {by['limit_parquet']:,.0f} (plain Parquet) | "
                 f"{f(by.get('postgres'), '')} | – |")  # fmt: skip
    lines.append(f"| server peak RSS | {s['server_peak_rss_mb']['us']:,.0f} MB | – | – | – |")
    lines += ["", "| goal | measured | target | met |", "|---|---:|---:|---|"]
    for g in res["goals"]:
        v = "–" if g["value"] is None else f"{g['value']:.2f}"
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['goal']} | {v} | {g['target']:g} | {met} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", choices=sorted(SCALES), default="1M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="istore-bench-"))
    t = time.perf_counter()
    try:
        res = run(args.scale, args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = time.perf_counter() - t
    md = markdown(res)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{res['date']}-{args.scale}"
    (args.out / f"{stem}.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    (args.out / f"{stem}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
