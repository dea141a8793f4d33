"""The ingest fast lane (plain ASGI) and the FastAPI route answer identically."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import orjson

from api.app import create_app
from api.fastlane import FastLaneApp
from service.settings import Settings
from store.engine import Store, StoreOptions
from tests.conftest import interaction

UUID = re.compile(rb'"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"')

CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("single", orjson.dumps(interaction(1)), {}),
    ("single with id", orjson.dumps(interaction(1, id="fixed-1")), {}),
    ("repeat", orjson.dumps(interaction(1, id="fixed-1")), {}),
    ("array", orjson.dumps([interaction(i) for i in range(3)]), {}),
    (
        "ndjson",
        b"\n".join(orjson.dumps(interaction(i)) for i in range(3)),
        {"content-type": "application/x-ndjson"},
    ),
    (
        "gzip",
        gzip.compress(orjson.dumps(interaction(2))),
        {"content-encoding": "gzip"},
    ),
    ("feedbacks", orjson.dumps(interaction(3, feedbacks=[{"metric": "m", "value": 1}])), {}),
    ("missing use_case", orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), {}),
    ("bad json", b"{nope", {}),
    ("bad ndjson", b'{"a": 1}\n{nope', {"content-type": "application/x-ndjson"}),
    ("too large", b" " * (2 << 20), {}),
    ("bad encoding", b"x", {"content-encoding": "br"}),
    ("gzip bomb", gzip.compress(b" " * (4 << 20)), {"content-encoding": "gzip"}),
]


async def _run(tmp: Path, fastlane: bool) -> list[tuple[int, bytes]]:
    store = Store(tmp, options=StoreOptions(flush_interval_s=3600))
    app = create_app(Settings(data=str(tmp), max_body_bytes=1 << 20), store=store)
    if not fastlane:
        app.fast_lane = False
    out = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            for _, body, headers in CASES:
                h = {"content-type": "application/json", **headers}
                r = await c.post("/api/v1/interactions", content=body, headers=h)
                out.append((r.status_code, UUID.sub(b'"<uuid>"', r.content)))
    store.close()
    return out


async def test_fast_lane_matches_route(tmp_path: Path) -> None:
    fast = await _run(tmp_path / "fast", True)
    slow = await _run(tmp_path / "slow", False)
    for (name, _, _), f, r in zip(CASES, fast, slow, strict=True):
        assert f == r, name
    assert [s for s, _ in fast] == [201] * 7 + [422, 400, 400, 413, 400, 413]


async def test_fast_lane_is_installed(tmp_path: Path) -> None:
    app = create_app(Settings(data=str(tmp_path)))
    assert isinstance(app, FastLaneApp) and app.fast_lane
