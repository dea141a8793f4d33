"""Values at the edge of what the storage types hold: refused with a 4xx naming the
field, or stored and flushed; never a 500, never a poison record that blocks the flusher."""

from __future__ import annotations

import json

import httpx
import pytest

from store.engine import Store

BASE = {"use_case": "x", "messages": [{"role": "user", "content": "a"}]}


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"latency_ms": 10**30}, 422, "latency_ms"),
        ({"latency_ms": 10**400}, 422, "latency_ms"),
        ({"ttft_ms": 1e308}, 422, "ttft_ms"),
        ({"usage": {"prompt_tokens": 2**63}}, 422, "usage.prompt_tokens"),
        ({"feedbacks": [{"metric": "m", "value": 10**400}]}, 422, "feedbacks[0].value"),
        ({"created_at": 10**30}, 422, "created_at"),
        ({"feedbacks": [{"metric": "m", "value": 10**30}]}, 201, None),
        ({"params": {"seed": 10**30}}, 201, None),
        ({"messages": [{"role": "user", "content": "a", "n": -(10**40)}]}, 201, None),
        ({"created_at": "9999-12-31T23:59:59Z"}, 422, "created_at"),
        ({"created_at": "0001-01-01T00:00:00+01:00"}, 422, "created_at"),
        ({"created_at": "9999-12-31T23:59:59-01:00"}, 422, "created_at"),
        ({"created_at": "0001-01-01T00:00:00Z", "completion": {"content": "x"}}, 422, "created_at"),
        (
            {"feedbacks": [{"metric": "m", "value": 1, "created_at": "0001-01-01T00:00:00+01:00"}]},
            422,
            "feedbacks[0].created_at",
        ),  # fmt: skip
        ({"created_at": "9999-12-30T00:00:00Z"}, 201, None),
        ({"created_at": "1900-01-01T00:00:00+00:00"}, 201, None),
        ({"created_at": 1764000000000}, 201, None),  # milliseconds
    ],
)
async def test_edge_values(
    client: httpx.AsyncClient,
    store: Store,
    extra: dict[str, object],
    status: int,
    param: str | None,
) -> None:
    body = json.dumps({**BASE, **extra})
    r = await client.post(
        "/api/v1/interactions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param
    store.flush()  # whatever was accepted must also reach the Delta table
    assert store.flush_error is None
    assert store.status()["pending_rows"] == 0
    if status == 201:
        got = (await client.get(f"/api/v1/interactions/{r.json()['completion_id']}")).json()
        assert got["messages"] == json.loads(body)["messages"]
        if "params" in extra:
            assert got["params"] == extra["params"]


async def test_sql_values_json_cannot_hold_are_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/sql", json={"sql": "SELECT 'infinity'::TIMESTAMP AS t"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "sql"


async def test_truncated_or_multi_member_gzip_is_refused(client: httpx.AsyncClient) -> None:
    import gzip

    one = gzip.compress(json.dumps(BASE).encode())
    for body in (one[:-8], one + one):
        r = await client.post(
            "/api/v1/interactions",
            content=body,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT current_setting('allowed_directories')",
        'WITH q AS (WITH "/etc/passwd" AS (SELECT 1) SELECT 1) SELECT * FROM "/etc/passwd"',
        "WITH q AS (WITH _interactions_v1 AS (SELECT 1) SELECT 1) SELECT * FROM _interactions_v1",
        "SELECT * FROM _pending_interactions",
    ],
)
async def test_sql_sandbox_holes_found_in_review(client: httpx.AsyncClient, sql: str) -> None:
    r = await client.post("/api/v1/sql", json={"sql": sql})
    assert r.status_code == 400, r.text
