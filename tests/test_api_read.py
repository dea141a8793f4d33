"""GET /api/v1/interactions (filters, pagination), GET /interactions/{id}, POST /sql
(read-only sandbox), and visibility of acknowledged rows before and after a flush."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from store.engine import Store
from tests.conftest import assert_error, in_process, interaction

URL = "/api/v1/interactions"


# -- helpers -------------------------------------------------------------------------------


async def sql(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    r = await client.post("/api/v1/sql", json={"sql": query})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def ids(client: httpx.AsyncClient, params: Any) -> list[str]:
    r = await client.get(URL, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"object", "data", "has_more", "next_cursor"}
    assert body["object"] == "list"
    return [x["id"] for x in body["data"]]


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    r = await client.post(URL, json=body)
    assert r.status_code == 201, r.text
    return r


# A small known data set. Desc order by created_at: f e d c b a.
SEED = [
    dict(id="a", use_case="support", model="m1", labels={"topic": "x", "env": "prod"},
         created_at="2024-01-01T00:00:00Z"),
    dict(id="b", use_case="support", model="m2", labels={"topic": "y", "env": "prod"},
         created_at=1704153600),  # 2024-01-02T00:00:00Z as unix seconds
    dict(id="c", use_case="other", model="m3", labels={"topic": "x", "env": "dev", "empty": ""},
         created_at="2024-01-03T00:00:00+00:00", user="u1"),
    dict(id="d", use_case="support", model=None, labels=None,
         created_at="2024-01-04T00:00:00", status="error", error="boom"),  # naive = UTC
    dict(id="e", use_case="other", model="m1", labels={"topic": "z", "url": "http://h:1/p"},
         created_at="2024-01-04T00:00:00.000001Z"),
    dict(id="f", use_case="support", model="m2",
         labels={"topic": "x", "env": "prod", "tier": "gold"},
         created_at="2024-01-05T12:30:00+02:00"),  # 10:30Z
]  # fmt: skip


@pytest_asyncio.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await post(client, [interaction(i, **row) for i, row in enumerate(SEED)])
    return client


# -- filters ---------------------------------------------------------------------------------
FILTER_CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "fedcba"),
    ({"use_case": "support"}, "fdba"),
    ({"use_case": "other"}, "ec"),
    ({"use_case": ["support", "other"]}, "fedcba"),
    ({"use_case": "nope"}, ""),
    ({"model": "m1"}, "ea"),
    ({"model": ["m1", "m3"]}, "eca"),
    ({"model": ["m2", "nope"]}, "fb"),
    ({"label": "topic:x"}, "fca"),
    ({"label": "topic:X"}, ""),
    ({"label": ["topic:x", "env:prod"]}, "fa"),
    ({"label": ["env:prod", "topic:x", "tier:gold"]}, "f"),
    ({"label": "topic:x|y"}, "fcba"),
    ({"label": ["topic:x|z", "env:dev"]}, "c"),
    ({"label": "empty:"}, "c"),
    ({"label": "topic:"}, ""),
    ({"label": "url:http://h:1/p"}, "e"),  # only the first ':' separates
    ({"label": "missing:x"}, ""),
    ({"has_label": "tier"}, "f"),
    ({"has_label": "empty"}, "c"),
    ({"no_label": "env"}, "ed"),
    ({"user": "u1"}, "c"),
    ({"status": "error"}, "d"),
    ({"source": "api"}, "fedcba"),
    ({"source": "gateway"}, ""),
    ({"from": "2024-01-03T00:00:00Z"}, "fedc"),  # inclusive
    ({"to": "2024-01-03T00:00:00Z"}, "ba"),  # exclusive
    ({"from": "1704153600", "to": "1704326400"}, "cb"),  # unix seconds
    ({"from": "1704153600.5"}, "fedc"),
    ({"from": "2024-01-04T00:00:00Z", "to": "2024-01-04T00:00:00.000002Z"}, "ed"),
    ({"from": "2024-01-02"}, "fedcb"),  # a date, naive = UTC
    ({"from": "2024-01-05T12:30:00+02:00"}, "f"),
    ({"from": "2024-01-05T12:30:01+02:00"}, ""),
    ({"to": "2024-01-05T10:30:00Z"}, "edcba"),
    ({"use_case": "support", "model": "m2", "label": "env:prod",
      "from": "2024-01-02T00:00:00Z"}, "fb"),
]  # fmt: skip


async def test_list_filters(seeded: httpx.AsyncClient) -> None:
    """Every case runs against one seeded store; all mismatches are reported together."""
    wrong = []
    for params, expected in FILTER_CASES:
        got = await ids(seeded, params)
        if got != list(expected):
            wrong.append((params, expected, "".join(got)))
    assert wrong == []


async def test_list_order_asc(seeded: httpx.AsyncClient) -> None:
    assert await ids(seeded, {"order": "asc"}) == list("abcdef")
    assert await ids(seeded, {"order": "asc", "use_case": "other"}) == list("ce")


async def test_list_items_have_the_api_shape(seeded: httpx.AsyncClient) -> None:
    r = await seeded.get(URL, params={"use_case": "support", "limit": 1})
    item = r.json()["data"][0]
    assert item["id"] == "f"
    assert item["created_at"] == "2024-01-05T10:30:00Z"
    assert item["labels"] == {"topic": "x", "env": "prod", "tier": "gold"}
    assert isinstance(item["messages"], list) and item["messages"][0]["role"] == "system"
    assert item["completion"] == "answer 5"
    for internal in ("day", "completion_message"):
        assert internal not in item


async def test_filters_survive_a_flush(seeded: httpx.AsyncClient, store: Store) -> None:
    store.flush()
    assert store.status()["pending_rows"] == 0
    assert await ids(seeded, {"label": ["topic:x", "env:prod"]}) == ["f", "a"]
    assert await ids(seeded, {"use_case": "other"}) == ["e", "c"]
    assert await ids(seeded, {"from": "1704153600", "to": "1704326400"}) == ["c", "b"]
    assert await ids(seeded, {"has_label": "empty"}) == ["c"]


# -- pagination ------------------------------------------------------------------------------
async def _seed_many(client: httpx.AsyncClient, n: int) -> list[tuple[datetime, str, str]]:
    """n rows, in groups of three sharing one created_at, over two use cases."""
    base = datetime(2024, 3, 1, tzinfo=UTC)
    rows = []
    body = []
    for i in range(n):
        ts = base + timedelta(seconds=i // 3, microseconds=7)
        id_ = f"p{uuid.uuid4().hex[:12]}"
        uc = "pa" if i % 2 else "pb"
        rows.append((ts, id_, uc))
        body.append(interaction(i, id=id_, use_case=uc, created_at=ts.isoformat()))
    await post(client, body)
    return rows


async def walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cursor = None
    for _ in range(1000):
        p = dict(params)
        if cursor is not None:
            p["after"] = cursor
        r = await client.get(URL, params=p)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= params["limit"]
        out += [x["id"] for x in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return out
        assert isinstance(page["next_cursor"], str) and page["next_cursor"]
        assert len(page["data"]) == params["limit"]  # a full page when there is more
        cursor = page["next_cursor"]
    raise AssertionError("pagination does not end")


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 4, 7, 23, 1000])
async def test_pagination_walks_every_row_once_in_order(
    client: httpx.AsyncClient, order: str, limit: int
) -> None:
    rows = await _seed_many(client, 23)
    expected = [id_ for _, id_, _ in sorted(rows, reverse=order == "desc")]
    got = await walk(client, {"limit": limit, "order": order})
    assert got == expected


async def test_pagination_with_a_filter(client: httpx.AsyncClient) -> None:
    rows = await _seed_many(client, 23)
    expected = [id_ for ts, id_, uc in sorted(rows, reverse=True) if uc == "pa"]
    assert len(expected) == 11
    assert await walk(client, {"limit": 3, "use_case": "pa"}) == expected


async def test_pagination_across_a_flush(client: httpx.AsyncClient, store: Store) -> None:
    rows = await _seed_many(client, 12)
    expected = [id_ for _, id_, _ in sorted(rows, reverse=True)]
    first = (await client.get(URL, params={"limit": 5})).json()
    assert first["has_more"] is True
    store.flush()
    rest = await walk(client, {"limit": 5, "after": first["next_cursor"]})
    assert [x["id"] for x in first["data"]] + rest == expected


async def test_limit_equal_to_the_count_has_no_more(seeded: httpx.AsyncClient) -> None:
    r = (await seeded.get(URL, params={"limit": 6})).json()
    assert len(r["data"]) == 6 and r["has_more"] is False and r["next_cursor"] is None
    r = (await seeded.get(URL, params={"limit": 5})).json()
    assert len(r["data"]) == 5 and r["has_more"] is True
    last = (await seeded.get(URL, params={"limit": 5, "after": r["next_cursor"]})).json()
    assert [x["id"] for x in last["data"]] == ["a"]
    assert last["has_more"] is False and last["next_cursor"] is None


async def test_default_limit_is_50(client: httpx.AsyncClient) -> None:
    await post(client, [interaction(i) for i in range(51)])
    r = (await client.get(URL)).json()
    assert len(r["data"]) == 50 and r["has_more"] is True


# -- bad list requests -----------------------------------------------------------------------
def _cursor(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


BAD_PARAMS: list[tuple[dict[str, str], str]] = [
    ({"bogus": "1"}, "bogus"),
    ({"use_case": "support", "labels": "a:b"}, "labels"),
    ({"after": "not-a-cursor"}, "after"),
    ({"after": "!!!"}, "after"),
    ({"after": _cursor({"a": 1})}, "after"),
    ({"after": _cursor(["x", "y"])}, "after"),
    ({"after": _cursor([1, 2, 3])}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"order": "sideways"}, "order"),
    ({"label": "nocolon"}, "label"),
    ({"label": ":value"}, "label"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2024-13-01"}, "to"),
    ({"from": "nan"}, "from"),
]


async def test_bad_list_params(seeded: httpx.AsyncClient) -> None:
    for params, param in BAD_PARAMS:
        r = await seeded.get(URL, params=params)
        err = assert_error(r, 422, param=param)
        assert err["type"] == "invalid_request_error"
        assert param in err["message"]


@pytest_asyncio.fixture
async def no_raise(store: Store, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Like ``client`` but a crash is a 500 response, not an exception in the test."""
    async with in_process(store, raise_errors=False) as c:
        yield c


