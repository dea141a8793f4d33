"""Data lifecycle: deletion hides at once and then really deletes (no byte left after
compact + vacuum), retention deletes exactly what is past its window, SIGTERM flushes
and exits 0, /metrics parses and moves, logs are JSON with request ids and hold
neither keys nor contents, and ``istore doctor`` says what is wrong."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from istore.cli import main
from service.keys import KeyRing
from store.engine import Store, StoreOptions
from tests.conftest import Server, assert_error, in_process, interaction

MARK = "qzv-ERASE-me-4d1c"  # in no other test data


def _files_holding(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` whose raw bytes hold ``needle``, and every Parquet
    file (in the table or not) whose decoded values do (compression hides raw bytes)."""
    found = []
    raw = needle.encode()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if raw in path.read_bytes():
            found.append(str(path))
        elif path.suffix == ".parquet" and needle in str(pq.read_table(path).to_pylist()):
            found.append(str(path))
    return found


async def test_erasure_hides_at_once_and_leaves_no_byte(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = Store(root, options=StoreOptions(flush_interval_s=0.2))
    person = f"{MARK}-user"
    try:
        async with in_process(store) as c:
            ids = []
            for i in range(3):
                body = interaction(i, user=person, labels={"note": f"{MARK} {i}"},
                                   messages=[{"role": "user", "content": f"my secret {MARK}"}],
                                   feedbacks=[{"metric": "thumbs_up", "value": 1,
                                               "details": f"said {MARK}"}])  # fmt: skip
                r = await c.post("/api/v1/interactions", json=body)
                ids.append(r.json()["completion_id"])
            keep = [(await c.post("/api/v1/interactions", json=interaction(10 + i, user="bob")))
                    .json()["completion_id"] for i in range(5)]  # fmt: skip
            r = await c.post("/api/v1/feedback", json={"completion_id": ids[0], "metric": "stars",
                                                       "value": 4, "reason": MARK})  # fmt: skip
            assert r.status_code == 201
            r = await c.post("/api/v1/comparison", json={
                "metric": "pref", "preferred_completion": ids[1],
                "other_completion": {"text": f"another answer {MARK}"},
                "messages": [{"role": "user", "content": f"my secret {MARK}"}],
                "project": "support"})  # fmt: skip
            assert r.status_code == 201
            r = await c.post(f"/v1/chat/completions/{ids[2]}", json={"metadata": {"x": MARK}})
            assert r.status_code == 200
            store.flush()
            assert _files_holding(root, MARK), "the test must be able to see the marker"

            # Delete by person, and one more by id.
            bad = await c.post("/api/v1/interactions/delete", json={})
            assert_error(bad, 422, param="body")
            r = await c.post("/api/v1/interactions/delete", json={"user": person})
            assert r.json() == {"deleted": 3}
            r = await c.post("/api/v1/interactions/delete", json={"user": person})
            assert r.json() == {"deleted": 0}  # already gone
            assert (await c.delete(f"/api/v1/interactions/{keep[4]}")).json() == {"deleted": 1}
            assert_error(await c.delete(f"/api/v1/interactions/{keep[4]}"), 404)

            # At once, no read path shows them.
            for cid in [*ids, keep[4]]:
                assert_error(await c.get(f"/api/v1/interactions/{cid}"), 404)
                assert_error(await c.get(f"/v1/chat/completions/{cid}"), 404)
            listed = (await c.get("/api/v1/interactions")).json()["data"]
            assert sorted(x["id"] for x in listed) == sorted(keep[:4])
            assert (await c.get("/api/v1/interactions", params={"search": MARK})).json()[
                "data"
            ] == []
            stats = (await c.get("/api/v1/interactions/stats")).json()["data"]
            assert stats[0]["count"] == 4
            for sql in ["SELECT * FROM interactions", "SELECT * FROM feedback",
                        "SELECT * FROM comparisons"]:  # fmt: skip
                r = await c.post("/api/v1/sql", json={"sql": sql})
                assert MARK not in r.text and not any(i in r.text for i in ids), sql
            export = await c.get("/api/v1/export", params={"format": "openai"})
            assert export.status_code == 200 and MARK not in export.text
            assert len(export.text.splitlines()) == 4
            stored = (await c.get("/v1/chat/completions", params={"limit": 100})).json()
            assert len(stored["data"]) == 4
    finally:
        store.close()

    # Physically: compact (purges) and vacuum with no window.
    r = CliRunner().invoke(main, ["compact", "--data", str(root)])
    assert r.exit_code == 0, r.output
    assert "interactions 4" in r.stdout  # 3 by person + 1 by id rewritten away
    r = CliRunner().invoke(main, ["vacuum", "--data", str(root), "--retention-hours", "0"])
    assert r.exit_code == 1  # a zero window needs --force
    r = CliRunner().invoke(main, ["vacuum", "--data", str(root), "--retention-hours", "0",
                                  "--force"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _files_holding(root, MARK) == []
    # (Ids are ours, not personal: tombstones and Delta statistics keep naming them.)
    # What was kept is intact, in the table itself.
    dt = DeltaTable(str(root / "interactions"))
    assert sorted(dt.to_pyarrow_table().column("id").to_pylist()) == sorted(keep[:4])


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_retention_deletes_exactly_what_is_past_the_window(tmp_path: Path) -> None:
    root = tmp_path / "data"
    now = datetime.now(UTC)
    rows, oracle = [], {"a": 0, "b": 0, "c": 0}
    windows = {"a": 30, "b": 10, "c": 60}  # c takes the default
    for uc in ("a", "b", "c"):
        for k in range(100):
            created = now - timedelta(days=k + 0.5)
            rows.append(interaction(k, use_case=uc, created_at=created.isoformat(),
                                    feedbacks=[{"metric": "m", "value": 1}]))  # fmt: skip
            oracle[uc] += (k + 0.5) < windows[uc]
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert CliRunner().invoke(main, ["import", "--data", str(root), str(src)]).exit_code == 0
    for args in (["a", "30"], ["b", "10"], ["--default", "60"]):
        r = CliRunner().invoke(main, ["retention", "set", "--data", str(root), *args])
        assert r.exit_code == 0, r.output
    shown = orjson.loads(
        CliRunner().invoke(main, ["retention", "show", "--data", str(root)]).stdout
    )
    assert shown == {"default_days": 60.0, "use_cases": {"a": 30.0, "b": 10.0}}
    r = CliRunner().invoke(main, ["retention", "apply", "--data", str(root), "--yes"])
    assert r.exit_code == 0, r.output
    table = DeltaTable(str(root / "interactions")).to_pyarrow_table().to_pylist()
    got = {uc: sum(1 for x in table if x["use_case"] == uc) for uc in oracle}
    assert got == oracle == {"a": 30, "b": 10, "c": 60}
    kept = {x["id"] for x in table}
    feedback = DeltaTable(str(root / "feedback")).to_pyarrow_table().column("completion_id")
    assert set(feedback.to_pylist()) == kept  # the feedback of deleted rows went with them
    bad = CliRunner().invoke(main, ["retention", "set", "--data", str(root), "a", "-3"])
    assert bad.exit_code != 0


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_sigterm_under_load_flushes_everything_and_exits_0(
    server_factory: type[Server], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data", ISTORE_FLUSH_INTERVAL_S="30").start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/api/v1/interactions", json=interaction(i, id=f"w{w}-{i}"))
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked.append(f"w{w}-{i}")
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    assert code == 0
    assert len(acked) > 100
    # Straight from the Delta table: no replay of the log needed.
    stored = DeltaTable(str(tmp_path / "data" / "interactions")).to_pyarrow_table()
    ids = stored.column("id").to_pylist()
    assert set(acked) <= set(ids) and len(ids) == len(set(ids))


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


async def test_metrics_parse_and_move(store: Store) -> None:
    async with in_process(store) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        before = {}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                before[(s.name, tuple(sorted(s.labels.items())))] = s.value
        for i in range(3):
            assert (await c.post("/api/v1/interactions", json=interaction(i))).status_code == 201
        for _ in range(2):
            assert (await c.get("/api/v1/interactions")).status_code == 200
        store.flush()
        after = {}
        for fam in text_string_to_metric_families((await c.get("/metrics")).text):
            for s in fam.samples:
                after[(s.name, tuple(sorted(s.labels.items())))] = s.value
    ing = ("istore_ingested_records_total", (("table", "interactions"),))
    assert after[ing] - before.get(ing, 0) == 3
    lst = ("istore_request_seconds_count",
           (("method", "GET"), ("route", "/api/v1/interactions"), ("status", "2xx")))  # fmt: skip
    assert after[lst] - before.get(lst, 0) == 2
    post = ("istore_request_seconds_count",
            (("method", "POST"), ("route", "/api/v1/interactions"), ("status", "2xx")))  # fmt: skip
    assert after[post] == 3
    assert after[("istore_table_version", (("table", "interactions"),))] >= 1
    assert after[("istore_flush_seconds_count", ())] >= 1
    for name in ("istore_wal_bytes", "istore_pending_rows", "istore_table_files"):
        assert any(k[0] == name for k in after), name


@pytest.mark.slow  # a live server or a crash: `make test` only
def test_logs_are_json_with_request_ids_and_no_secrets(
    server_factory: type[Server], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _, secret = KeyRing(data).create(["ingest", "read"], name="logs")
    server = server_factory(data, ISTORE_ACCESS_LOG="true").start()
    hdr = {"Authorization": f"Bearer {secret}", "X-Request-Id": "req-given-1"}
    body = interaction(1, messages=[{"role": "user", "content": f"private {MARK}"}])
    r = httpx.post(server.url + "/api/v1/interactions", json=body, headers=hdr)
    assert r.status_code == 201 and r.headers["x-request-id"] == "req-given-1"
    hdr.pop("X-Request-Id")
    r = httpx.get(server.url + "/api/v1/interactions", params={"search": MARK}, headers=hdr)
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32
    httpx.get(server.url + "/api/v1/interactions", headers={"Authorization": "Bearer wrong"})
    server.stop()
    assert server.proc is not None and server.proc.stderr is not None
    lines = [ln for ln in server.stderr_text.splitlines() if ln.strip()]
    records = [orjson.loads(ln) for ln in lines]  # every line is JSON
    access = [x for x in records if x["logger"] == "istore.access"]
    assert {x["request_id"] for x in access} >= {"req-given-1"}
    assert {(x["route"], x["status"]) for x in access} >= {
        ("/api/v1/interactions", 201), ("/api/v1/interactions", 200),
        ("/api/v1/interactions", 401),
    }  # fmt: skip
    text = "\n".join(lines)
    assert secret not in text and MARK not in text and "wrong" not in text


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"user": None}, "user"),
        ({"user": []}, "user"),
        ({"label": []}, "label"),
        ({"from": None}, "from"),
        ({"and": []}, "and"),
        ({"or": [{"user": "x"}, {"user": None}]}, "or[1].user"),
        ({"not": {}}, "not"),
        ({"all": False}, "body"),
    ],
)
async def test_delete_refuses_filters_that_match_everything(
    store: Store, body: dict[str, object], param: str
) -> None:
    async with in_process(store) as c:
        for i in range(3):
            await c.post("/api/v1/interactions", json=interaction(i, user=f"u{i}"))
        assert_error(await c.post("/api/v1/interactions/delete", json=body), 422, param=param)
        assert len((await c.get("/api/v1/interactions")).json()["data"]) == 3


