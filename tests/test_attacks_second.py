"""What a second attacker found after the first round of fixes (issue 16, item 5), each
written as the attack: a tiny OTLP request that wrote its resource once per record, a
deep tool call that broke the console's conversation page, hundreds of filter
conditions (minutes of planning, or a 500 from the index), a console SQL result turned
into text on the event loop, and the gateway naming use cases to a key that may not
know them."""

from __future__ import annotations

import os

import httpx
import orjson
import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from gateway.config import parse
from store.engine import Store
from store.errors import NotFound
from testkit.otlp_payloads import T0, any_value, kvs, logs
from tests.conftest import assert_error, in_process, interaction

PROTOBUF = {"content-type": "application/x-protobuf"}
ORIGIN = {"Origin": "http://127.0.0.1:8080"}


def _wal_bytes(store: Store) -> int:
    return sum(p.stat().st_size for p in store.wal_dir.rglob("*") if p.is_file())


async def test_a_large_otlp_resource_is_not_copied_into_every_record(store: Store) -> None:
    """200 GenAI log records under one 200 KB resource: the receiver keeps what the
    mapping reads of the resource, not 200 copies of it (40 MB before the fix)."""
    records = [
        LogRecord(trace_id=os.urandom(16), span_id=os.urandom(8), event_name="gen_ai.user.message",
                  body=any_value({"content": "hi"}), observed_time_unix_nano=T0 + i,
                  attributes=kvs({"gen_ai.system": "openai"}))
        for i in range(200)
    ]  # fmt: skip
    body = logs(*records, resource={"service.name": "svc", "padding": "x" * 200_000})
    before = _wal_bytes(store)
    async with in_process(store) as c:
        r = await c.post("/v1/logs", content=body, headers=PROTOBUF)
        assert r.status_code == 200, r.text
    assert _wal_bytes(store) - before < 2_000_000


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("&".join(f"feedback=m{i}%3E%3D1" for i in range(300)), "feedback"),
        ("&".join(f"label=k{i}:v" for i in range(990)), "label"),
        ("&".join(f"search=w{i}" for i in range(100)), "search"),
    ],
    ids=["300 feedback conditions", "990 label conditions", "100 search terms"],
)
async def test_hundreds_of_conditions_are_a_clear_422(
    client: httpx.AsyncClient, query: str, param: str
) -> None:
    r = await client.get(f"/api/v1/interactions?{query}")
    assert_error(r, 422, param=param)
    r = await client.get(f"/ui/interactions?{query}")
    assert r.status_code < 500, r.text


async def test_conditions_spread_over_or_branches_are_counted_together(
    client: httpx.AsyncClient,
) -> None:
    body = {"filter": {"or": [{"feedback": f"m{i}>=1"} for i in range(100)]}}
    r = await client.post("/api/v1/interactions/query", json=body)
    assert_error(r, 422, param="filter.feedback")
    body = {"filter": {"or": [{"feedback": f"m{i}>=1"} for i in range(16)]}}
    assert (await client.post("/api/v1/interactions/query", json=body)).status_code == 200


async def test_a_tool_call_too_deep_to_pretty_print_still_shows(client: httpx.AsyncClient) -> None:
    deep = "[" * 300 + "1" + "]" * 300
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    body = interaction(1, id="deep-300", session_id="sdeep", messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ])  # fmt: skip
    r = await client.post("/api/v1/interactions", json=body)
    assert r.status_code == 201, r.text
    for path in ("/ui/interactions/deep-300", "/ui/sessions/sdeep"):
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
    assert "[[[[" in (await client.get("/ui/interactions/deep-300")).text


async def test_the_console_sql_page_refuses_results_too_large_to_show(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/ui/sql")
    assert page.status_code == 200
    csrf = client.cookies.get("istore_csrf")
    sql = "SELECT repeat('x', 100000) AS x FROM range(200)"  # 20 MB of text
    r = await client.post("/ui/sql", data={"sql": sql, "csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 200, r.text[:500]
    assert "more than the page shows" in r.text
    r = await client.post("/ui/sql", data={"sql": "SELECT 41 + 1 AS n", "csrf": csrf},
                          headers=ORIGIN)  # fmt: skip
    assert r.status_code == 200 and ">42<" in r.text.replace(" ", "")


def test_the_gateway_names_only_use_cases_the_key_may_know() -> None:
    routing = parse(
        '[models.small]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[use_cases.beta_secret_uc]\ndefault_model = "small"\n'
        '[use_cases.alpha_other]\ndefault_model = "small"\n'
    )
    with pytest.raises(NotFound) as exc:
        routing.route("alpha", visible=frozenset({"alpha", "alpha_other"}))
    assert "beta_secret_uc" not in exc.value.message
    assert "alpha_other" in exc.value.message
    with pytest.raises(NotFound) as exc:
        routing.route("alpha")  # an unrestricted key: every use case, as a hint
    assert "beta_secret_uc" in exc.value.message
    assert orjson.dumps(exc.value.message)
