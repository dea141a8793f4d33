"""Beyond one process: several writers on one table, on local disk and on a real
S3-protocol server (moto's standalone server on loopback).

Each writer has its own write-ahead log and Delta app transaction; the checks read
the final table with ``deltalake`` and ``polars`` directly, without this project's
code: every acknowledged record exactly once."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from deltalake import DeltaTable

from testkit.cluster import cross_node_visibility
from testkit.s3 import start_s3
from tests.conftest import ROOT, Server, free_port, interaction

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

BUCKET = "istore-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A real S3 endpoint on 127.0.0.1; yields the environment a client needs."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server, env = start_s3(BUCKET, "my-bucket")
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite on 127.0.0.1 (skips where it is not installed: `make test-azure`)."""
    from tests.azurite import azurite_bin, start_azurite

    if azurite_bin() is None:
        pytest.skip("azurite is not installed (make test-azure installs it from npm)")
    proc, env = start_azurite(tmp_path_factory.mktemp("azurite"), "istore")
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


def storage_options(env: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": env["AWS_REGION"],
        "AWS_ALLOW_HTTP": "true",
    }


class Writer(threading.Thread):
    """Posts batches of new interactions to one server until stopped; keeps the ids
    the server acknowledged. Connection errors (a killed server) are retried with
    new ids: an unacknowledged batch may or may not be stored, never twice."""

    def __init__(self, url: str, tag: str, batch: int = 20, keepalive: bool = True) -> None:
        super().__init__(daemon=True)
        self.url, self.tag, self.batch = url, tag, batch
        # A new connection per request reaches every worker of `serve --workers`.
        self.limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30, limits=self.limits) as c:
            while not self.stop.is_set():
                rows = [
                    interaction(0, id=str(uuid.uuid4()), use_case=f"uc-{self.tag}", model="m")
                    for _ in range(self.batch)
                ]
                try:
                    r = c.post(self.url + "/api/v1/interactions", json=rows)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if r.status_code in (200, 201):
                    self.acked.extend(x["id"] for x in rows)  # type: ignore[misc]
                elif r.status_code != 503:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")


