"""Captured OTLP requests of the real clients (``tests/fixtures/otlp``, made by
``python -m tests.otlp_capture``) through the real endpoints of an in-process app:
every call comes back from ``GET /api/v1/interactions`` complete, once."""

from __future__ import annotations

import httpx
import pytest

from store.engine import Store
from tests.conftest import in_process
from tests.otlp_clients import CLIENTS
from tests.otlp_expect import check, fixture_requests


async def replay(c: httpx.AsyncClient, client: str, order: str = "sent") -> None:
    reqs = fixture_requests(client)
    if order == "logs-last":
        reqs = [r for r in reqs if "logs" not in r["path"]] + [
            r for r in reqs if "logs" in r["path"]
        ]
    elif order == "logs-first":
        reqs = [r for r in reqs if "logs" in r["path"]] + [
            r for r in reqs if "logs" not in r["path"]
        ]
    for r in reqs:
        headers = {"content-type": r["content_type"]}
        if r["content_encoding"]:
            headers["content-encoding"] = r["content_encoding"]
        resp = await c.post(r["path"], content=r["body"], headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/x-protobuf"
        assert resp.content == b"", "an empty Export*ServiceResponse: nothing rejected"


async def stored(c: httpx.AsyncClient) -> list[dict]:
    r = await c.get("/api/v1/interactions", params={"source": "otlp", "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("client", CLIENTS)
async def test_captured_client_requests_become_complete_interactions(
    store: Store, client: str
) -> None:
    async with in_process(store) as c:
        await replay(c, client)
        check(client, await stored(c))
        await replay(c, client)  # an exporter's retry of everything: nothing twice
        check(client, await stored(c))


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("client", ["openai-v2-legacy", "openai-v2-event"])
@pytest.mark.parametrize("order", ["logs-first", "logs-last"])
async def test_spans_and_log_records_join_in_either_order(
    store: Store, client: str, order: str
) -> None:
    async with in_process(store) as c:
        await replay(c, client, order)
        check(client, await stored(c))


async def test_the_filters_see_otlp_interactions(store: Store) -> None:
    async with in_process(store) as c:
        await replay(c, "langfuse")
        await replay(c, "openai-v2-span")
        for params, n in (({"use_case": "geo-qa"}, 5), ({"use_case": "geo-assistant"}, 5),
                          ({"model": "tools"}, 2), ({"label": "tag.tool_call:true"}, 1),
                          ({"label": "feature:qa-box", "model": "plain"}, 3),
                          ({"user": "user-7"}, 5), ({"session_id": "session-1"}, 5)):  # fmt: skip
            r = await c.get("/api/v1/interactions", params={**params, "source": "otlp"})
            assert len(r.json()["data"]) == n, params
