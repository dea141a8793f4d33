"""Every 4xx, from every route, is exactly ``{"error":{"message","type","param","code"}}``.

The routes are discovered from ``app.routes``, so a route added later is covered too:
each one gets an unknown path-parameter value, bad bodies, an unknown query parameter
and a method it does not allow."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.app import create_app
from service.settings import Settings
from store.engine import Store

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ERROR_TYPES = {
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
    "conflict", "rate_limit_error", "service_unavailable",
}  # fmt: skip


def assert_error_shape(resp: httpx.Response, where: str) -> dict[str, Any]:
    assert resp.headers.get("content-type", "").startswith("application/json"), where
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, (where, body)
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, (where, err)
    assert isinstance(err["message"], str) and err["message"].strip(), (where, err)
    assert err["type"] in ERROR_TYPES, (where, err)
    assert err["param"] is None or (isinstance(err["param"], str) and err["param"]), (where, err)
    assert err["code"] is None or (isinstance(err["code"], str) and err["code"]), (where, err)
    return err


@pytest_asyncio.fixture
async def app_client(
    store: Store, data_dir: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app and a client that sees a crash as a 500 response (not a raised exception)."""
    app = create_app(Settings(data=str(data_dir), max_body_bytes=8 << 20), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            yield app, c


class Route:
    """An APIRoute with its full path (prefixes of the routers it was included through)."""

    def __init__(self, path: str, route: APIRoute) -> None:
        self.path = path
        self.methods: set[str] = set(route.methods or ())
        parts = re.split(r"\{[^}]+\}", path)
        self.regex = re.compile("^" + "[^/]+".join(map(re.escape, parts)) + "$")


def _walk(routes: Any, prefix: str = "") -> list[Route]:
    out: list[Route] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(Route(prefix + r.path, r))
        elif hasattr(r, "original_router"):  # FastAPI >= 0.16x keeps included routers lazily
            out += _walk(r.original_router.routes, prefix + r.include_context.prefix)
        elif hasattr(r, "routes") and hasattr(r, "path"):  # a Mount
            out += _walk(r.routes, prefix + r.path)
    return out


def is_console(path: str) -> bool:
    """The web console's HTML pages (``console/``): their errors are pages, not JSON."""
    return path == "/" or path == "/ui" or path.startswith("/ui/")


def api_routes(app: FastAPI) -> list[Route]:
    return [r for r in _walk(app.routes) if not is_console(r.path)]


def console_routes(app: FastAPI) -> list[Route]:
    return [r for r in _walk(app.routes) if is_console(r.path)]


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Methods any route answers for the concrete ``path``."""
    out: set[str] = set()
    for r in api_routes(app):
        if r.regex.match(path):
            out |= r.methods
    return out


def test_the_route_walk_finds_every_documented_operation(store: Store, data_dir: Path) -> None:
    app = create_app(Settings(data=str(data_dir)), store=store)
    walked = {(r.path, m) for r in api_routes(app) for m in r.methods}
    documented = {
        (path, method.upper()) for path, ops in app.openapi()["paths"].items() for method in ops
    }
    assert documented, "the OpenAPI document lists no operation"
    assert documented <= walked


BAD_BODIES: list[tuple[bytes, dict[str, str]]] = [
    (b"{not json", {"content-type": "application/json"}),
    (b"", {"content-type": "application/json"}),
    (b"[1, 2", {"content-type": "application/json"}),
    (b'{"zzz_unknown_field": [1, {"a": null}]}', {"content-type": "application/json"}),
    (b'"a string"', {"content-type": "application/json"}),
    (b"[]", {"content-type": "application/json"}),
    (b"\xff\xfe\x00garbage", {"content-type": "application/json"}),
    (b"a=1&b=2", {"content-type": "application/x-www-form-urlencoded"}),
    (b"{not json\n", {"content-type": "application/x-ndjson"}),
    (b"plain", {"content-type": "application/json", "content-encoding": "gzip"}),
]


def bad_requests(app: FastAPI, route: Route) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx kwargs) of bad requests for ``route``."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    has_params = "{" in route.path
    paths = [fill(route.path, v) for v in ("zzz-no-such-thing", "%00", "..%2F..%2Fetc")]
    paths = paths if has_params else [route.path]
    for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
        for path in paths:
            out.append((method, path, {}))
            out.append((method, path, {"params": {"zzz_unknown": "1"}}))
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                for content, headers in BAD_BODIES:
                    out.append((method, path, {"content": content, "headers": headers}))
    for path in paths:
        for method in METHODS:
            if method not in allowed_methods(app, path):
                out.append((method, path, {"content": b"{}"} if method != "GET" else {}))
    return out


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
async def test_every_route_answers_bad_requests_in_the_error_shape(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    routes = api_routes(app)
    paths = {r.path for r in routes}
    # The walk covers the routes this suite is about (and any added later).
    assert {"/api/v1/interactions", "/api/v1/interactions/{interaction_id}", "/api/v1/sql",
            "/healthz"} <= paths  # fmt: skip
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for route in routes:
        saw_4xx = False
        for method, path, kw in bad_requests(app, route):
            r = await client.request(method, path, **kw)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            where = f"{method} {path} {kw} → {r.status_code} {r.text[:200]}"
            if r.status_code >= 500:
                failures.append(where)
                continue
            if r.status_code >= 400:
                saw_4xx = True
                try:
                    assert_error_shape(r, where)
                except AssertionError as exc:
                    failures.append(f"{where}: {exc}")
        if not saw_4xx:
            failures.append(f"{route.path}: no bad request produced a 4xx")
    assert failures == []
    assert {400, 404, 405, 422} <= set(statuses)  # the walk did reach the handlers


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
async def test_every_console_route_answers_bad_requests_with_a_page(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The console's routes, walked the same way: never a 5xx; a 4xx is an HTML page
    with the console's Content-Security-Policy (or a redirect to one)."""
    app, client = app_client
    routes = console_routes(app)
    assert {"/ui/", "/ui/interactions", "/ui/interactions/{interaction_id}/labels"} <= {
        r.path for r in routes
    }
    failures: list[str] = []
    for route in routes:
        for method, path, kw in bad_requests(app, route):
            r = await client.request(method, path, **kw)
            where = f"{method} {path} {kw} → {r.status_code} {r.text[:120]}"
            if r.status_code >= 500:
                failures.append(where)
            elif r.status_code >= 400:
                if not r.headers.get("content-type", "").startswith("text/html"):
                    failures.append(f"{where}: not HTML")
                elif "default-src 'self'" not in r.headers.get("content-security-policy", ""):
                    failures.append(f"{where}: no CSP")
    assert failures == [], "\n".join(f[:300] for f in failures)


async def test_unknown_paths_are_404_in_the_error_shape(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = app_client
    for method, path in [
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v1/nope"),
        ("GET", "/api/v2/interactions"),
        ("GET", "/api/v1/interactions/a/b/c"),
        ("DELETE", "/api/v1/sql/x"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 404, (method, path, r.status_code)
        err = assert_error_shape(r, f"{method} {path}")
        assert err["type"] == "not_found_error"
        assert path in err["message"]


async def test_unknown_interaction_id_is_404_in_the_error_shape(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = app_client
    r = await client.get("/api/v1/interactions/zzz-no-such-id")
    assert r.status_code == 404
    err = assert_error_shape(r, "get unknown id")
    assert (err["type"], err["code"]) == ("not_found_error", "not_found")


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/sql"),
        ("GET", "/api/v1/sql"),
        ("PUT", "/api/v1/interactions"),
        ("PATCH", "/api/v1/interactions"),
        ("POST", "/healthz"),
        ("PUT", "/readyz"),
    ],
)
async def test_wrong_method_is_405_in_the_error_shape(
    app_client: tuple[FastAPI, httpx.AsyncClient], method: str, path: str
) -> None:
    app, client = app_client
    if method in allowed_methods(app, path):
        pytest.fail(f"{method} {path} is answered by a route: pick another method")
    r = await client.request(method, path)
    assert r.status_code == 405, r.text
    assert_error_shape(r, f"{method} {path}")
    allow = {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}
    assert allow and allow <= allowed_methods(app, path) | {"HEAD"}, r.headers  # RFC 9110


async def test_500_is_in_the_error_shape_without_internals(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """When something does crash, the client still gets the shape and no traceback."""
    app, client = app_client

    @app.get("/__test_crash")
    def crash() -> None:
        raise RuntimeError("secret internal detail")

    r = await client.get("/__test_crash")
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text


async def test_malformed_json_is_400_on_every_json_route(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    posts = [r.path for r in api_routes(app) if "POST" in (r.methods or ()) and "{" not in r.path]
    assert "/api/v1/sql" in posts
    for path in posts:
        r = await client.post(
            path, content=b"{not json", headers={"content-type": "application/json"}
        )
        err = assert_error_shape(r, path)
        assert (r.status_code, err["param"]) == (400, "body"), (path, r.text)