def table_ids(uri: str, opts: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The interaction ids, read by deltalake and by polars, no project code."""
    dt = DeltaTable(uri, storage_options=opts)
    by_delta = dt.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    by_polars = pl.read_delta(uri, storage_options=opts, columns=["id"])["id"].to_list()
    return by_delta, by_polars


def app_transactions(uri: str, opts: dict[str, str] | None = None) -> set[str]:
    dt = DeltaTable(uri, storage_options=opts)
    found = set()
    for line in _commit_lines(dt, opts):
        if '"txn"' in line:
            found.add(line.split('"appId":"', 1)[1].split('"', 1)[0])
    return found


def _commit_lines(dt: DeltaTable, opts: dict[str, str] | None) -> Iterator[str]:
    import pyarrow.fs as pafs

    uri = dt.table_uri.rstrip("/")
    if uri.startswith("s3://"):
        assert opts is not None
        ep = opts["AWS_ENDPOINT_URL"].split("://", 1)[1]
        fs: Any = pafs.S3FileSystem(endpoint_override=ep, scheme="http", access_key="testing",
                                    secret_key="testing", region="us-east-1")  # fmt: skip
        base = uri.removeprefix("s3://") + "/_delta_log"
    elif uri.startswith(("az://", "abfs")):
        from tests.azurite import filesystem

        fs = filesystem({"AZURITE_BLOB_STORAGE_URL": os.environ["AZURITE_BLOB_STORAGE_URL"]})
        base = uri.split("://", 1)[1].split("@")[0] + "/_delta_log"
    else:
        fs, base = pafs.LocalFileSystem(), uri.removeprefix("file://") + "/_delta_log"
    for info in fs.get_file_info(pafs.FileSelector(base)):
        if info.path.endswith(".json"):
            with fs.open_input_stream(info.path) as f:
                yield from f.read().decode().splitlines()


def assert_exactly_once(acked: list[str], delta_ids: list[str], polars_ids: list[str]) -> None:
    assert len(set(acked)) == len(acked)
    for ids in (delta_ids, polars_ids):
        assert len(ids) == len(set(ids)), "a record is stored twice"
        missing = set(acked) - set(ids)
        assert not missing, f"{len(missing)} acknowledged records are missing"


@pytest.mark.parametrize("store_kind", ["s3", "az"])
def test_three_servers_share_a_bucket_one_killed(
    store_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    server_factory: type[Server],
    monkeypatch: Any,
) -> None:
    if store_kind == "s3":
        cloud = request.getfixturevalue("s3")
        uri, opts = f"s3://{BUCKET}/shared", storage_options(cloud)
    else:
        cloud = request.getfixturevalue("azure")
        from tests.azurite import storage_options as azure_options

        uri, opts = "az://istore/shared", azure_options()
        for k, v in cloud.items():
            monkeypatch.setenv(k, v)  # deltalake finds Azurite's URL here
    env = {**cloud, "ISTORE_MAINTENANCE_INTERVAL_S": "3"}
    nodes = [
        server_factory(uri, ISTORE_WAL_DIR=str(tmp_path / f"node{i}"), **env)  # type: ignore[arg-type]
        for i in range(3)
    ]
    for n in nodes:
        n.start(timeout=60)
    writers = [Writer(n.url, str(i)) for i, n in enumerate(nodes)]
    for w in writers:
        w.start()
    time.sleep(4)
    nodes[1].kill()  # kill -9, mid-load
    time.sleep(1)
    nodes[1].start(timeout=60)  # the same log: replays what it acknowledged
    time.sleep(4)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(60)

    # Once the backlogs are in the table, a write on one node is read on another
    # within seconds.
    for n in nodes:
        deadline = time.monotonic() + 60
        while httpx.get(n.url + "/readyz").json()["pending_rows"] and time.monotonic() < deadline:
            time.sleep(0.2)
    committed, seen = cross_node_visibility(nodes[0].url, nodes[2].url)

    maintenance = [httpx.get(n.url + "/readyz").json().get("maintenance") for n in nodes]
    for n in nodes:
        n.stop()
        assert n.proc is not None and n.proc.returncode == 0, n.stderr_text[-2000:]

    acked = [i for w in writers for i in w.acked]
    assert all(not w.errors for w in writers), [w.errors[:3] for w in writers]
    assert all(len(w.acked) > 0 for w in writers)
    delta_ids, polars_ids = table_ids(f"{uri}/interactions", opts)
    assert_exactly_once(acked, delta_ids, polars_ids)
    # Three logs, three app transactions (the restarted node kept its writer id).
    assert len(app_transactions(f"{uri}/interactions", opts)) == 3
    print(f"\n3 nodes on {store_kind}: {len(acked)} acked, {len(delta_ids)} stored, "
          f"committed after {committed:.2f} s, seen by another node after {seen:.2f} s, "
          f"maintenance {maintenance}")  # fmt: skip


def test_one_writer_on_s3_reads_sql_and_exports_and_readme_snippets(
    s3: dict[str, str], tmp_path: Path, server_factory: type[Server], monkeypatch: Any
) -> None:
    """The read paths (DuckDB over pyarrow's S3 file system) on a remote root, then
    the object-storage snippets of docs/sql.md and docs/operations.md (```py blocks) on
    the table it wrote."""
    uri = "s3://my-bucket/istore"
    node = server_factory(uri, ISTORE_WAL_DIR=str(tmp_path / "wal"), **s3).start(timeout=60)  # type: ignore[arg-type]
    rows = [interaction(i, model=("a", "b")[i % 2]) for i in range(40)]
    assert httpx.post(node.url + "/api/v1/interactions", json=rows).status_code == 201
    # Past the first flush: read the committed Parquet files from the bucket.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = httpx.get(node.url + "/readyz").json()
        if st["pending_rows"] == 0 and st["versions"]["interactions"] > 0:
            break
        time.sleep(0.2)
    sql = "SELECT model, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1"
    r = httpx.post(node.url + "/api/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"model": "a", "n": 20}, {"model": "b", "n": 20}]
    # The sandbox still holds: the bucket's other prefixes and local files are out.
    for sql in (
        f"SELECT * FROM read_parquet('s3://{BUCKET}/shared/interactions/x.parquet')",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        assert httpx.post(node.url + "/api/v1/sql", json={"sql": sql}).status_code == 400
    r = httpx.get(node.url + "/api/v1/export", params={"format": "openai", "use_case": "support"})
    assert r.status_code == 200, r.text
    assert len(r.text.strip().splitlines()) == 40
    gone = str(rows[0]["id"]) if "id" in rows[0] else None
    if gone is None:
        listed = httpx.get(node.url + "/api/v1/interactions", params={"limit": 1}).json()
        gone = listed["data"][0]["id"]
    assert httpx.delete(f"{node.url}/api/v1/interactions/{gone}").status_code in (200, 204)
    node.stop()

    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    pages = "".join((ROOT / "docs" / p).read_text() for p in ("sql.md", "operations.md"))
    snippets = [b for b in re.findall(r"```py\n(.*?)```", pages, flags=re.S) if "s3://" in b]
    assert snippets
    scope: dict[str, Any] = {}
    for code in snippets:
        exec(compile(code, "docs", "exec"), scope)  # noqa: S102
    assert scope["df"].height == 40  # the deleted row is still in the files (no purge yet)
    assert scope["frame"].shape == (40, 2)
    effective = dict(scope["effective"])
    assert sum(effective.values()) == 39 and set(effective) == {"a", "b"}

    # The command line reads, compacts and checks the bucket too (no server needed).
    def istore(*args: str, **env: str) -> str:
        cmd = [sys.executable, "-m", "istore", *args]
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = istore("sql", "--data", uri, "--format", "json", "SELECT count(*) AS n FROM interactions")
    assert '"n": 39' in out or '"n":39' in out, out
    istore("compact", "--data", uri)
    out = istore("doctor", "--data", uri, ISTORE_WAL_DIR=str(tmp_path / "wal"))
    assert "table interactions" in out and "0 records not yet" in out, out


class Workers:
    """`istore serve --workers N` on a local data root."""

    def __init__(self, data: Path, n: int, flag: str | None = None) -> None:
        self.data, self.n, self.flag = data, n, flag or str(n)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Workers:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "istore",
                "serve",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
                "--workers",
                self.flag,
            ],  # fmt: skip
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    if len(self.children()) == self.n:
                        return self
            time.sleep(0.1)
        raise RuntimeError("workers did not start")

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill_all(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def test_workers_share_a_local_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sup = Workers(data, 2).start()
    try:
        writers = [Writer(sup.url, str(i), keepalive=False) for i in range(4)]
        for w in writers:
            w.start()
        time.sleep(3)
        victim = sup.children()[0]
        os.kill(victim, signal.SIGKILL)  # the supervisor restarts it on its own log
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            len(sup.children()) != 2 or victim in sup.children()
        ):
            time.sleep(0.1)
        time.sleep(3)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(60)
        assert sup.stop() == 0
    except BaseException:
        sup.kill_all()
        raise
    acked = [i for w in writers for i in w.acked]
    assert acked and all(not w.errors for w in writers)
    assert_exactly_once(acked, *table_ids(str(data / "interactions")))
    assert len(app_transactions(str(data / "interactions"))) == 2
    assert sorted(p.name for p in (data / "wal").iterdir() if p.is_dir()) == [
        "worker-0",
        "worker-1",
    ]
    from click.testing import CliRunner

    from istore.cli import main

    r = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    assert r.exit_code == 0, r.output
    for log_name in ("worker-0", "worker-1"):  # each checked against its own app id
        line = next(x for x in r.output.splitlines() if f"write-ahead log {log_name}:" in x)
        assert line.endswith(", 0 records not yet in every table"), r.output


def test_logs_of_gone_workers_are_replayed(tmp_path: Path, server_factory: type[Server]) -> None:
    """Killed with everything (no final flush), then started with fewer workers: the
    orphaned logs are replayed into the table at start-up."""
    data = tmp_path / "data"
    sup = Workers(data, 2).start()
    writers = [Writer(sup.url, str(i)) for i in range(3)]
    try:
        for w in writers:
            w.start()
        time.sleep(2)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(60)
    finally:
        sup.kill_all()
    acked = [i for w in writers for i in w.acked]
    single = server_factory(data).start(timeout=60)  # one process: drains worker-0 and 1
    single.stop()
    assert_exactly_once(acked, *table_ids(str(data / "interactions")))


def test_workers_auto_serves_one_worker_per_usable_core(tmp_path: Path) -> None:
    """`--workers auto`: as many workers as the cores this process may use, all
    answering on the one port; each acknowledged row stored once."""
    cores = len(os.sched_getaffinity(0))
    sup = Workers(tmp_path / "data", min(cores, 64), "auto").start()
    try:
        ids = [str(uuid.uuid4()) for _ in range(20)]
        for id_ in ids:  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(sup.url + "/api/v1/interactions", json=interaction(0, id=id_))
            assert r.status_code == 201, r.text
    finally:
        assert sup.stop() == 0
    delta_ids, _ = table_ids(str(tmp_path / "data" / "interactions"))
    assert sorted(delta_ids) == sorted(ids)


def test_a_retry_sent_to_another_writer_is_recognised(
    tmp_path: Path, server_factory: type[Server]
) -> None:
    """Two servers on one local root, each with its own log: once the first write is
    committed and the second writer has re-read the table, a retry of the same id sent
    to the second writer is a no-op, and the table holds the id once."""
    data = tmp_path / "data"
    a = server_factory(data, ISTORE_WAL_DIR=str(tmp_path / "a")).start()  # type: ignore[arg-type]
    b = server_factory(data, ISTORE_WAL_DIR=str(tmp_path / "b")).start()  # type: ignore[arg-type]
    row = interaction(0, id=str(uuid.uuid4()))
    assert httpx.post(a.url + "/api/v1/interactions", json=row).status_code == 201
    cross_node_visibility(a.url, b.url)  # a committed, and b has read that commit
    r = httpx.post(b.url + "/api/v1/interactions", json=row)
    assert r.status_code in (200, 201), r.text
    a.stop()
    b.stop()
    delta_ids, polars_ids = table_ids(str(data / "interactions"))
    assert delta_ids.count(str(row["id"])) == 1
    assert polars_ids.count(str(row["id"])) == 1


@pytest.mark.parametrize("remote", [False, True])
def test_one_maintenance_runner_at_a_time(
    remote: bool, s3: dict[str, str], tmp_path: Path, monkeypatch: Any
) -> None:
    from store.location import Location
    from store.state import Lease

    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    root = f"s3://{BUCKET}/lease" if remote else str(tmp_path)
    location = Location.parse(root)
    with Lease(location, "maintenance", "writer-a") as a:
        assert a
        with Lease(location, "maintenance", "writer-b") as b:
            assert not b  # held by a
    with Lease(location, "maintenance", "writer-b") as b:
        assert b  # a released it
        with Lease(location, "maintenance", "writer-a") as a:
            assert not a
        with Lease(location, "maintenance", "writer-c") as c:
            assert not c  # a's failed attempt did not release b's lease


def test_a_log_has_one_writer_and_keeps_its_id(tmp_path: Path) -> None:
    from store.engine import Store
    from store.errors import StoreError, StoreLocked

    data = tmp_path / "data"
    # The data root's own log is locked by <data>/LOCK, whatever the state folder.
    with Store(data, state_dir=tmp_path / "state"):
        with pytest.raises(StoreLocked):
            Store(data)
        with pytest.raises(StoreLocked):  # the same folder through another spelling
            Store(data, wal_dir=data / "x" / ".." / "wal")
    # A shared log: its own lock, and an id that cannot silently change.
    log_dir = tmp_path / "node"
    with Store(data, wal_dir=log_dir) as s:
        with pytest.raises(StoreLocked):
            Store(data, wal_dir=log_dir)
        writer = s.app_id
    assert (log_dir / "WRITER").exists()
    with Store(data, wal_dir=log_dir) as s:
        assert s.app_id == writer
    (log_dir / "WRITER").unlink()
    (log_dir / "wal-00000000000000000001.log").write_bytes(b"")  # a log with records
    with pytest.raises(StoreError, match="WRITER"):
        Store(data, wal_dir=log_dir)


def test_workers_do_not_outlive_their_supervisor(tmp_path: Path) -> None:
    """A second supervisor on a busy port refuses to start (it would share the port's
    SO_REUSEPORT group); a supervisor killed with SIGKILL takes its workers with it."""
    sup = Workers(tmp_path / "data", 2).start()
    try:
        other = subprocess.run(
            [
                sys.executable,
                "-m",
                "istore",
                "serve",
                "--data",
                str(tmp_path / "other"),
                "--port",
                str(sup.port),
                "--workers",
                "2",
            ],  # fmt: skip
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode != 0 and "cannot listen" in other.stderr + other.stdout
        children = sup.children()
        assert sup.proc is not None
        sup.proc.kill()  # no chance to forward anything
        sup.proc.wait(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid) for pid in children
        ):
            time.sleep(0.2)
        alive = [pid for pid in children if os.path.exists(f"/proc/{pid}") and
                 "zombie" not in _state(pid)]  # fmt: skip
        assert not alive, f"workers {alive} outlived their supervisor"
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            sup.kill_all()
        raise


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except OSError:
        return "zombie"
    return ""