async def test_repeating_a_deleted_interaction_is_a_no_op(store: Store) -> None:
    async with in_process(store) as c:
        body = interaction(0, id="once")
        assert (await c.post("/api/v1/interactions", json=body)).status_code == 201
        assert (await c.delete("/api/v1/interactions/once")).json() == {"deleted": 1}
        again = await c.post("/api/v1/interactions", json=body)  # a client's retry
        assert again.status_code == 201 and again.json()["completion_id"] == "once"
        assert_error(await c.get("/api/v1/interactions/once"), 404)


def test_retention_rules_are_bounded(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for days in ("inf", "nan", "1e6", "0"):
        r = CliRunner().invoke(main, ["retention", "set", "--data", data, "a", days])
        assert r.exit_code != 0 and "days" in r.output, days
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "retention.json").write_text('{"use_cases": {"a": 1e999}}')
    r = CliRunner().invoke(main, ["retention", "show", "--data", data])
    assert r.exit_code != 0 and "days" in r.output


async def test_a_bad_retention_file_does_not_stop_the_purge(store: Store) -> None:
    async with in_process(store) as c:
        await c.post("/api/v1/interactions", json=interaction(0, id="gone"))
        await c.delete("/api/v1/interactions/gone")
        (store.root / "retention.json").write_text('{"default_days": -5}')
        job = c._transport.app.state.maintenance  # type: ignore[attr-defined]
        result = job.run_once()
    assert result["purged"]["interactions"] == 1
    assert "retention" in (job.last_error or "")


