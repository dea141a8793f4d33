"""The OTLP/HTTP endpoints: auth, encodings, OTLP's responses, the join, and bad input
(clear 4xx or ``partial_success``, never a 500, never a partial interaction)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from service.keys import KeyRing
from store.engine import Store, StoreOptions
from testkit.otlp_payloads import (
    PROTOBUF,
    T0,
    any_value,
    kvs,
    legacy_events,
    legacy_span,
    llm_span,
    logs,
    new_ids,
    traces,
)
from tests.conftest import assert_error, in_process


def partial(resp: httpx.Response, kind: str = "traces") -> tuple[int, str]:
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"] == "application/json":
        ps = resp.json().get("partialSuccess", {})
        n = ps.get("rejectedSpans" if kind == "traces" else "rejectedLogRecords", 0)
        return int(n), ps.get("errorMessage", "")
    msg: Any = ExportTraceServiceResponse() if kind == "traces" else ExportLogsServiceResponse()
    msg.ParseFromString(resp.content)
    n = (msg.partial_success.rejected_spans if kind == "traces"
         else msg.partial_success.rejected_log_records)  # fmt: skip
    return n, msg.partial_success.error_message


async def rows(c: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[dict]:
    r = await c.get("/api/v1/interactions", params={"source": "otlp", "limit": 1000},
                    headers=headers or {})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def count(c: httpx.AsyncClient) -> int:
    r = await c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    return int(r.json()["data"][0]["n"])


# -- auth --------------------------------------------------------------------------------
async def test_bearer_or_basic_with_the_key_as_password(store: Store) -> None:
    _, key = KeyRing(store.root).create(["ingest", "read"], name="otel")
    _, reader = KeyRing(store.root).create(["read"], name="reader")
    async with in_process(store) as c:
        body = traces(llm_span(*new_ids()))
        assert_error(await c.post("/v1/traces", content=body, headers=PROTOBUF), 401)
        basic = base64.b64encode(f"pk-lf-public:{key}".encode()).decode()
        for auth in (f"Bearer {key}", f"Basic {basic}"):
            r = await c.post("/v1/traces", content=traces(llm_span(*new_ids())),
                             headers={**PROTOBUF, "authorization": auth})  # fmt: skip
            assert partial(r) == (0, "")
        wrong = base64.b64encode(b"pk-lf-public:isk_000000000000_nope").decode()
        for auth in (f"Basic {wrong}", "Basic %%%", f"Bearer {reader}"):
            r = await c.post("/api/public/otel/v1/traces", content=body,
                             headers={**PROTOBUF, "authorization": auth})  # fmt: skip
            assert_error(r, 403 if auth.endswith(reader) else 401)
        assert len(await rows(c, {"authorization": f"Bearer {key}"})) == 2


async def test_a_use_case_limited_key_writes_only_its_use_cases(store: Store) -> None:
    _, key = KeyRing(store.root).create(["ingest"], ["geo-qa"], name="limited")
    _, admin = KeyRing(store.root).create(["admin"], name="admin")
    h = {**PROTOBUF, "authorization": f"Bearer {key}"}
    mine, theirs = new_ids(), new_ids()
    async with in_process(store) as c:
        body = traces(llm_span(*mine, **{"istore.use_case": "geo-qa"}),
                      llm_span(*theirs, **{"istore.use_case": "billing"}))  # fmt: skip
        n, message = partial(await c.post("/v1/traces", content=body, headers=h))
        assert n == 1 and "'billing'" in message and theirs[1].hex() in message
        only_theirs = traces(llm_span(*new_ids(), **{"istore.use_case": "billing"}))
        err = assert_error(await c.post("/v1/traces", content=only_theirs, headers=h), 403)
        assert "billing" in err["message"]
        (row,) = await rows(c, {"authorization": f"Bearer {admin}"})
        assert row["use_case"] == "geo-qa" and row["labels"]["span_id"] == mine[1].hex()


# -- encodings and responses -------------------------------------------------------------
def otlp_json(body: bytes) -> bytes:
    """The OTLP/JSON form of a protobuf request: ids in hex, as the spec says."""
    req = ExportTraceServiceRequest.FromString(body)
    d = json_format.MessageToDict(req)
    for rs in d["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in sp:
                        sp[k] = base64.b64decode(sp[k]).hex()
    return orjson.dumps(d)


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "raw-deflate", "json"])
async def test_encodings(client: httpx.AsyncClient, encoding: str) -> None:
    trace, span = new_ids()
    body = traces(llm_span(trace, span))
    headers = dict(PROTOBUF)
    if encoding == "gzip":
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    elif encoding == "deflate":
        body, headers["content-encoding"] = zlib.compress(body), "deflate"
    elif encoding == "raw-deflate":
        d = zlib.compressobj(wbits=-15)
        body, headers["content-encoding"] = d.compress(body) + d.flush(), "deflate"
    elif encoding == "json":
        body, headers = otlp_json(body), {"content-type": "application/json"}
    r = await client.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == 200, r.text
    if encoding == "json":
        assert r.headers["content-type"] == "application/json" and r.json() == {}
    else:
        assert r.headers["content-type"] == "application/x-protobuf" and r.content == b""
    (row,) = await rows(client)
    assert row["id"] == f"otlp-{trace.hex()}-{span.hex()}"  # hex ids read as hex, not base64
    assert row["model"] == "gpt-4o-mini"  # the request model, from llm.invocation_parameters
    assert row["params"] == {"temperature": 0.2}


async def test_json_partial_success_names_the_rejected_span(client: httpx.AsyncClient) -> None:
    good = llm_span(*new_ids())
    bad = llm_span(new_ids()[0][:15], new_ids()[1])  # a 15-byte trace id
    r = await client.post("/v1/traces", content=otlp_json(traces(good, bad)),
                          headers={"content-type": "application/json"})  # fmt: skip
    assert r.headers["content-type"] == "application/json"
    n, message = partial(r)
    assert n == 1 and "traceId must be 16 bytes" in message
    assert len(await rows(client)) == 1


async def test_spans_that_are_not_llm_calls_are_accepted_and_not_kept(
    client: httpx.AsyncClient,
) -> None:
    trace, span = new_ids()
    http = Span(trace_id=trace, span_id=span, name="GET /", start_time_unix_nano=T0,
                end_time_unix_nano=T0 + 1, attributes=kvs({"http.method": "GET"}))  # fmt: skip
    r = await client.post("/v1/traces", content=traces(http), headers=PROTOBUF)
    assert partial(r) == (0, "")
    assert await rows(client) == []


async def test_back_pressure_is_a_503_with_retry_after(tmp_path: Path) -> None:
    s = Store(tmp_path / "d", options=StoreOptions(flush_interval_s=3600, max_pending_bytes=1))
    try:
        async with in_process(s) as c:
            r = await c.post("/v1/traces", content=traces(llm_span(*new_ids())), headers=PROTOBUF)
            assert r.status_code == 200
            r = await c.post("/v1/traces", content=traces(llm_span(*new_ids())), headers=PROTOBUF)
            assert_error(r, 503)
            assert int(r.headers["retry-after"]) >= 1
    finally:
        s.close()


# -- the join ----------------------------------------------------------------------------
async def test_log_records_without_their_span_are_written_when_the_wait_ends(
    store: Store,
) -> None:
    trace, span = new_ids()
    async with in_process(store, otlp_join_s=0.2) as c:
        r = await c.post("/v1/logs", content=logs(*legacy_events(trace, span)), headers=PROTOBUF)
        assert partial(r, "logs") == (0, "")
        deadline = time.monotonic() + 30
        while not (found := await rows(c)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        (row,) = found
        assert row["messages"][-1] == {"role": "user", "content": "Hi?"}
        assert row["completion"] == "Hello!" and row["model"] is None
        # the span, late: its call is written already; nothing twice
        r = await c.post("/v1/traces", content=traces(legacy_span(trace, span)), headers=PROTOBUF)
        assert partial(r) == (0, "")
        assert len(await rows(c)) == 1


async def test_a_legacy_stream_logs_span_logs_makes_one_interaction(store: Store) -> None:
    trace, span = new_ids()
    events = legacy_events(trace, span, "Q?", "A!")
    async with in_process(store, otlp_join_s=600) as c:
        for path, body in (("/v1/logs", logs(*events[:2])),
                           ("/v1/traces", traces(legacy_span(trace, span))),
                           ("/v1/logs", logs(events[2]))):  # fmt: skip
            assert (await c.post(path, content=body, headers=PROTOBUF)).status_code == 200
            if path == "/v1/traces":
                assert await rows(c) == [], "not complete yet: no choice"
        deadline = time.monotonic() + 30
        while not (found := await rows(c)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (row,) = found
        assert [m["content"] for m in row["messages"]] == ["Be brief.", "Q?"]
        assert row["completion"] == "A!" and row["model"] == "gpt-4o-mini"


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
async def test_the_log_records_of_a_refused_span_make_no_interaction(store: Store) -> None:
    trace, span = new_ids()
    async with in_process(store, otlp_join_s=0.2) as c:
        r = await c.post("/v1/logs", content=logs(*legacy_events(trace, span)), headers=PROTOBUF)
        assert r.status_code == 200
        bad = legacy_span(trace, span)  # its metadata label is over 1024 characters
        bad.attributes.extend(kvs({"langfuse.observation.type": "generation",
                                   "langfuse.trace.metadata.note": "v" * 2000}))  # fmt: skip
        n, message = partial(await c.post("/v1/traces", content=traces(bad), headers=PROTOBUF))
        assert n == 1 and "labels" in message and "1024" in message
        await asyncio.sleep(0.6)  # past the wait: the log records alone would have been written
        assert await rows(c) == []


# -- bad input ---------------------------------------------------------------------------
def nested(depth: int) -> Any:
    v = any_value("leaf")
    for _ in range(depth):
        v = any_value([v])
    return v


def _ld(tag: int, payload: bytes) -> bytes:
    n, size = len(payload), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        size += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([tag]) + size + payload


def too_deep(depth: int) -> bytes:
    """A request whose span has an attribute nested ``depth`` arrays deep, written
    byte by byte (protobuf's own library refuses to build it)."""
    v = any_value("leaf").SerializeToString()
    for _ in range(depth):
        v = _ld(0x2A, _ld(0x0A, v))  # AnyValue.array_value { ArrayValue.values }
    span = llm_span(*new_ids()).SerializeToString() + _ld(0x4A, _ld(0x0A, b"deep") + _ld(0x12, v))
    return _ld(0x0A, _ld(0x12, _ld(0x12, span)))  # request.resource_spans.scope_spans.spans


def non_utf8() -> bytes:
    body = traces(llm_span(*new_ids(), content="MARKER"))
    return body.replace(b"MARKER", b"\xff\xfe\xfd\xfc\xfb\xfa")


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(("name", "make", "status"), [
    ("not protobuf", lambda: (b"\x0a\xff\xff\xff", PROTOBUF), 400),
    ("not JSON", lambda: (b"{nope", {"content-type": "application/json"}), 400),
    ("JSON, not an object", lambda: (b"[1]", {"content-type": "application/json"}), 400),
    ("JSON, wrong field type",
     lambda: (b'{"resourceSpans": 5, "resourceLogs": 5}', {"content-type": "application/json"}),
     400),
    ("JSON id not hex", lambda: (orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "zz", "spanId": "00"}]}]}]}), {"content-type": "application/json"}), 400),
    ("JSON not UTF-8", lambda: (b'{"resourceSpans": "\xff"}',
                                {"content-type": "application/json"}), 400),
    ("protobuf string not UTF-8", lambda: (non_utf8(), PROTOBUF), 400),
    ("another content type", lambda: (b"x", {"content-type": "text/plain"}), 415),
    ("gzip that is not", lambda: (b"plain", {**PROTOBUF, "content-encoding": "gzip"}), 400),
    ("deflate that is not", lambda: (b"plain", {**PROTOBUF, "content-encoding": "deflate"}), 400),
    ("br", lambda: (b"x", {**PROTOBUF, "content-encoding": "br"}), 400),
    ("gzip bomb", lambda: (gzip.compress(b"\0" * (9 << 20)),
                           {**PROTOBUF, "content-encoding": "gzip"}), 413),
    ("deflate bomb", lambda: (zlib.compress(b"\0" * (9 << 20)),
                              {**PROTOBUF, "content-encoding": "deflate"}), 413),
    ("oversized", lambda: (b"\0" * (8 << 20 | 1), PROTOBUF), 413),
    ("nesting past protobuf's limit", lambda: (too_deep(200), PROTOBUF), 400),
])  # fmt: skip
async def test_bad_bodies_get_a_clear_4xx(
    client: httpx.AsyncClient, name: str, make: Any, status: int
) -> None:
    body, headers = make()
    for path in ("/v1/traces", "/v1/logs", "/api/public/otel/v1/traces"):
        err = assert_error(await client.post(path, content=body, headers=headers), status)
        assert err["message"], name
    assert await count(client) == 0


