"""The outside attacker's findings (issue 16), each replayed as an attack on a live
server: they all worked on the main branch before the fixes; each must fail now.

Keys: ADMIN; READ; READ_A (read, use case alpha only); INGEST; INGEST_A (ingest, alpha
only). Data: ``a-1`` in alpha, ``b-1`` in beta."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.keys import KeyRing
from tests.conftest import Server, interaction

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

KEYS = {
    "ADMIN": (["admin"], None),
    "READ": (["read"], None),
    "READ_A": (["read"], ["alpha"]),
    "INGEST": (["ingest"], None),
    "INGEST_A": (["ingest"], ["alpha"]),
}


class Live:
    def __init__(self, server: Server, keys: dict[str, str]) -> None:
        self.server = server
        self.keys = keys
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def h(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}

    def post(self, path: str, key: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.h(key))

    def get(self, path: str, key: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.h(key))

    def export_ids(self, key: str, **params: Any) -> tuple[set[str], dict[str, int]]:
        r = self.get("/api/v1/export", key, format="adaptive", include_errors="true", **params)
        assert r.status_code == 200, r.text
        ids = {orjson.loads(line)["messages"][-1]["content"] for line in r.text.splitlines()}
        return ids, orjson.loads(r.headers["x-istore-versions"])

    def rss_kb(self) -> int:
        assert self.server.proc is not None
        status = Path(f"/proc/{self.server.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


def _ask(i: str, uc: str, **over: Any) -> dict[str, Any]:
    """An interaction whose last message names it (exports show messages, not ids)."""
    body = interaction(0, id=i, use_case=uc, **over)
    body["messages"] = [{"role": "user", "content": i}]
    return body


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("attacks") / "data"
    data.mkdir()
    ring = KeyRing(data)
    keys = {name: ring.create(scopes, ucs, name=name)[1] for name, (scopes, ucs) in KEYS.items()}
    server = Server(data, ISTORE_MAINTENANCE_INTERVAL_S="0").start()
    try:
        lv = Live(server, keys)
        for i, uc in (("a-1", "alpha"), ("b-1", "beta")):
            r = lv.post("/api/v1/interactions", "ADMIN", _ask(i, uc, session_id=f"s-{i}"))
            assert r.status_code == 201, r.text
        yield lv
        lv.http.close()
    finally:
        server.stop()


# 1. Erased data comes back through as_of ------------------------------------------------
def test_as_of_never_shows_deleted_interactions(live: Live) -> None:
    assert live.post("/api/v1/interactions", "ADMIN", _ask("gone-1", "alpha")).status_code == 201
    ids, before = live.export_ids("ADMIN")
    assert "gone-1" in ids
    assert live.http.delete("/api/v1/interactions/gone-1", headers=live.h("ADMIN")).json() == {
        "deleted": 1
    }
    for as_of in (before, {"amendments": 0}, {"interactions": before["interactions"]}):
        ids, _ = live.export_ids("ADMIN", as_of=orjson.dumps(as_of).decode())
        assert "gone-1" not in ids, as_of
        assert "a-1" in ids


def test_as_of_never_shows_rows_that_retention_or_the_purge_removed(tmp_path: Path) -> None:
    """The old version's files outlive the rewrite until vacuum: still nothing shows."""
    data = tmp_path / "data"
    server = Server(data, ISTORE_MAINTENANCE_INTERVAL_S="0.5").start()
    try:
        lv = Live(server, {})
        old = _ask("old-1", "alpha", created_at="2020-01-01T00:00:00Z")
        for body in (old, _ask("del-1", "alpha"), _ask("keep-1", "alpha")):
            assert lv.http.post("/api/v1/interactions", json=body).status_code == 201
        ids, before = _export(lv)
        assert {"old-1", "del-1", "keep-1"} <= ids
        assert lv.http.delete("/api/v1/interactions/del-1").status_code == 200
        (data / "retention.json").write_text('{"default_days": 30}')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the purge and retention have run
            r = lv.http.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
            m = lv.http.get("/metrics").text
            if (
                r.json()["data"][0]["n"] == 1
                and 'reason="retention"' in m
                and ('istore_deleted_rows_total{reason="deleted",table="interactions"} 1.0' in m)
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(m)
        for as_of in (before, {"amendments": 0}):
            ids, _ = _export(lv, as_of=orjson.dumps(as_of).decode())
            assert ids == {"keep-1"}, (as_of, ids)
        lv.http.close()
    finally:
        server.stop()


def _export(lv: Live, **params: Any) -> tuple[set[str], dict[str, int]]:
    r = lv.http.get("/api/v1/export", params={"format": "adaptive", **params})
    assert r.status_code == 200, r.text
    ids = {orjson.loads(line)["messages"][-1]["content"] for line in r.text.splitlines()}
    return ids, orjson.loads(r.headers["x-istore-versions"])


# 2. Ids collide across use cases ----------------------------------------------------------
def test_an_id_of_another_use_case_is_a_conflict_not_a_silent_ack(live: Live) -> None:
    r = live.post("/api/v1/interactions", "INGEST_A", _ask("order-43", "alpha", session_id="s-a"))
    assert r.status_code == 201, r.text
    r = live.post("/api/v1/interactions", "INGEST", _ask("order-43", "beta", session_id="s-b"))
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "id_conflict" and err["param"] == "id"
    assert "s-a" not in r.text and "alpha" not in r.text  # nothing of the other use case
    batch = [_ask("fresh-9", "beta"), _ask("order-43", "beta")]
    r = live.post("/api/v1/interactions", "INGEST", batch)
    assert r.status_code == 409 and r.json()["error"]["param"] == "body[1].id", r.text
    # nothing of that batch was stored, and beta still has no order-43
    ids, _ = live.export_ids("ADMIN", use_case="beta")
    assert "fresh-9" not in ids and "order-43" not in ids
    # a repeat in its own use case is still the first ack
    r = live.post("/api/v1/interactions", "INGEST_A", _ask("order-43", "alpha"))
    assert r.status_code == 201 and r.json()["session_id"] == "s-a"


# 3. A read key evicts the current views ---------------------------------------------------
def test_as_of_exports_cannot_break_other_reads(live: Live) -> None:
    versions = []
    for i in range(12):  # twelve interactions versions (a plain export flushes first)
        live.post("/api/v1/interactions", "ADMIN", _ask(f"v-{i}", "alpha"))
        versions.append(live.export_ids("ADMIN")[1]["interactions"])
    for v in sorted(set(versions))[:-1]:  # every old one (not the current)
        as_of = orjson.dumps({"interactions": v}).decode()
        r = live.get("/api/v1/export", "READ_A", as_of=as_of)
        assert r.status_code == 200, r.text
    assert live.get("/api/v1/interactions", "READ").status_code == 200
    assert live.get("/api/v1/interactions/stats", "READ", group_by="model").status_code == 200
    assert live.get("/api/v1/interactions/a-1", "READ").status_code == 200
    r = live.post("/api/v1/sql", "READ", {"sql": "SELECT count(*) AS n FROM interactions"})
    assert r.status_code == 200, r.text
    fb = {"completion_id": "a-1", "metric": "m", "value": 1}
    assert live.post("/api/v1/feedback", "ADMIN", fb).status_code == 201


# 4. Unauthenticated memory exhaustion ------------------------------------------------------
def _raw(live: Live, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Send a request whose body is announced but (mostly) never sent: a server that
    reads before it authenticates would wait for it; ours must answer at once."""
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.server.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode() + body)
        return s.recv(65536)


@pytest.mark.parametrize("path", ["/api/v1/sql", "/api/v1/interactions/query",
                                  "/v1/chat/completions/a-1", "/api/v1/interactions",
                                  "/api/v1/feedback", "/api/v1/interactions/delete"])  # fmt: skip
def test_no_body_is_read_before_the_key_nor_past_the_limit(live: Live, path: str) -> None:
    announced = {"Content-Type": "application/json", "Content-Length": str(200 << 20)}
    before = live.rss_kb()
    answer = _raw(live, path, announced, b'{"sql": "')
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer = _raw(live, path, {**announced, "Authorization": f"Bearer {live.keys['ADMIN']}"})
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # chunked, no length announced: cut off at the limit (32 MiB) without holding more
    chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
               "Authorization": f"Bearer {live.keys['ADMIN']}"}  # fmt: skip
    piece = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=30) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.server.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in chunked.items()) + "\r\n"
        s.sendall(head.encode())
        answer = b""
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except OSError:
            pass
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert live.rss_kb() - before < 150 << 10  # not the 200 MB announced


# 7. An ingest-only key reads back ------------------------------------------------------------
def test_an_ingest_key_does_not_read_back_through_a_metadata_update(live: Live) -> None:
    r = live.post("/v1/chat/completions/a-1", "INGEST_A", {"metadata": {"k": "v"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "object", "metadata"} and body["metadata"] == {"k": "v"}
    assert "a-1" == body["id"] and "choices" not in body
    # a read key still gets the completion
    r = live.post("/v1/chat/completions/a-1", "ADMIN", {"metadata": {"k": "w"}})
    assert r.json()["choices"][0]["message"]["content"] == "answer 0"


# 8. Wrong secrets stall the event loop ----------------------------------------------------------
def test_wrong_secrets_cost_one_hash_per_key_id_and_never_stall(live: Live) -> None:
    key_id = live.keys["INGEST"].split("_")[1]

    def metric() -> dict[str, float]:
        text = live.http.get("/metrics").text
        out = {}
        for line in text.splitlines():
            if line.startswith("istore_key_checks_total{"):
                out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        return out

    before = metric()

    def wrong(i: int) -> int:
        h = {"Authorization": f"Bearer isk_{key_id}_wrong{i:04d}" + "x" * 30}
        return httpx.post(live.server.url + "/api/v1/interactions", json=_ask("w", "alpha"),
                          headers=h, timeout=30).status_code  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        futures = [pool.submit(wrong, i) for i in range(60)]
        health = [live.http.get("/healthz").status_code for _ in range(20)]
        codes = [f.result() for f in futures]
    assert set(codes) <= {401, 429} and codes.count(429) > 0, codes
    assert health == [200] * 20
    after = metric()
    hashed = after.get("hashed", 0) - before.get("hashed", 0)
    assert hashed <= 10, after  # 60 wrong secrets, a handful of hashes
    # the right key still works at once (it is remembered)
    assert live.post("/api/v1/interactions", "INGEST", _ask("ok-8", "alpha")).status_code == 201


# weaknesses -------------------------------------------------------------------------------------
def test_weaknesses(live: Live) -> None:
    # a trailing newline is not part of a valid use case or id
    r = live.post("/api/v1/interactions", "ADMIN", _ask("nl-1", "alpha\n"))
    assert r.status_code == 422 and r.json()["error"]["param"] == "use_case", r.text
    r = live.post("/api/v1/interactions", "ADMIN", _ask("nl-2\n", "alpha"))
    assert r.status_code == 422 and r.json()["error"]["param"] == "id", r.text
    # two Authorization headers: refused, not read differently by different layers
    two = [("Authorization", f"Bearer {live.keys['READ']}"),
           ("Authorization", f"Bearer {live.keys['ADMIN']}")]  # fmt: skip
    r = live.http.get("/api/v1/interactions", headers=two)
    assert r.status_code == 400 and r.json()["error"]["param"] == "authorization"
    # the gateway tells a limited key 403 before it tells it whether a route exists
    for model in ("beta/nosuch", "nosuch-use-case"):
        body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
        r = live.post("/v1/chat/completions", "INGEST_A", body)
        assert r.status_code == 403, r.text
    # what the store writes is readable by its own user only
    data = live.server.data
    parquet = next(data.glob("interactions/**/*.parquet"))
    for path in (parquet, data / "keys.json"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    # a Parquet export streams and reads back
    r = live.get("/api/v1/export", "ADMIN", format="parquet", use_case="alpha")
    assert r.status_code == 200 and r.content[:4] == b"PAR1"


# 9. Open mode is open to any web page -----------------------------------------------------------
@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("open") / "data").start()
    try:
        r = httpx.post(server.url + "/api/v1/interactions", json=_ask("o-1", "alpha"))
        assert r.status_code == 201, r.text
        yield server
    finally:
        server.stop()


def _count(server: Server) -> int:
    r = httpx.post(
        server.url + "/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"}
    )
    return int(r.json()["data"][0]["n"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({}, 415),  # a Blob without a type: no Content-Type at all
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/json", "Origin": "null"}, 403),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Content-Type": "application/json", "Host": "evil.example:8080"}, 403),
    ],
)
def test_open_mode_refuses_what_a_web_page_can_send(
    open_server: Server, headers: dict[str, str], status: int
) -> None:
    before = _count(open_server)
    for path, body in (("/api/v1/interactions", orjson.dumps(_ask("o-2", "alpha"))),
                       ("/api/v1/interactions/delete", b'{"all": true}')):  # fmt: skip
        r = httpx.post(open_server.url + path, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"}
    assert _count(open_server) == before


def test_open_mode_reads_only_under_its_own_name(open_server: Server) -> None:
    # DNS rebinding: a page at evil.example resolving to 127.0.0.1 reads nothing
    for path in ("/api/v1/interactions", "/api/v1/export", "/docs", "/metrics"):
        r = httpx.get(open_server.url + path, headers={"Host": "evil.example:8080"})
        assert r.status_code == 403, (path, r.text)
    for host in ("127.0.0.1", "localhost", f"localhost:{open_server.port}"):
        r = httpx.get(open_server.url + "/api/v1/interactions", headers={"Host": host})
        assert r.status_code == 200, host
    # same-origin writes (the console's) and plain clients still work
    own = {"Origin": open_server.url, "Content-Type": "application/json"}
    r = httpx.post(open_server.url + "/api/v1/interactions", headers=own,
                   content=orjson.dumps(_ask("o-3", "alpha")))  # fmt: skip
    assert r.status_code == 201, r.text
