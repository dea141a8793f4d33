"""Curation endpoints: PATCH labels, bulk labels over a filter (exactly the list's rows),
replay through the gateway against the upstream stand-in (``tests.upstream``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.keys import KeyRing
from store.engine import Store
from tests.conftest import assert_error, in_process, interaction
from tests.test_gateway import routing_toml
from tests.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(delay_s=3.0) as up:
        yield up


@pytest.fixture
async def c(
    store: Store, tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("ISTORE_TEST_UPSTREAM_KEY", "k")
    config = tmp_path / "gateway.toml"
    config.write_text(routing_toml(upstream.base_url))
    async with in_process(store, gateway_config=str(config)) as client:
        yield client


async def _ingest(c: httpx.AsyncClient, items: list[dict[str, Any]]) -> list[str]:
    r = await c.post("/api/v1/interactions", json=items)
    assert r.status_code == 201, r.text
    return list(r.json()["completion_ids"])


async def _all_ids(c: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    """Every id the list shows for ``params``, page after page."""
    ids: list[str] = []
    after = None
    while True:
        q = {**params, "limit": 7, **({"after": after} if after else {})}
        r = await c.get("/api/v1/interactions", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [x["id"] for x in body["data"]]
        if not body["has_more"]:
            return ids
        after = body["next_cursor"]


async def test_patch_merges_and_removes_labels(c: httpx.AsyncClient) -> None:
    (iid,) = await _ingest(c, [interaction(1)])
    r = await c.patch(f"/api/v1/interactions/{iid}",
                      json={"labels": {"dataset": "sft-v2", "topic": None}})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == {"project": "RAG Bot", "dataset": "sft-v2"}
    got = (await c.get(f"/api/v1/interactions/{iid}")).json()
    assert got["labels"] == {"project": "RAG Bot", "dataset": "sft-v2"}
    # Every read path sees the new labels: the list filter, stats, SQL.
    assert await _all_ids(c, {"label": "dataset:sft-v2"}) == [iid]
    assert await _all_ids(c, {"has_label": "topic"}) == []
    r = await c.post("/api/v1/sql", json={"sql": "SELECT labels['dataset'] AS d FROM interactions"})
    assert r.json()["data"] == [{"d": "sft-v2"}]


async def test_patch_errors(c: httpx.AsyncClient) -> None:
    (iid,) = await _ingest(c, [interaction(1)])
    assert_error(await c.patch("/api/v1/interactions/nope", json={"labels": {"a": "b"}}), 404)
    assert_error(await c.patch(f"/api/v1/interactions/{iid}", json={"labels": {"a": 1}}), 422,
                 "body.labels.a")  # fmt: skip
    assert_error(await c.patch(f"/api/v1/interactions/{iid}", json={"tags": {}}), 422)
    assert_error(await c.patch(f"/api/v1/interactions/{iid}", json={"labels": {"": "x"}}), 422,
                 "body.labels")  # fmt: skip
    too_many = {f"k{i}": "v" for i in range(70)}
    assert_error(await c.patch(f"/api/v1/interactions/{iid}", json={"labels": too_many}), 422,
                 "body.labels")  # fmt: skip
    assert (await c.get(f"/api/v1/interactions/{iid}")).json()["labels"]["topic"]  # unchanged


async def test_bulk_label_changes_exactly_the_rows_the_list_shows(c: httpx.AsyncClient) -> None:
    items = [
        interaction(i, labels={"topic": "billing" if i % 3 else "other", "n": str(i)},
                    use_case="support" if i % 2 else "sales",
                    created_at=f"2026-11-{1 + i % 20:02d}T10:00:00Z")
        for i in range(40)
    ]  # fmt: skip
    await _ingest(c, items)
    # Feedback on some, so the filter exercises the feedback view too.
    listed = await _all_ids(c, {"use_case": "support", "label": "topic:billing"})
    for iid in listed[:3]:
        fb = {"completion_id": iid, "metric": "good", "value": 1}
        assert (await c.post("/api/v1/feedback", json=fb)).status_code == 201
    flt = {"use_case": ["support"], "label": ["topic:billing"], "search": ["question"],
           "from": "2026-11-03T00:00:00Z"}  # fmt: skip
    expected = await _all_ids(c, flt)
    assert 5 < len(expected) < 40
    body = {"filter": flt, "set": {"dataset": "sft-v2"}, "unset": ["n"]}
    r = await c.post("/api/v1/interactions/labels", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"updated": len(expected), "matched": len(expected)}
    assert sorted(await _all_ids(c, {"label": "dataset:sft-v2"})) == sorted(expected)
    assert sorted(await _all_ids(c, {"no_label": "n"})) == sorted(expected)
    # Again: nothing changes. With a feedback filter: only those rows.
    r = await c.post("/api/v1/interactions/labels",
                     json={"filter": flt, "set": {"dataset": "sft-v2"}})  # fmt: skip
    assert r.json() == {"updated": 0, "matched": len(expected)}
    fb_flt = {"feedback": "good>=1"}
    expected_fb = await _all_ids(c, fb_flt)
    assert len(expected_fb) == 3
    r = await c.post("/api/v1/interactions/labels", json={"filter": fb_flt, "set": {"gold": "y"}})
    assert r.json()["updated"] == 3
    assert sorted(await _all_ids(c, {"label": "gold:y"})) == sorted(expected_fb)
    # A filter expression works as in /interactions/query.
    r = await c.post(
        "/api/v1/interactions/labels",
        json={"filter": {"or": [{"label": "gold:y"}, {"use_case": "sales"}]}, "unset": ["topic"]},
    )
    assert r.json()["matched"] == 3 + 20


async def test_bulk_label_errors(c: httpx.AsyncClient) -> None:
    await _ingest(c, [interaction(1)])
    url = "/api/v1/interactions/labels"
    assert_error(await c.post(url, json={"filter": {"use_case": "support"}}), 422, "body.set")
    assert_error(await c.post(url, json={"filter": {"user": None}, "set": {"a": "b"}}), 422,
                 "body.filter.user")  # fmt: skip
    assert_error(await c.post(url, json={"filter": {"colour": "x"}, "set": {"a": "b"}}), 422,
                 "body.filter.colour")  # fmt: skip
    assert_error(await c.post(url, json={"filter": {}, "set": {"a": "b"}, "unset": ["a"]}), 422,
                 "body.unset[0]")  # fmt: skip
    r = await c.post(url, json={"filter": {}, "set": {"a": "x" * 2000}})
    assert_error(r, 422, "body.set.a")
    assert_error(await c.post(url, json={"set": {"a": "b"}}), 422, "body.filter")
    r = await c.post(url, json={"filter": {}, "set": {f"k{i}": "v" for i in range(63)}})
    assert_error(r, 422, "body.set")  # 63 + the 2 it has > 64: nothing written
    assert (await c.get("/api/v1/interactions", params={"has_label": "k0"})).json()["data"] == []


async def test_limited_key_labels_only_its_use_cases(store: Store, data_dir: Path) -> None:
    ring = KeyRing(data_dir)
    admin = {"Authorization": f"Bearer {ring.create(['admin'])[1]}"}
    alpha = {"Authorization": f"Bearer {ring.create(['ingest', 'read'], ['alpha'])[1]}"}
    read = {"Authorization": f"Bearer {ring.create(['read'])[1]}"}
    async with in_process(store) as c:
        ids = {}
        for uc in ("alpha", "beta"):
            r = await c.post("/api/v1/interactions", json=interaction(use_case=uc), headers=admin)
            ids[uc] = r.json()["completion_id"]
        r = await c.post("/api/v1/interactions/labels", headers=alpha,
                         json={"filter": {}, "set": {"seen": "1"}})  # fmt: skip
        assert r.json() == {"updated": 1, "matched": 1}
        r = await c.get("/api/v1/interactions", params={"label": "seen:1"}, headers=admin)
        assert [x["id"] for x in r.json()["data"]] == [ids["alpha"]]
        r = await c.post("/api/v1/interactions/labels", headers=alpha,
                         json={"filter": {"use_case": "beta"}, "set": {"x": "1"}})  # fmt: skip
        assert_error(r, 403, "use_case")  # as the list answers use_case=beta
        r = await c.post("/api/v1/interactions/labels", headers=alpha,
                         json={"filter": {"or": [{"use_case": "beta"}, {"user": "nobody"}]},
                               "set": {"x": "1"}})  # fmt: skip
        assert r.json()["matched"] == 0  # beta is not visible: nothing matches
        r = await c.patch(f"/api/v1/interactions/{ids['beta']}", headers=alpha,
                          json={"labels": {"x": "1"}})  # fmt: skip
        assert_error(r, 404)
        r = await c.post(f"/api/v1/interactions/{ids['beta']}/replay", headers=alpha,
                         json={"model": "small"})  # fmt: skip
        assert_error(r, 404)
        for method, path, body in [
            ("PATCH", f"/api/v1/interactions/{ids['alpha']}", {"labels": {"x": "1"}}),
            ("POST", "/api/v1/interactions/labels", {"filter": {}, "set": {"x": "1"}}),
            ("POST", f"/api/v1/interactions/{ids['alpha']}/replay", {"model": "small"}),
        ]:
            assert_error(await c.request(method, path, json=body, headers=read), 403)
            assert_error(await c.request(method, path, json=body), 401)


async def test_replay_logs_a_new_interaction_on_the_other_model(
    c: httpx.AsyncClient, upstream: Upstream
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    r = await c.post("/api/v1/interactions", json=interaction(
        7, model="small", user="u-1", session_id="s-1",
        params={"temperature": 0.3, "tools": tools, "stream": True}))  # fmt: skip
    iid = r.json()["completion_id"]
    upstream.requests.clear()
    r = await c.post(f"/api/v1/interactions/{iid}/replay", json={"model": "large"})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["id"] != iid
    assert new["labels"] == {"replay_of": iid, "upstream_model": "plain", "finish_reason": "stop"}
    assert (new["model"], new["use_case"], new["source"], new["status"]) == (
        "large",
        "support",
        "gateway",
        "ok",
    )
    assert new["messages"] == interaction(7)["messages"]
    assert new["completion"] == "echo: question 7"  # the stand-in echoes the user
    assert new["user"] == "u-1"
    (sent,) = upstream.requests
    assert sent["body"]["temperature"] == 0.3 and sent["body"]["tools"] == tools
    assert "stream" not in sent["body"]
    # It is stored: the list finds it by its label; a comparison can name both.
    r = await c.get("/api/v1/interactions", params={"label": f"replay_of:{iid}"})
    assert [x["id"] for x in r.json()["data"]] == [new["id"]]
    r = await c.post(
        "/api/v1/comparison",
        json={"metric": "better", "preferred_completion": new["id"], "other_completion": iid},
    )
    assert r.status_code == 201, r.text


async def test_replay_errors(c: httpx.AsyncClient) -> None:
    (iid,) = await _ingest(c, [interaction(1)])
    url = f"/api/v1/interactions/{iid}/replay"
    assert_error(await c.post(url, json={"model": "nope"}), 404, "body.model")
    assert_error(await c.post(url, json={"model": "support/large"}), 422, "body.model")
    assert_error(await c.post(url, json={}), 422, "body.model")
    assert_error(await c.post("/api/v1/interactions/zzz/replay", json={"model": "large"}), 404)
    r = await c.post(url, json={"model": "fail500"})
    assert r.status_code == 502, r.text
    # The failed call is logged as such, labelled like any replay.
    r = await c.get("/api/v1/interactions", params={"label": f"replay_of:{iid}"})
    assert [x["status"] for x in r.json()["data"]] == ["error"]


async def test_replay_without_a_routing_file_is_503(store: Store) -> None:
    async with in_process(store) as c:
        (iid,) = await _ingest(c, [interaction(1)])
        r = await c.post(f"/api/v1/interactions/{iid}/replay", json={"model": "large"})
        assert_error(r, 503)
