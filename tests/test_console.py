"""The console's HTTP contract without a browser: headers on every page, the list's
parameters (the API's, exactly), what protects writes (origin, CSRF token, scope),
sessions (expiry, sign-out, revocation), and the overview's statistics."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest_asyncio

from console.security import SESSIONS_FILE, Sessions
from service.keys import KeyRing
from store import stats as agg
from store.engine import Store
from store.filters import Filter
from tests.conftest import in_process, interaction

ORIGIN = {"Origin": "http://127.0.0.1:8080"}  # the in-process client's own origin
PAGES = ["/ui/", "/ui/interactions", "/ui/labels", "/ui/sql", "/ui/export", "/ui/login"]


def token(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page has a CSRF field"
    return m.group(1)


async def _seed(c: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[str]:
    items = [interaction(i, labels={"topic": "billing" if i % 2 else "other"},
                         session_id=f"s{i % 3}") for i in range(12)]  # fmt: skip
    r = await c.post("/api/v1/interactions", json=items, headers=headers or {})
    assert r.status_code == 201, r.text
    return list(r.json()["completion_ids"])


@pytest_asyncio.fixture
async def open_client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store) as c:
        await _seed(c)
        yield c


async def test_every_page_has_the_headers(open_client: httpx.AsyncClient) -> None:
    r = await open_client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    iid = (await open_client.get("/api/v1/interactions?limit=1")).json()["data"][0]["id"]
    for path in [*PAGES, f"/ui/interactions/{iid}", "/ui/sessions/s1", "/ui/nope"]:
        r = await open_client.get(path, follow_redirects=True)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, path
        assert "unsafe" not in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["content-type"].startswith("text/html"), path
        assert "<script>" not in r.text and " on" + "click=" not in r.text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)", r.text), path
        assert ' style="' not in r.text, path  # the CSP would refuse inline styles
    r = await open_client.get("/ui/static/console.js")
    assert r.headers["content-type"].startswith("text/javascript")
    r = await open_client.get("/ui/static/../console/security.py")
    assert r.status_code == 404


async def test_the_list_takes_exactly_the_apis_parameters(open_client: httpx.AsyncClient) -> None:
    for query in ["label=topic:billing&limit=3", "use_case=support&search=question 1",
                  "has_label=topic&order=asc&limit=5", "session_id=s1&session_id=s2"]:  # fmt: skip
        api = (await open_client.get(f"/api/v1/interactions?{query}")).json()["data"]
        page = (await open_client.get(f"/ui/interactions?{query}")).text
        shown = re.findall(r'<tr data-id="([^"]+)"', page)
        assert shown == [x["id"] for x in api] and shown, query
    # What the API refuses, the page refuses (with a page, not a crash).
    for query, param in [("colour=red", "colour"), ("label=nocolon", "label"),
                         ("limit=5000", "limit"), ("from=yesterday", "from")]:  # fmt: skip
        api = await open_client.get(f"/api/v1/interactions?{query}")
        page = await open_client.get(f"/ui/interactions?{query}")
        assert api.status_code == page.status_code == 422, query
        assert param in page.text
    # Blank fields of the filter form are dropped by a redirect to the API's URL.
    r = await open_client.get("/ui/interactions?search=&label=topic:billing&from=",
                              follow_redirects=False)  # fmt: skip
    assert (
        r.status_code == 303 and r.headers["location"] == "/ui/interactions?label=topic%3Abilling"
    )


async def test_open_mode_writes_need_origin_and_csrf(open_client: httpx.AsyncClient) -> None:
    c = open_client
    iid = (await c.get("/api/v1/interactions?limit=1")).json()["data"][0]["id"]
    page = await c.get(f"/ui/interactions/{iid}")
    csrf = token(page.text)
    assert c.cookies.get("istore_csrf") == csrf  # double submit: cookie and page agree
    url = f"/ui/interactions/{iid}/labels"
    form = {"key": "k", "value": "v"}
    r = await c.post(url, data={**form, "csrf": csrf})  # no Origin, no Referer
    assert r.status_code == 403 and "cross-origin" in r.text
    r = await c.post(url, data={**form, "csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = await c.post(url, data={**form, "csrf": "forged"}, headers=ORIGIN)
    assert r.status_code == 403 and "CSRF" in r.text
    r = await c.post(url, data=form, headers=ORIGIN)
    assert r.status_code == 403
    assert "k" not in (await c.get(f"/api/v1/interactions/{iid}")).json()["labels"]
    r = await c.post(url, data={**form, "csrf": csrf}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303
    assert (await c.get(f"/api/v1/interactions/{iid}")).json()["labels"]["k"] == "v"
    # htmx sends the token as a header and gets the fragment back.
    r = await c.post(url, data={"remove": "k"}, headers={**ORIGIN, "X-CSRF-Token": csrf,
                                                         "HX-Request": "true"})  # fmt: skip
    assert r.status_code == 200 and r.text.startswith('<div id="labels">')
    assert "k" not in (await c.get(f"/api/v1/interactions/{iid}")).json()["labels"]


async def test_bulk_label_page_counts_then_labels_what_the_list_shows(
    open_client: httpx.AsyncClient,
) -> None:
    c = open_client
    r = await c.get("/ui/bulk-label?label=topic:billing&session_id=s1&set=dataset:x")
    assert r.status_code == 200
    want = (await c.get("/api/v1/interactions?label=topic:billing&session_id=s1")).json()["data"]
    assert f"<strong>{len(want)}</strong>" in r.text
    form = [("csrf", token(r.text)), ("label", "topic:billing"), ("session_id", "s1"),
            ("set", "dataset:x")]  # fmt: skip
    r = await c.post(
        "/ui/bulk-label",
        content=urlencode(form),
        headers={**ORIGIN, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "Done:" in r.text
    got = (await c.get("/api/v1/interactions?label=dataset:x")).json()["data"]
    assert sorted(x["id"] for x in got) == sorted(x["id"] for x in want)


@pytest_asyncio.fixture
async def keyed(store: Store, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    ring = KeyRing(data_dir)
    keys = {s: ring.create([s], name=s)[1] for s in ("read", "ingest", "admin")}
    keys["read+ingest"] = ring.create(["read", "ingest"], name="both")[1]
    async with in_process(store) as c:
        await _seed(c, {"Authorization": f"Bearer {keys['admin']}"})
        yield c, keys


async def _sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    return await c.post("/ui/login", data={"key": key, "next": "/ui/labels"}, headers=ORIGIN,
                        follow_redirects=False)  # fmt: skip


async def test_sessions(keyed: tuple[httpx.AsyncClient, Any], data_dir: Path) -> None:
    c, keys = keyed
    r = await c.get("/ui/interactions", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    r = await _sign_in(c, "isk_000000000000_x")
    assert r.status_code == 401
    r = await c.post("/ui/login", data={"key": keys["read"]}, headers={"Origin": "http://evil"})
    assert r.status_code == 403  # login CSRF
    r = await _sign_in(c, keys["read"])
    assert r.status_code == 303 and r.headers["location"] == "/ui/labels"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http; behind https it is Secure (below)
    assert keys["read"] not in cookie and keys["read"] not in (data_dir / SESSIONS_FILE).read_text()
    sid = c.cookies["istore_session"]
    page = await c.get("/ui/interactions")
    assert page.status_code == 200 and "Label all matching" not in page.text
    # The open-redirect guard: only console paths.
    r = await c.post("/ui/login", data={"key": keys["read"], "next": "//evil.example/"},
                     headers=ORIGIN, follow_redirects=False)  # fmt: skip
    assert r.headers["location"] == "/ui/"
    sid = c.cookies["istore_session"]
    # Sign out ends the session for whoever holds the cookie.
    page = await c.get("/ui/labels")
    r = await c.post("/ui/logout", data={"csrf": token(page.text)}, headers=ORIGIN,
                     follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    c.cookies.set("istore_session", sid, path="/ui")  # the cookie, kept by a thief
    r = await c.get("/ui/labels", follow_redirects=False)
    assert r.status_code == 303
    # Revoking the key ends its sessions at once.
    c.cookies.clear()
    await _sign_in(c, keys["read+ingest"])
    assert (await c.get("/ui/labels")).status_code == 200
    KeyRing(data_dir).revoke("both")
    assert (await c.get("/ui/labels", follow_redirects=False)).status_code == 303
    # Expired sessions are gone.
    sessions = Sessions(data_dir)
    sid = sessions.start(KeyRing(data_dir).authenticate(f"Bearer {keys['admin']}"), hours=-1)
    assert sessions.find(sid) is None
    c.cookies.clear()
    c.cookies.set("istore_session", sid, path="/ui")
    r = await c.get("/ui/labels", follow_redirects=False)
    assert r.status_code == 303


async def test_https_sessions_are_secure(keyed: tuple[httpx.AsyncClient, Any]) -> None:
    c, keys = keyed
    r = await c.post("/ui/login", data={"key": keys["read"]}, follow_redirects=False,
                     headers={**ORIGIN, "X-Forwarded-Proto": "https"})  # fmt: skip
    assert "Secure" in r.headers["set-cookie"]


async def test_scopes_in_the_console(keyed: tuple[httpx.AsyncClient, Any]) -> None:
    c, keys = keyed
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    iid = (await c.get("/api/v1/interactions?limit=1", headers=admin)).json()["data"][0]["id"]
    await _sign_in(c, keys["read"])
    page = await c.get(f"/ui/interactions/{iid}")
    assert "Set label" not in page.text and "Replay" not in page.text
    r = await c.post(f"/ui/interactions/{iid}/labels", headers=ORIGIN,
                     data={"key": "a", "value": "b", "csrf": token(page.text)})  # fmt: skip
    assert r.status_code == 403 and "needs ingest" in r.text
    # SQL runs for a read key (a POST, so it carries the token too).
    r = await c.post("/ui/sql", data={"sql": "SELECT count(*) AS n FROM interactions",
                                      "csrf": token(page.text)}, headers=ORIGIN)  # fmt: skip
    assert r.status_code == 200 and "<td>12</td>" in r.text
    r = await c.post("/ui/sql", data={"sql": "SELECT * FROM read_csv('/etc/passwd')",
                                      "csrf": token(page.text)}, headers=ORIGIN)  # fmt: skip
    assert 'class="error"' in r.text
    r = await c.post("/ui/sql/download", headers=ORIGIN,
                     data={"sql": "SELECT 1 AS a, 'x' AS b", "format": "csv",
                           "csrf": token(page.text)})  # fmt: skip
    assert r.status_code == 200 and r.text.splitlines() == ["a,b", "1,x"]
    assert "attachment" in r.headers["content-disposition"]
    r = await c.get("/ui/export/download?use_case=support&format=openai")
    assert r.status_code == 200 and len(r.text.splitlines()) == 12
    assert "X-Istore-Versions" in r.headers
    await _sign_in(c, keys["ingest"])  # ingest alone cannot read, as over the API
    assert (await c.get("/ui/interactions")).status_code == 403
    await _sign_in(c, keys["read+ingest"])
    page = await c.get(f"/ui/interactions/{iid}")
    assert "Set label" in page.text
    r = await c.post(f"/ui/interactions/{iid}/labels", headers=ORIGIN, follow_redirects=False,
                     data={"key": "a", "value": "b", "csrf": token(page.text)})  # fmt: skip
    assert r.status_code == 303


async def test_std_feedback_and_the_overview(open_client: httpx.AsyncClient, store: Store) -> None:
    c = open_client
    ids = [x["id"] for x in (await c.get("/api/v1/interactions")).json()["data"]]
    values = [1.0, 2.0, 4.0, 7.0]
    for iid, value in zip(ids, values, strict=False):
        await c.post("/api/v1/feedback", json={"completion_id": iid, "metric": "r", "value": value})
    res = agg.stats(store, Filter(), [], ["avg_feedback:r", "std_feedback:r", "count_feedback:r"])
    row = res["data"][0]
    assert row["avg_feedback:r"] == 3.5 and row["count_feedback:r"] == 4
    assert abs(row["std_feedback:r"] - 2.6457513110645907) < 1e-9  # statistics.stdev
    r = await c.get("/ui/?range=24h&metric=r&split=label:topic")
    assert r.status_code == 200 and "mean r" in r.text
    assert '<span class="n">3.50</span>' in r.text  # the mean of every value, from the series
    assert re.search(r'<script type="application/json" id="chart-data">\[', r.text)
    r = await c.get("/ui/?range=1y")
    assert r.status_code == 422 and "range" in r.text


def test_session_file_is_private(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    _, key = ring.create(["read"])
    sessions = Sessions(tmp_path)
    sid = sessions.start(ring.authenticate(f"Bearer {key}"))
    assert (tmp_path / SESSIONS_FILE).stat().st_mode & 0o077 == 0
    assert sid not in (tmp_path / SESSIONS_FILE).read_text()  # only its hash is stored
    assert Sessions(tmp_path).find(sid) is not None  # another worker knows it
    Sessions(tmp_path).end(sid)
    time.sleep(0.01)
    assert sessions.find(sid) is None
