"""Every ingest limit: at the limit is accepted, one over gets the documented 4xx and
nothing is stored; a disk that fails or a full backlog gets 503 with Retry-After."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from store.engine import Store, StoreOptions
from tests.conftest import assert_error, in_process, interaction

URL = "/api/v1/interactions"
BODY_LIMIT = 4096
LIMITS = {"max_batch_items": 3, "max_messages": 4, "max_content_chars": 100}


@pytest_asyncio.fixture
async def tight(store: Store, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store, max_body_bytes=BODY_LIMIT, **LIMITS) as c:
        yield c


async def _count(c: httpx.AsyncClient) -> int:
    r = await c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
    return int(r.json()["data"][0]["n"])


def _messages(n: int, chars: int = 5) -> list[dict[str, str]]:
    return [{"role": "user", "content": "x" * chars} for _ in range(n)]


def _sized(size: int) -> bytes:
    """A valid single-interaction body of exactly ``size`` bytes (trailing spaces are JSON)."""
    base = json.dumps(interaction(0, messages=_messages(1))).encode()
    return base + b" " * (size - len(base))


# (name, body at the limit, body one over, status, param)
CASES: list[tuple[str, Callable[[], Any], Callable[[], Any], int, str | None]] = [
    ("records per request",
     lambda: [interaction(i) for i in range(3)], lambda: [interaction(i) for i in range(4)],
     413, "body"),
    ("messages per interaction",
     lambda: interaction(0, messages=_messages(4)), lambda: interaction(0, messages=_messages(5)),
     422, "messages"),
    ("characters in a message",
     lambda: interaction(0, messages=_messages(1, 100)),
     lambda: interaction(0, messages=_messages(1, 101)), 422, "messages[0].content"),
    ("characters in content parts",
     lambda: interaction(0, messages=[{"role": "user", "content": [
         {"type": "text", "text": "a" * 50}, {"type": "text", "text": "b" * 50}]}]),
     lambda: interaction(0, messages=[{"role": "user", "content": [
         {"type": "text", "text": "a" * 50}, {"type": "text", "text": "b" * 51}]}]),
     422, "messages[0].content"),
    ("characters in the completion",
     lambda: interaction(0, completion="c" * 100), lambda: interaction(0, completion="c" * 101),
     422, "completion"),
    ("characters in a completion message",
     lambda: interaction(0, completion={"role": "assistant", "content": "c" * 100}),
     lambda: interaction(0, completion={"role": "assistant", "content": "c" * 101}),
     422, "completion"),
    ("labels per interaction",
     lambda: interaction(0, labels={f"k{i}": "v" for i in range(64)}),
     lambda: interaction(0, labels={f"k{i}": "v" for i in range(65)}), 422, "labels"),
    ("label key length",
     lambda: interaction(0, labels={"k" * 64: "v"}),
     lambda: interaction(0, labels={"k" * 65: "v"}), 422, "labels"),
    ("label value length",
     lambda: interaction(0, labels={"k": "v" * 1024}),
     lambda: interaction(0, labels={"k": "v" * 1025}), 422, "labels"),
    ("body bytes", lambda: _sized(BODY_LIMIT), lambda: _sized(BODY_LIMIT + 1), 413, None),
]  # fmt: skip


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("at", "over", "status", "param"),
    [pytest.param(a, o, s, p, id=name) for name, a, o, s, p in CASES],
)
async def test_limit(
    tight: httpx.AsyncClient,
    at: Callable[[], Any],
    over: Callable[[], Any],
    status: int,
    param: str | None,
) -> None:
    def post(body: Any) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return tight.post(URL, content=content, headers={"content-type": "application/json"})

    r = await post(over())
    assert_error(r, status, param)
    assert await _count(tight) == 0
    r = await post(at())
    assert r.status_code == 201, r.text
    assert await _count(tight) >= 1


async def test_limits_name_the_item_in_a_batch(tight: httpx.AsyncClient) -> None:
    body = [interaction(0), interaction(1, messages=_messages(5))]
    assert_error(await tight.post(URL, json=body), 422, "body[1].messages")
    assert await _count(tight) == 0


@pytest.mark.parametrize(
    ("errno_", "text"), [(28, "No space left on device"), (30, "Read-only file system")]
)
async def test_disk_failure_is_503_with_retry_after_and_nothing_acked(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, errno_: int, text: str
) -> None:
    real = os.fdatasync

    def full(fd: int) -> None:
        raise OSError(errno_, text)

    monkeypatch.setattr(os, "fdatasync", full)
    for path, body in (
        (URL, interaction(0, id="while-full")),
        (URL, [interaction(1), interaction(2)]),
    ):
        r = await client.post(path, json=body)
        err = assert_error(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        assert text in err["message"]
    monkeypatch.setattr(os, "fdatasync", real)
    assert await _count(client) == 0
    # Space is back: the same request now succeeds, with no restart.
    r = await client.post(URL, json=interaction(0, id="while-full"))
    assert r.status_code == 201, r.text
    assert await _count(client) == 1
    r = await client.get("/readyz")
    assert r.status_code == 200


async def test_full_backlog_is_503(tmp_path: Path) -> None:
    store = Store(tmp_path / "d", options=StoreOptions(flush_interval_s=3600, max_pending_bytes=1))
    try:
        async with in_process(store) as c:
            assert (await c.post(URL, json=interaction(0))).status_code == 201
            r = await c.post(URL, json=interaction(1, id="refused"))
            assert_error(r, 503)
            assert r.headers["retry-after"] == "1"
            store.flush()
            r = await c.post(URL, json=interaction(1, id="refused"))
            assert r.status_code == 201
    finally:
        store.close()