def test_doctor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    missing = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    Store(data).close()
    ok = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    assert ok.exit_code == 0, ok.output
    assert "no key exists" in ok.output
    KeyRing(data).create(["admin"], name="admin")
    os.chmod(data / "keys.json", 0o644)
    bad = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    assert bad.exit_code == 1 and "chmod 600" in bad.output
    os.chmod(data / "keys.json", 0o600)
    victim = next((data / "interactions").rglob("*.parquet"), None)
    if victim is None:  # put one row in the table, then lose its file
        s = Store(data)
        from ingest.normalize import build_batch
        from ingest.parse import validate
        from store.schema import INTERACTIONS_TABLE

        s.write(INTERACTIONS_TABLE, build_batch([validate(interaction(1))],
                                                source="api").interactions()).result(5)  # fmt: skip
        s.close()
        victim = next((data / "interactions").rglob("*.parquet"))
    victim.unlink()
    lost = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    assert lost.exit_code == 1 and "missing" in lost.output and "backup" in lost.output


def test_delete_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = tmp_path / "in.ndjson"
    rows = [interaction(i, user="alice" if i < 4 else "bob") for i in range(10)]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    CliRunner().invoke(main, ["import", "--data", str(data), str(src)])
    r = CliRunner().invoke(main, ["delete", "--data", str(data), "--filter", "user=alice", "--yes"])
    assert r.exit_code == 0 and "deleted 4 interactions" in r.output
    r = CliRunner().invoke(main, ["delete", "--data", str(data)])
    assert r.exit_code != 0
    count = "SELECT count(*) AS n FROM interactions"
    r = CliRunner().invoke(main, ["sql", "--data", str(data), count, "--format", "ndjson"])
    assert orjson.loads(r.stdout.splitlines()[0])["n"] == 6