async def test_bad_records_are_rejected_one_by_one(client: httpx.AsyncClient) -> None:
    t, s = new_ids()
    spans = [
        llm_span(t, s, 0),  # fine
        llm_span(t[:15], new_ids()[1], 1),  # wrong-length trace id
        llm_span(new_ids()[0], b"\0" * 8, 2),  # all-zero span id
        llm_span(*new_ids(), 3, deep=nested(40)),  # deeper than 32 levels
        llm_span(*new_ids(), 4, content="x" * ((1 << 20) + 1)),  # over max_content_chars
    ]
    big = "y" * (1 << 20)  # a megabyte: at the limit, kept whole
    spans.append(llm_span(*new_ids(), 5, content=big))
    n, message = partial(await client.post("/v1/traces", content=traces(*spans),
                                           headers=PROTOBUF))  # fmt: skip
    assert n == 4 and "traceId must be 16 bytes" in message and "(and 3 more)" in message
    found = {r["messages"][1]["content"][:20]: r for r in await rows(client)}
    assert set(found) == {"What is 2+2?", "y" * 20}
    assert found["y" * 20]["messages"][1]["content"] == big
    events = legacy_events(*new_ids())
    events[0].span_id = b"\1\2\3\4"
    r = await client.post("/v1/logs", content=logs(*events), headers=PROTOBUF)
    n, message = partial(r, "logs")
    assert n == 1 and "spanId must be 8 bytes" in message


