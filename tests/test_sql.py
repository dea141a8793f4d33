"""SQL: output formats, helper macros, more escape attempts, resource bombs cut off,
read-your-writes across list, stats and SQL."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
from click.testing import CliRunner

from istore.cli import main
from store.engine import Store
from tests.conftest import assert_error, in_process, interaction

QUERY = "SELECT id, use_case, labels, usage, latency_ms, created_at FROM interactions ORDER BY id"


@pytest_asyncio.fixture
async def seeded(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    body = [
        interaction(i, id=f"q{i}", use_case="support" if i % 2 else "sales",
                    usage={"prompt_tokens": i, "completion_tokens": 1, "total_tokens": i + 1},
                    latency_ms=100.0 * i)
        for i in range(6)
    ]  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    yield client


async def test_sql_formats_agree(seeded: httpx.AsyncClient) -> None:
    def post(fmt: str) -> httpx.Response:
        return seeded.post(f"/api/v1/sql?format={fmt}", json={"sql": QUERY})  # type: ignore[return-value]

    j = await post("json")
    assert j.status_code == 200 and j.headers["x-istore-truncated"] == "false"
    rows = j.json()["data"]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]

    nd = await post("ndjson")
    assert nd.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(x) for x in nd.content.splitlines()] == rows

    c = await post("csv")
    assert c.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(c.text)))
    assert [r["id"] for r in parsed] == [r["id"] for r in rows]
    assert orjson.loads(parsed[1]["labels"]) == rows[1]["labels"]  # nested as JSON text

    p = await post("parquet")
    table = pq.read_table(io.BytesIO(p.content))
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.schema.field("labels").type == pa.map_(pa.string(), pa.string())

    a = await post("arrow")
    table = pa.ipc.open_stream(a.content).read_all()
    assert table.column("latency_ms").to_pylist() == [r["latency_ms"] for r in rows]

    assert_error(await post("xml"), 422, "format")


async def test_labels_are_objects_and_times_end_in_z_everywhere(client: httpx.AsyncClient) -> None:
    """One shape of a value across the list, SQL (json, ndjson, csv) and the CLI."""
    for i, created in enumerate(("2026-11-20T10:00:00Z", "2026-11-20T10:00:00.25+01:00")):
        body = interaction(i, id=f"t{i}", created_at=created)
        assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    listed = {x["id"]: x for x in (await client.get("/api/v1/interactions")).json()["data"]}
    want = {"t0": "2026-11-20T10:00:00Z", "t1": "2026-11-20T09:00:00.250000Z"}
    assert {k: v["created_at"] for k, v in listed.items()} == want
    labels = {"project": "RAG Bot", "topic": "Industrial Tools"}
    sql = {
        "sql": "SELECT id, created_at, labels, {'l': labels} AS nested, "
        "TIMESTAMP '2026-01-02 03:04:05' AS naive FROM interactions ORDER BY id"
    }
    expected = [
        {"id": "t0", "created_at": want["t0"], "labels": labels, "nested": {"l": labels},
         "naive": "2026-01-02T03:04:05Z"},
        {"id": "t1", "created_at": want["t1"], "labels": labels, "nested": {"l": labels},
         "naive": "2026-01-02T03:04:05Z"},
    ]  # fmt: skip
    r = await client.post("/api/v1/sql", json=sql)
    assert r.json()["data"] == expected
    r = await client.post("/api/v1/sql?format=ndjson", json=sql)
    assert [orjson.loads(x) for x in r.content.splitlines()] == expected
    r = await client.post("/api/v1/sql?format=csv", json=sql)
    got = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["created_at"] for x in got] == [want["t0"], want["t1"]]
    assert [x["naive"] for x in got] == ["2026-01-02T03:04:05Z"] * 2
    assert [orjson.loads(x["labels"]) for x in got] == [labels, labels]  # an object, as JSON text
    assert orjson.loads(got[0]["nested"]) == {"l": labels}


def test_cli_sql_prints_wide_results_readably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, src = tmp_path / "data", tmp_path / "in.ndjson"
    long = "word " * 100
    rows = [interaction(i, id=f"w{i}", created_at="2026-11-20T10:00:00Z",
                        messages=[{"role": "user", "content": f"{long}\nline two"}])
            for i in range(2)]  # fmt: skip
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert CliRunner().invoke(main, ["import", "--data", str(data), str(src)]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    r = CliRunner().invoke(main, ["sql", "--data", str(data), "SELECT * FROM interactions"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "-[ row 1 ]" + "-" * 70  # wider than 80 columns: a block per row
    assert all(len(x) <= 80 for x in lines), lines
    assert 'labels             | {"project":"RAG Bot","topic":"Industrial Tools"}' in lines
    assert "created_at         | 2026-11-20T10:00:00Z" in lines
    assert any(x.startswith("messages ") and x.endswith("…") for x in lines)
    assert lines[-1] == "2 rows"
    q = "SELECT id, labels['topic'] AS topic FROM interactions ORDER BY id"
    r = CliRunner().invoke(main, ["sql", "--data", str(data), q])
    assert r.stdout == (
        "id | topic\n---+-----------------\nw0 | Industrial Tools\nw1 | Industrial Tools\n2 rows\n"
    )
    r = CliRunner().invoke(main, ["sql", "--data", str(data), "--format", "vertical", q])
    assert r.stdout.splitlines()[:3] == ["-[ row 1 ]" + "-" * 70, "id    | w0",
                                         "topic | Industrial Tools"]  # fmt: skip
    q = "SELECT labels, created_at FROM interactions LIMIT 1"
    r = CliRunner().invoke(main, ["sql", "--data", str(data), "--format", "json", q])
    assert orjson.loads(r.stdout) == [{"labels": {"project": "RAG Bot",
                                                  "topic": "Industrial Tools"},
                                       "created_at": "2026-11-20T10:00:00Z"}]  # fmt: skip


async def test_sql_helper_macros(seeded: httpx.AsyncClient) -> None:
    sql = (
        "SELECT label(labels, 'topic') AS topic, message_text(messages) AS text, "
        "last_user_message(messages) AS last FROM interactions WHERE id = 'q3'"
    )
    r = await seeded.post("/api/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [
        {
            "topic": "Industrial Tools",
            "text": "You are a good bot.\nquestion 3",
            "last": "question 3",
        }
    ]
    sql = (
        "SELECT m.role, count(*) AS n FROM interactions, "
        'unnest(from_json(messages, \'[{"role": "VARCHAR", "content": "JSON"}]\')) AS t(m) '
        "GROUP BY ALL ORDER BY 1"
    )
    r = await seeded.post("/api/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"role": "system", "n": 6}, {"role": "user", "n": 6}]


# More escape attempts (tests/test_api_read.py holds the first 40).
MORE_REJECTED = [
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM pragma_database_list",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM parquet_metadata('/etc/passwd')",
    "SELECT * FROM parquet_schema('/etc/passwd')",
    "SELECT * FROM read_ndjson_objects('/etc/passwd')",
    "SELECT * FROM query_table('interactions')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT getenv('HOME')",
    "SELECT getvariable('x')",
    "SET VARIABLE x = 1",
    "CREATE MACRO evil(x) AS x",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "USE memory",
    "VACUUM",
    "IMPORT DATABASE '/tmp'",
    "SELECT * FROM main.interactions",
    "SELECT * FROM temp.main._pending_feedback",
    "SELECT * FROM memory.main.label",
    "SELECT * FROM (FROM read_text('/etc/hostname'))",
    "FROM read_text('/etc/hostname')",
    "SELECT (SELECT content FROM read_text('/etc/hostname'))",
    "SELECT * FROM interactions UNION ALL SELECT * FROM read_csv('/etc/passwd')",
    # A CTE declared in a subquery does not cover the same name outside it (review).
    "SELECT name, setting FROM (WITH pg_settings AS (SELECT 1) SELECT 1) t, pg_settings",
    "SELECT * FROM (WITH duckdb_views AS (SELECT 1) SELECT 1) t, duckdb_views",
    "SELECT * FROM (WITH sqlite_master AS (SELECT 1) SELECT 1) t, sqlite_master",
    "SELECT * FROM (WITH amendments AS (SELECT 1) SELECT 1) t, amendments",
    "WITH a AS (WITH amendments AS (SELECT 1) SELECT 1) SELECT * FROM a, amendments",
]


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("query", MORE_REJECTED)
async def test_more_escapes_are_refused(seeded: httpx.AsyncClient, query: str) -> None:
    r = await seeded.post("/api/v1/sql", json={"sql": query})
    err = assert_error(r, 400, "sql")
    assert "root:" not in err["message"]
    r = await seeded.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    assert r.json()["data"] == [{"n": 6}]


async def test_scoped_ctes_still_work(seeded: httpx.AsyncClient) -> None:
    for sql in (
        "SELECT n FROM (WITH x AS (SELECT count(*) AS n FROM interactions) SELECT n FROM x) t",
        "WITH x AS (SELECT 1 AS a), y AS (SELECT a FROM x) SELECT (SELECT a FROM y) AS a",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT count(*) AS n FROM r",
    ):
        r = await seeded.post("/api/v1/sql", json={"sql": sql})
        assert r.status_code == 200, (sql, r.text)


@pytest_asyncio.fixture
async def limited(store: Store, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store, sql_max_rows=5, sql_timeout_s=1.0) as c:
        yield c


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    "query",
    [
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) "
        "SELECT max(length(s)) FROM r",
        "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c",
        "SELECT string_agg(repeat('x', 1000000), '') FROM range(100000)",
        "SELECT list(range) FROM range(1000000000)",
    ],
)
async def test_resource_bombs_are_cut_off(limited: httpx.AsyncClient, query: str) -> None:
    t0 = time.monotonic()
    r = await limited.post("/api/v1/sql", json={"sql": query})
    assert time.monotonic() - t0 < 20
    err = assert_error(r, 400)
    assert err["code"] in ("query_timeout", "invalid_query"), err
    assert (await limited.post("/api/v1/sql", json={"sql": "SELECT 1 AS x"})).status_code == 200


async def test_read_your_writes(client: httpx.AsyncClient) -> None:
    """An acknowledged interaction is in list, stats and SQL at once (no flush)."""
    r = await client.post("/api/v1/interactions", json=interaction(0, id="now-1", use_case="ryw"))
    assert r.status_code == 201
    listed = (await client.get("/api/v1/interactions?use_case=ryw")).json()["data"]
    stats = (await client.get("/api/v1/interactions/stats?use_case=ryw")).json()["data"]
    rows = (await client.post(
        "/api/v1/sql", json={"sql": "SELECT id FROM interactions WHERE use_case = 'ryw'"}
    )).json()["data"]  # fmt: skip
    assert [x["id"] for x in listed] == ["now-1"]
    assert stats == [{"count": 1}]
    assert rows == [{"id": "now-1"}]


def test_cli_sql_formats(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with Store(data) as store:
        from ingest.normalize import build_batch
        from ingest.parse import validate
        from store.schema import INTERACTIONS_TABLE

        batch = build_batch([validate(interaction(i, id=f"c{i}")) for i in range(3)], source="api")
        store.write(INTERACTIONS_TABLE, batch.interactions()).result()
    runner = CliRunner()
    sql = "SELECT id, labels FROM interactions ORDER BY id"
    r = runner.invoke(main, ["sql", "--data", str(data), "--format", "ndjson", sql])
    assert r.exit_code == 0, r.output
    assert [orjson.loads(x)["id"] for x in r.output.splitlines()] == ["c0", "c1", "c2"]
    out = tmp_path / "r.parquet"
    r = runner.invoke(
        main, ["sql", "--data", str(data), "--format", "parquet", "-o", str(out), sql]
    )
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("id").to_pylist() == ["c0", "c1", "c2"]
    r = runner.invoke(main, ["sql", "--data", str(data), "--format", "parquet", sql])
    assert r.exit_code == 2  # binary formats need -o


def test_the_deadline_covers_work_on_the_rows(tmp_path: Path) -> None:
    """The time limit does not end when DuckDB hands over the first batch: whoever
    encodes the rows checks the same deadline (issue 16, finding 5)."""
    from store.duck import Duck, Snapshot
    from store.errors import QueryTimeout
    from store.output import encode

    duck = Duck([tmp_path], temp_dir=tmp_path / "tmp")
    try:
        with duck.stream(Snapshot({}), "SELECT * FROM range(100000) t(x)", timeout_s=0.2) as res:
            time.sleep(0.4)  # the consumer is slow, not DuckDB
            with pytest.raises(QueryTimeout):
                for _ in encode(res.schema, res.batches, "ndjson", check=res.check):
                    pass
    finally:
        duck.close()


def test_rows_are_converted_in_bounded_pieces() -> None:
    """A piece of rows makes at most about PIECE_WEIGHT Python objects, whatever the
    Arrow size: 1,000 one-byte structs per row are 1,000 dicts per row."""
    from store.errors import InvalidQuery
    from store.output import MAX_ROW_WEIGHT, PIECE_WEIGHT, pieces

    structs = pa.array([[{"a": 1}] * 1000] * 100)
    batch = pa.RecordBatch.from_arrays([structs, pa.array(range(100))], names=["l", "n"])
    got = list(pieces(batch))
    assert sum(p.num_rows for p in got) == 100 and len(got) > 1
    assert all(p.num_rows * 2002 <= PIECE_WEIGHT for p in got)
    text = pa.array(["x" * 3_000_000] * 4)  # strings count their bytes
    assert len(list(pieces(pa.RecordBatch.from_arrays([text], names=["s"])))) == 4
    huge = pa.array([[0] * (MAX_ROW_WEIGHT + 1)])
    with pytest.raises(InvalidQuery):
        list(pieces(pa.RecordBatch.from_arrays([huge], names=["l"])))
