"""Values at the edge of what the storage types hold: refused with a 4xx naming the
field, or stored and flushed; never a 500, never a poison record that blocks the flusher."""

from __future__ import annotations

import json

import httpx
import pytest

from store.engine import Store

BASE = {"use_case": "x", "messages": [{"role": "user", "content": "a"}]}


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
        ({"created_at": "9999-12-31T23:59:59Z"}, 201, None),
        ({"created_at": "0001-01-01T00:00:00Z"}, 201, None),
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