@pytest.mark.slow  # a live server or a long property run: `make test` only
async def test_ten_thousand_spans_in_one_request(client: httpx.AsyncClient) -> None:
    spans = [llm_span(*new_ids(), i) for i in range(10_000)]
    r = await client.post("/v1/traces", content=traces(*spans), headers=PROTOBUF)
    assert partial(r) == (0, "")
    assert await count(client) == 10_000
    spans.append(llm_span(*new_ids(), 10_000))
    r = await client.post("/v1/traces", content=traces(*spans), headers=PROTOBUF)
    assert "ISTORE_MAX_BATCH_ITEMS" in assert_error(r, 413)["message"]
    assert await count(client) == 10_000


def unreleased(folder: Path) -> int:
    """Pieces in the receiver's log with no release record."""
    from ingest.otlp.join import PIECES, RELEASED
    from store.wal import scan

    records, _ = scan(folder, repair=False)
    released = {tuple(x) for r in records if r.code == RELEASED for x in orjson.loads(r.payload)}
    pieces = [(r.lsn, i) for r in records if r.code == PIECES
              for i in range(len(orjson.loads(r.payload)))]  # fmt: skip
    return sum(1 for p in pieces if p not in released)


async def test_joined_pieces_are_released_from_the_receivers_log(store: Store) -> None:
    folder = store.wal_dir / "otlp"
    async with in_process(store, otlp_join_s=600) as c:
        calls = [new_ids() for _ in range(20)]
        for trace, span in calls:
            await c.post("/v1/traces", content=traces(legacy_span(trace, span)), headers=PROTOBUF)
        assert unreleased(folder) == 20, "waiting spans are in the log before their 200"
        for trace, span in calls:
            await c.post("/v1/logs", content=logs(*legacy_events(trace, span)), headers=PROTOBUF)
        deadline = time.monotonic() + 30
        while (unreleased(folder) or len(await rows(c)) < 20) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(await rows(c)) == 20 and unreleased(folder) == 0
    assert sum(p.stat().st_size for p in folder.glob("wal-*.log")) < 4096, "segments deleted"


async def test_an_id_another_use_case_holds_rejects_only_that_call(
    client: httpx.AsyncClient,
) -> None:
    trace, span = new_ids()
    first = traces(llm_span(trace, span, **{"istore.use_case": "a"}))
    assert partial(await client.post("/v1/traces", content=first, headers=PROTOBUF)) == (0, "")
    again = traces(llm_span(trace, span, **{"istore.use_case": "b"}), llm_span(*new_ids()))
    n, message = partial(await client.post("/v1/traces", content=again, headers=PROTOBUF))
    assert n == 1 and "another use case" in message and trace.hex() in message
    assert sorted(r["use_case"] for r in await rows(client)) == ["a", "geo-assistant"]