async def test_maintenance_job_purges_applies_retention_and_counts(store: Store) -> None:
    from store.lifecycle import Retention

    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    async with in_process(store) as c:
        for i in range(4):
            r = await c.post("/api/v1/interactions", json=interaction(i, user=f"u{i % 2}"))
            assert r.status_code == 201
        r = await c.post(
            "/api/v1/interactions", json=interaction(9, use_case="old", created_at=old)
        )
        assert r.status_code == 201
        Retention(use_cases={"old": 30}).save(store.root)
        assert (await c.post("/api/v1/interactions/delete", json={"user": "u0"})).json() == {
            "deleted": 2
        }
        job = c._transport.app.state.maintenance  # type: ignore[attr-defined]
        result = job.run_once()
        assert result["purged"]["interactions"] == 2
        assert result["retention"]["interactions"] == 1
        assert job.status()["runs"] == 1 and job.status()["last_error"] is None
        text = (await c.get("/metrics")).text
        ready = (await c.get("/readyz")).json()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert (
        samples[("istore_deleted_rows_total", (("reason", "deleted"), ("table", "interactions")))]
        == 2
    )
    assert (
        samples[("istore_deleted_rows_total", (("reason", "retention"), ("table", "interactions")))]
        == 1
    )
    assert samples[("istore_maintenance_runs_total", ())] == 1
    assert ready["maintenance"]["runs"] == 1
    rows = DeltaTable(str(store.root / "interactions")).to_pyarrow_table().num_rows
    assert rows == 2