@pytest.mark.parametrize("forged", [[2**63, "a"], [-(2**63), "a"], [1e300, "a"]])
async def test_forged_cursor_out_of_range_is_422(
    no_raise: httpx.AsyncClient, forged: list[Any]
) -> None:
    await post(no_raise, interaction(0))
    assert_error(await no_raise.get(URL, params={"after": _cursor(forged)}), 422, param="after")


@pytest.mark.parametrize("value", ["1e20", "-1e20", "inf", "99999999999999999999"])
async def test_out_of_range_time_filter_is_422(no_raise: httpx.AsyncClient, value: str) -> None:
    assert_error(await no_raise.get(URL, params={"from": value}), 422, param="from")
    assert_error(await no_raise.get(URL, params={"to": value}), 422, param="to")


# -- get by id -------------------------------------------------------------------------------
async def test_get_unknown_id_is_404(seeded: httpx.AsyncClient) -> None:
    err = assert_error(await seeded.get(f"{URL}/no-such-id"), 404)
    assert err["type"] == "not_found_error"
    assert "no-such-id" in err["message"]
    assert_error(await seeded.get(f"{URL}/%27%20OR%201%3D1%20--"), 404)  # ' OR 1=1 --


async def test_get_by_id(seeded: httpx.AsyncClient) -> None:
    got = (await seeded.get(f"{URL}/d")).json()
    assert got["id"] == "d"
    assert got["created_at"] == "2024-01-04T00:00:00Z"
    assert got["model"] is None and got["labels"] is None
    assert (got["status"], got["error"]) == ("error", "boom")
    assert got["feedback"] == []


