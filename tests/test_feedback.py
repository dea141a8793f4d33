"""Feedback, comparisons and outcomes: their own Delta tables, durable, visible in SQL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from deltalake import DeltaTable

from api.app import create_app
from service.settings import Settings
from store.engine import Store, StoreOptions
from tests.conftest import assert_error, interaction

pytestmark = pytest.mark.asyncio


async def _log(client: httpx.AsyncClient, **over: object) -> dict[str, object]:
    r = await client.post("/api/v1/interactions", json=interaction(**over))
    assert r.status_code == 201, r.text
    return r.json()


async def _sql(client: httpx.AsyncClient, sql: str) -> list[dict[str, object]]:
    r = await client.post("/api/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_feedback_on_an_interaction_is_stored_and_shown_with_it(
    client: httpx.AsyncClient, store: Store
) -> None:
    cid = (await _log(client))["completion_id"]
    r = await client.post(
        "/api/v1/feedback",
        json={"completion_id": cid, "metric": "thumbs_up", "value": True, "reason": "clear",
              "details": "nice", "user_id": "u1"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    fid = r.json()["feedback_id"]
    r = await client.post(
        "/api/v1/feedback", json={"completion_id": cid, "metric": "score", "value": 0.25}
    )
    assert r.status_code == 201
    got = (await client.get(f"/api/v1/interactions/{cid}")).json()["feedback"]
    assert [(f["metric"], f["value"]) for f in got] == [("thumbs_up", 1.0), ("score", 0.25)]
    assert got[0]["id"] == fid and got[0]["reason"] == "clear" and got[0]["user_id"] == "u1"
    rows = await _sql(client, "SELECT use_case, metric, value FROM feedback ORDER BY metric")
    assert rows == [
        {"use_case": "support", "metric": "score", "value": 0.25},
        {"use_case": "support", "metric": "thumbs_up", "value": 1.0},
    ]
    store.flush()
    table = DeltaTable(str(store.root / "feedback")).to_pyarrow_table()
    assert sorted(table.column("metric").to_pylist()) == ["score", "thumbs_up"]


async def test_feedback_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    cid = (await _log(client))["completion_id"]
    ok = {"completion_id": cid, "metric": "m", "value": 1}
    r = await client.post("/api/v1/feedback", json=[ok, ok])
    assert r.status_code == 201 and len(r.json()["feedback_ids"]) == 2
    r = await client.post("/api/v1/feedback", json=[ok, {**ok, "completion_id": "nope"}])
    assert_error(r, 404, "body[1].completion_id")
    r = await client.post("/api/v1/feedback", json=[ok, {**ok, "value": "high"}])
    assert_error(r, 422, "body[1].value")
    assert (await _sql(client, "SELECT count(*) AS n FROM feedback")) == [{"n": 2}]


async def test_feedback_on_unknown_completion_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/feedback", json={"completion_id": "does-not-exist", "metric": "m", "value": 1}
    )
    assert_error(r, 404, "completion_id")


async def test_feedback_on_an_unflushed_interaction_is_accepted(
    slow_client: httpx.AsyncClient, slow_store: Store
) -> None:
    r = await slow_client.post("/api/v1/interactions", json=interaction(id="fresh-1"))
    assert r.status_code == 201
    assert slow_store.status()["pending_rows"] >= 1  # only in the log and memory
    r = await slow_client.post(
        "/api/v1/feedback", json={"completion_id": "fresh-1", "metric": "m", "value": 2}
    )
    assert r.status_code == 201, r.text
    slow_store.flush()
    r = await slow_client.post(
        "/api/v1/feedback", json={"completion_id": "fresh-1", "metric": "m", "value": 3}
    )
    assert r.status_code == 201, r.text


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metric": "m", "value": 1}, "completion_id"),
        ({"completion_id": "x", "value": 1}, "metric"),
        ({"completion_id": "x", "metric": "m"}, "value"),
        ({"completion_id": "x", "metric": "m", "value": float("nan")}, None),
        ({"completion_id": "x", "metric": "", "value": 1}, "metric"),
        ({"completion_id": "x", "metric": "m", "value": 1, "colour": "red"}, "colour"),
        ({"completion_id": "../etc", "metric": "m", "value": 1}, "completion_id"),
    ],
)
async def test_bad_feedback_is_rejected_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str | None
) -> None:
    if param is None:  # NaN is not JSON: the body itself is invalid
        r = await client.post(
            "/api/v1/feedback",
            content=b'{"completion_id": "x", "metric": "m", "value": NaN}',
            headers={"content-type": "application/json"},
        )
        assert_error(r, 400, "body")
        return
    r = await client.post("/api/v1/feedback", json=body)
    assert_error(r, 422, param)


async def test_comparison_by_ids(client: httpx.AsyncClient) -> None:
    a = (await _log(client, completion="A", model="small"))["completion_id"]
    b = (await _log(client, completion="B", model="large"))["completion_id"]
    r = await client.post(
        "/api/v1/comparison",
        json={"metric": "helpful", "preferred_completion": a, "other_completion": b,
              "project": "support", "user_id": "rater-1"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    cid = r.json()["comparison_id"]
    rows = await _sql(
        client, "SELECT id, use_case, metric, preferred_id, other_id, tied FROM comparisons"
    )
    assert rows == [{"id": cid, "use_case": "support", "metric": "helpful",
                     "preferred_id": a, "other_id": b, "tied": None}]  # fmt: skip
    got = (await client.get(f"/api/v1/interactions/{b}")).json()["comparisons"]
    assert [(c["id"], c["preferred"]) for c in got] == [(cid, False)]


async def test_comparison_inline_texts(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/comparison",
        json={
            "metric": "helpful",
            "project": "support",
            "messages": [{"role": "user", "content": "hi"}],
            "preferred_completion": {"text": "Hello!", "model": "large"},
            "other_completion": {"text": "hi", "model": "small"},
            "tied": "good",
        },
    )
    assert r.status_code == 201, r.text
    rows = await _sql(
        client,
        "SELECT preferred_text, preferred_model, other_text, messages, tied FROM comparisons",
    )
    assert rows == [{"preferred_text": "Hello!", "preferred_model": "large", "other_text": "hi",
                     "messages": '[{"role":"user","content":"hi"}]', "tied": "good"}]  # fmt: skip


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"metric": "m", "preferred_completion": {"text": "a"}, "other_completion": {"text": "b"},
          "project": "support"}, 422, "messages"),
        ({"metric": "m", "preferred_completion": {"text": "a"}, "other_completion": {"text": "b"},
          "messages": [{"role": "user", "content": "q"}]}, 422, "project"),
        ({"metric": "m", "preferred_completion": "missing-1", "other_completion": "missing-2"},
         404, "preferred_completion"),
        ({"metric": "m", "preferred_completion": "same", "other_completion": "same"},
         422, "other_completion"),
        ({"metric": "m", "preferred_completion": {"text": "a", "bogus": 1},
          "other_completion": {"text": "b"}, "project": "s",
          "messages": [{"role": "user", "content": "q"}]}, 422, "preferred_completion.bogus"),
        ({"metric": "m", "preferred_completion": "x", "other_completion": "y", "tied": "meh"},
         422, "tied"),
    ],
)  # fmt: skip
async def test_bad_comparisons(
    client: httpx.AsyncClient, body: dict[str, object], status: int, param: str
) -> None:
    r = await client.post("/api/v1/comparison", json=body)
    assert_error(r, status, param)
    assert (await _sql(client, "SELECT count(*) AS n FROM comparisons")) == [{"n": 0}]


async def test_comparison_across_use_cases_is_refused(client: httpx.AsyncClient) -> None:
    a = (await _log(client, use_case="one"))["completion_id"]
    b = (await _log(client, use_case="two"))["completion_id"]
    r = await client.post(
        "/api/v1/comparison",
        json={"metric": "m", "preferred_completion": a, "other_completion": b},
    )
    assert_error(r, 422, "other_completion")
    r = await client.post(
        "/api/v1/comparison",
        json={"metric": "m", "preferred_completion": a, "other_completion": {"text": "x"},
              "project": "two", "messages": [{"role": "user", "content": "q"}]},
    )  # fmt: skip
    assert_error(r, 422, "preferred_completion")


async def test_outcome_on_a_session(client: httpx.AsyncClient) -> None:
    await _log(client, session_id="sess-1", use_case="support")
    r = await client.post(
        "/api/v1/outcome", json={"session_id": "sess-1", "metric": "resolved", "value": True}
    )
    assert r.status_code == 201, r.text
    rows = await _sql(client, "SELECT session_id, use_case, metric, value FROM outcomes")
    assert rows == [
        {"session_id": "sess-1", "use_case": "support", "metric": "resolved", "value": 1.0}
    ]
    r = await client.post(
        "/api/v1/outcome", json={"session_id": "nobody", "metric": "resolved", "value": 1}
    )
    assert_error(r, 404, "session_id")
    r = await client.post(
        "/api/v1/outcome",
        json={"session_id": "sess-1", "use_case": "other", "metric": "resolved", "value": 1},
    )
    assert_error(r, 404, "session_id")


@pytest.mark.slow  # a live server or a crash: `make test` only
async def test_feedback_tables_replay_from_the_log_after_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "crash"
    for round_ in range(2):
        st = Store(root, options=StoreOptions(flush_interval_s=3600))
        app = create_app(Settings(data=str(root)), store=st)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8080"
            ) as c:
                if round_ == 0:
                    cid = (await _log(c, id="keep-1", session_id="s"))["completion_id"]
                    for path, body in (
                        ("feedback", {"completion_id": cid, "metric": "m", "value": 1}),
                        ("comparison", {"metric": "m", "preferred_completion": cid,
                                        "other_completion": {"text": "t"},
                                        "messages": interaction()["messages"]}),
                        ("outcome", {"session_id": "s", "metric": "m", "value": 1}),
                    ):  # fmt: skip
                        assert (await c.post(f"/api/v1/{path}", json=body)).status_code == 201
                else:
                    counts = await _sql(
                        c,
                        "SELECT (SELECT count(*) FROM feedback) AS f, "
                        "(SELECT count(*) FROM comparisons) AS c, "
                        "(SELECT count(*) FROM outcomes) AS o",
                    )
                    assert counts == [{"f": 1, "c": 1, "o": 1}]
        if round_ == 0:  # a crash: nothing flushed, the log must replay every table
            assert DeltaTable(str(root / "comparisons")).version() == 0
            st._wal.close()  # type: ignore[union-attr]
            st._release_lock()
        else:
            st.close()
            for table in ("feedback", "comparisons", "outcomes"):
                assert DeltaTable(str(root / table)).to_pyarrow_table().num_rows == 1
