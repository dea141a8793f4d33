"""Hostile input: each is rejected cleanly (4xx in the error shape) or stored safely,
never a 500, never a hang, never a write outside the data root."""

from __future__ import annotations

import gzip
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest

from store.engine import Store
from tests.conftest import Server, assert_error, in_process, interaction

URL = "/api/v1/interactions"


def _tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


async def _count(c: httpx.AsyncClient) -> int:
    r = await c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    return int(r.json()["data"][0]["n"])


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("name", "body", "headers", "status"),
    [
        ("over the body limit", b"[" + b"1," * (5 << 20) + b"1]", {}, 413),
        (
            "gzip bomb",
            gzip.compress(b"[" + b" " * (64 << 20) + b"]"),
            {"content-encoding": "gzip"},
            413,
        ),
        ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, {}, 400),
        (
            "deeply nested object in a message",
            orjson.dumps(
                interaction(0, messages=[{"role": "user", "content": "x", "extra": {}}])
            ).replace(
                b'{"role":"user","content":"x","extra":{}}',
                b'{"role":"user","content":"x","extra":'
                + b'{"a":' * 2000
                + b"1"
                + b"}" * 2000
                + b"}",
            ),
            {},
            400,
        ),
        (
            "invalid UTF-8",
            b'{"use_case": "a", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            {},
            400,
        ),
        (
            "a 10 MB message",
            orjson.dumps(interaction(0, messages=[{"role": "user", "content": "x" * (10 << 20)}])),
            {},
            422,
        ),
        (
            "65 labels",
            orjson.dumps(interaction(0, labels={f"k{i}": "v" for i in range(65)})),
            {},
            422,
        ),
        (
            "a label value over 1024 chars",
            orjson.dumps(interaction(0, labels={"k": "v" * 1025})),
            {},
            422,
        ),
        ("path-like use case", orjson.dumps(interaction(0, use_case="../../etc")), {}, 422),
        ("absolute path use case", orjson.dumps(interaction(0, use_case="/etc/passwd")), {}, 422),
        ("use case with a slash", orjson.dumps(interaction(0, use_case="a=b/c")), {}, 422),
        (
            "SQL in a use case",
            orjson.dumps(interaction(0, use_case="x'; DROP TABLE t;--")),
            {},
            422,
        ),
        ("NUL in a use case", orjson.dumps(interaction(0, use_case="a\x00b")), {}, 422),
        ("NUL in an id", orjson.dumps(interaction(0, id="a\x00b")), {}, 422),
        (
            "a number too big for any column",
            b'{"use_case": "a", "messages": [{"role": "user",'
            b' "content": "x"}], "latency_ms": 1e400}',
            {},
            422,
        ),
    ],  # fmt: skip
)
async def test_rejected_cleanly(store: Store, tmp_path: Path, name: str, body: bytes,
                                headers: dict[str, str], status: int) -> None:  # fmt: skip
    before = _tree(tmp_path)
    async with in_process(store, max_body_bytes=16 << 20) as c:
        h = {"content-type": "application/json", **headers}
        r = await c.post(URL, content=body, headers=h)
        assert_error(r, status)
        assert await _count(c) == 0, name
    created = _tree(tmp_path) - before
    assert all(p.startswith(str(store.root)) for p in created), created


async def test_stored_safely_and_read_back_exactly(store: Store, tmp_path: Path) -> None:
    """Hostile *values* (not names the store uses for paths) are data: kept verbatim."""
    hostile = {
        "../../etc/passwd": "x'; DROP TABLE interactions;--",
        "a=b/c": "\x00nul inside\x00",
        "'; DROP": "../../../../tmp/owned",
        "ключ 🔑": "\u202eright-to-left",
    }
    before = _tree(tmp_path.parent)
    body = interaction(
        0,
        id="hostile-1",
        labels=hostile,
        user="../../root",
        session_id="'; DELETE FROM interactions;--",
        messages=[{"role": "user", "content": "NUL \x00 and \\u0000 and ../../ and '; --"}],
        completion="\x00",
    )
    async with in_process(store) as c:
        assert (await c.post(URL, json=body)).status_code == 201
        got = (await c.get(f"{URL}/hostile-1")).json()
        assert got["labels"] == hostile
        assert got["messages"] == body["messages"] and got["completion"] == "\x00"
        for key, value in hostile.items():  # filters on them are parameters, not SQL
            r = await c.get(URL, params={"label": f"{key}:{value}"})
            assert [x["id"] for x in r.json()["data"]] == ["hostile-1"], key
        r = await c.get(URL, params={"session_id": body["session_id"], "user": "../../root"})
        assert len(r.json()["data"]) == 1
        r = await c.get("/api/v1/interactions/stats", params={"group_by": "label:'; DROP"})
        assert r.status_code == 200
        store.flush()
        assert await _count(c) == 1
    created = _tree(tmp_path.parent) - before
    assert all(p.startswith(str(store.root)) for p in created), sorted(created)[:5]


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_slow_clients_do_not_block_others(server_factory: type[Server], tmp_path: Path) -> None:
    """Slowloris: many connections that send a request a byte at a time, or never finish
    their body. The server keeps answering everyone else at once."""
    server = server_factory(tmp_path / "data").start()
    slow = []
    for i in range(64):
        s = socket.create_connection(("127.0.0.1", server.port))
        if i % 2:
            s.sendall(b"POST /api/v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        else:
            s.sendall(b"POST /api/v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: 100000\r\n\r\n{\"use")  # fmt: skip
        slow.append(s)
    try:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            for i in range(20):
                t = time.perf_counter()
                r = c.post(URL, json=interaction(i))
                assert r.status_code == 201 and time.perf_counter() - t < 2
            for s in slow:  # a byte more each: still nothing stuck
                s.sendall(b"a")
            assert c.get("/healthz").status_code == 200
            n = c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
            assert n.json()["data"][0]["n"] == 20  # no half-sent body became a record
    finally:
        for s in slow:
            s.close()
    time.sleep(0.2)
    assert httpx.get(server.url + "/healthz").status_code == 200


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_a_lying_content_length_is_not_a_record(
    server_factory: type[Server], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data").start()
    body = orjson.dumps(interaction(0))
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        head = b"POST /api/v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        head += b"application/json\r\nContent-Length: %d\r\n\r\n" % (len(body) + 50)
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)  # the body ends early: the client is gone
        s.settimeout(5)
        try:
            s.recv(100)
        except (TimeoutError, ConnectionError):
            pass
    time.sleep(0.3)
    n = httpx.post(
        server.url + "/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"}
    )
    assert n.json()["data"][0]["n"] == 0