# -- SQL -------------------------------------------------------------------------------------
async def test_sql_aggregate(seeded: httpx.AsyncClient) -> None:
    r = await seeded.post(
        "/api/v1/sql",
        json={"sql": "SELECT use_case, count(*) AS n, count(DISTINCT model) AS models "
                     "FROM interactions GROUP BY use_case ORDER BY use_case"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == ["use_case", "n", "models"]
    assert body["data"] == [
        {"use_case": "other", "n": 2, "models": 2},
        {"use_case": "support", "n": 4, "models": 2},
    ]
    assert body["truncated"] is False


async def test_sql_labels_and_cte(seeded: httpx.AsyncClient) -> None:
    rows = await sql(
        seeded,
        "WITH t AS (SELECT id, labels['topic'] AS topic FROM interactions) "
        "SELECT topic, count(*) AS n FROM t WHERE topic IS NOT NULL GROUP BY topic ORDER BY topic",
    )
    assert rows == [{"topic": "x", "n": 3}, {"topic": "y", "n": 1}, {"topic": "z", "n": 1}]


async def test_sql_sees_feedback(client: httpx.AsyncClient) -> None:
    await post(client, interaction(0, id="fb1", feedbacks=[{"metric": "m", "value": 0.5}]))
    rows = await sql(client, "SELECT completion_id, metric, value FROM feedback")
    assert rows == [{"completion_id": "fb1", "metric": "m", "value": 0.5}]


REJECTED_SQL = [
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP VIEW interactions",
    "DROP VIEW interactions",
    "DROP TABLE interactions",
    "INSERT INTO interactions (id) VALUES ('x')",
    "DELETE FROM interactions",
    "UPDATE interactions SET model = 'x'",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE TEMP VIEW interactions AS SELECT 1",
    "COPY interactions TO '/tmp/istore-leak.csv'",
    "COPY (SELECT 1) TO '/tmp/istore-leak.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '/tmp/istore-leak'",
    "ATTACH '/tmp/istore-evil.db' AS evil",
    "DETACH memory",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET threads = 64",
    "PRAGMA version",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "BEGIN",
    "EXPLAIN ANALYZE SELECT 1",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_json('/etc/os-release')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "WITH x AS (SELECT 1) SELECT * FROM read_text('/etc/hostname')",
    "SELECT id FROM interactions, LATERAL (SELECT * FROM read_text('/etc/hostname'))",
    "SELEC 1",
    "SELECT * FROM no_such_view",
    "SELECT no_such_column FROM interactions",
    ";",
]


async def test_sql_rejected_with_400(seeded: httpx.AsyncClient) -> None:
    before = await sql(seeded, "SELECT count(*) AS n FROM interactions")
    assert before == [{"n": 6}]
    for query in REJECTED_SQL:
        r = await seeded.post("/api/v1/sql", json={"sql": query})
        assert r.status_code == 400, (query, r.text)
        err = assert_error(r, 400, param="sql")
        assert err["code"] == "invalid_query"
        assert "root:" not in err["message"]  # /etc/passwd content never leaks
        # Nothing changed: the view is intact and the server still answers.
        assert await sql(seeded, "SELECT count(*) AS n FROM interactions") == before, query
        assert await ids(seeded, {"use_case": "other"}) == ["e", "c"], query
    for leak in ("/tmp/istore-leak.csv", "/tmp/istore-leak.parquet", "/tmp/istore-leak"):
        assert not Path(leak).exists()


@pytest.mark.parametrize(
    ("body", "param"),
    [({}, "body.sql"), ({"sql": ""}, "body.sql"), ({"sql": 5}, "body.sql"),
     ({"sql": "SELECT 1", "extra": 1}, "body.extra")],
)  # fmt: skip
async def test_sql_bad_body_is_422(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    assert_error(await client.post("/api/v1/sql", json=body), 422, param=param)


@pytest.mark.parametrize(
    "template",
    [
        "SELECT count(*) AS n FROM read_parquet('{root}/interactions/**/*.parquet')",
        "SELECT count(*) AS n FROM glob('{root}/interactions/**')",
    ],
)
async def test_sql_cannot_read_the_store_files(
    client: httpx.AsyncClient, store: Store, template: str
) -> None:
    """Only the views: reading the tables' files directly would bypass them (and what
    deletes and use-case scoped keys hide). SPEC: no file access."""
    await post(client, interaction(0))
    store.flush()
    query = template.format(root=store.root)
    assert_error(await client.post("/api/v1/sql", json={"sql": query}), 400, param="sql")


@pytest_asyncio.fixture
async def limited(store: Store, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store, sql_max_rows=5, sql_timeout_s=0.5) as c:
        yield c


async def test_sql_row_limit_truncates(limited: httpx.AsyncClient) -> None:
    r = await limited.post("/api/v1/sql", json={"sql": "SELECT * FROM range(100) t(x)"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] == [{"x": i} for i in range(5)]
    assert body["truncated"] is True
    r = await limited.post("/api/v1/sql", json={"sql": "SELECT * FROM range(5) t(x)"})
    assert r.json()["truncated"] is False


async def test_sql_time_limit(limited: httpx.AsyncClient) -> None:
    t0 = time.monotonic()
    r = await limited.post(
        "/api/v1/sql",
        json={"sql": "SELECT count(*) FROM range(1000000000000) t(x) WHERE random() < 0"},
    )
    assert time.monotonic() - t0 < 10
    err = assert_error(r, r.status_code)
    assert 400 <= r.status_code < 500
    assert err["code"] == "query_timeout"
    assert (await limited.post("/api/v1/sql", json={"sql": "SELECT 1 AS x"})).status_code == 200


# -- visibility: the unflushed tail and the Delta files, exactly once -------------------------
async def test_visible_in_the_tail_then_in_delta_exactly_once(
    slow_client: httpx.AsyncClient, slow_store: Store
) -> None:
    v0 = slow_store.status()["versions"]["interactions"]
    r = await post(slow_client, interaction(1, id="vis-1"))
    assert r.json()["completion_id"] == "vis-1"
    # Acked and not flushed: it is in the in-memory tail, and already readable.
    assert slow_store.status()["pending_rows"] == 1
    assert await ids(slow_client, {}) == ["vis-1"]
    assert (await slow_client.get(f"{URL}/vis-1")).status_code == 200
    assert await sql(slow_client, "SELECT count(*) AS n FROM interactions") == [{"n": 1}]

    assert slow_store.flush() == 1
    status = slow_store.status()
    assert status["pending_rows"] == 0
    assert status["versions"]["interactions"] > v0  # it is in a Delta commit now
    assert await ids(slow_client, {}) == ["vis-1"]
    assert await sql(slow_client, "SELECT count(*) AS n FROM interactions") == [{"n": 1}]
    assert (await slow_client.get(f"{URL}/vis-1")).json()["completion"] == "answer 1"

    # A second flush with nothing new does not duplicate anything either.
    assert slow_store.flush() == 0
    assert await sql(slow_client, "SELECT count(*) AS n FROM interactions") == [{"n": 1}]


async def test_rows_split_between_delta_and_tail_are_each_seen_once(
    slow_client: httpx.AsyncClient, slow_store: Store
) -> None:
    await post(slow_client, [interaction(i, id=f"old-{i}") for i in range(3)])
    slow_store.flush()
    await post(slow_client, [interaction(i, id=f"new-{i}") for i in range(2)])
    assert slow_store.status()["pending_rows"] == 2
    listed = await ids(slow_client, {"limit": 1000})
    assert sorted(listed) == sorted([f"old-{i}" for i in range(3)] + [f"new-{i}" for i in range(2)])
    rows = await sql(slow_client, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM interactions")
    assert rows == [{"n": 5, "d": 5}]


@pytest.mark.slow  # a live server or a long property run: `make test` only
async def test_reads_during_a_flush_see_every_row_once(
    slow_client: httpx.AsyncClient, slow_store: Store
) -> None:
    """Readers racing the flusher never see a row twice (tail + Delta) or not at all."""
    expected = 0
    q = "SELECT count(*) AS n, count(DISTINCT id) AS d FROM interactions"
    for round_ in range(4):
        await post(slow_client, [interaction(i, id=f"r{round_}-{i}") for i in range(25)])
        expected += 25

        async def reader() -> list[tuple[int, int]]:
            seen = []
            for _ in range(15):
                rows = await sql(slow_client, q)
                seen.append((rows[0]["n"], rows[0]["d"]))
                page = await slow_client.get(URL, params={"limit": 1000})
                listed = [x["id"] for x in page.json()["data"]]
                seen.append((len(listed), len(set(listed))))
            return seen

        flushed, *seen = await asyncio.gather(
            asyncio.to_thread(slow_store.flush), reader(), reader()
        )
        assert flushed == 25
        for observations in seen:
            assert set(observations) == {(expected, expected)}
