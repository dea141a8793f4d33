"""A call's pieces answered 200 survive ``kill -9`` while they wait for the rest of the
call: a real server takes the span (or the log records), is killed, restarts, takes
the rest, and the interaction is complete, exactly once, also after more kills."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import store
from tests.conftest import Server
from tests.otlp_payloads import PROTOBUF, legacy_events, legacy_span, logs, new_ids, traces

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

ENV = {"ISTORE_OTLP_JOIN_S": "120", "ISTORE_FLUSH_INTERVAL_S": "0.2"}


def post(server: Server, path: str, body: bytes) -> None:
    r = httpx.post(server.url + path, content=body, headers=PROTOBUF, timeout=30)
    assert r.status_code == 200, r.text


def otlp_rows(server: Server, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(server.url + "/api/v1/interactions", params={"source": "otlp"})
        data: list[dict[str, Any]] = r.json()["data"]
        if len(data) >= n or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


@pytest.mark.parametrize("first", ["span", "logs"])
def test_a_waiting_piece_survives_kill_9_and_joins_once(
    tmp_path: Path, server_factory: type[Server], first: str
) -> None:
    data = tmp_path / "data"
    trace, span = new_ids()
    pieces = {"span": ("/v1/traces", traces(legacy_span(trace, span, question="Q?"))),
              "logs": ("/v1/logs", logs(*legacy_events(trace, span, "Q?", "A!")))}  # fmt: skip
    second = "logs" if first == "span" else "span"

    server = server_factory(data, **ENV).start()
    post(server, *pieces[first])  # 200: durable, although its call is not complete
    assert otlp_rows(server, 0) == []
    server.kill()

    server = server_factory(data, **ENV).start()
    assert otlp_rows(server, 0) == [], "the piece waits for the rest of its call"
    post(server, *pieces[second])
    (row,) = otlp_rows(server)
    assert row["id"] == f"otlp-{trace.hex()}-{span.hex()}"
    assert row["messages"] == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Q?"}]  # fmt: skip
    assert row["completion"] == "A!"
    assert row["model"] == "gpt-4o-mini"
    assert row["usage"] == {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
    assert row["latency_ms"] == 55.0
    server.kill()  # the release record may or may not be in the log: both are fine

    # replays after more crashes and a retried export store nothing twice
    server = server_factory(data, **ENV).start()
    post(server, *pieces[first])
    post(server, *pieces[second])
    server.kill()
    server = server_factory(data, **ENV).start()
    server.stop()  # a clean stop waits for the writes its replay started
    assert stored_counts(data) == [1]


def stored_counts(data: Path) -> list[int]:
    with store.open(data) as s:
        df = s.sql("SELECT id, count(*) AS n FROM interactions GROUP BY id")
    return list(df["n"].to_list())


def test_a_call_missing_pieces_is_written_when_its_wait_ends_even_across_a_restart(
    tmp_path: Path, server_factory: type[Server]
) -> None:
    data = tmp_path / "data"
    trace, span = new_ids()
    env = {**ENV, "ISTORE_OTLP_JOIN_S": "1"}
    server = server_factory(data, **env).start()
    post(server, "/v1/traces", traces(legacy_span(trace, span)))
    server.kill()  # before its wait ends
    server = server_factory(data, **env).start()
    (row,) = otlp_rows(server)  # written by the restarted server, without its log records
    assert row["id"] == f"otlp-{trace.hex()}-{span.hex()}"
    assert row["messages"] == [] and row["completion"] is None
    assert row["model"] == "gpt-4o-mini" and row["status"] == "ok"
    server.kill()
    server = server_factory(data, **env).start()
    server.stop()
    assert stored_counts(data) == [1]
