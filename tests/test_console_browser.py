"""The web console in a real browser (Debian's chromium through Playwright) against a
real ``istore serve`` holding the sample data, with the gateway routed to the upstream
stand-in (``tests.upstream``).

Every page: renders, asks nothing of another origin, logs no console error (a CSP
violation is one), and has no serious or critical axe-core violation. Then: filtering
through the UI gives exactly the API's rows (and back/forward work), tool calls render,
hostile payloads execute nothing and break no layout, keyboard navigation, curation
round trips (feedback, labels, bulk labels, replay and its comparison), and sign-in,
sign-out and a read-only key's 403 on a server with keys. The screenshots in
``docs/img/`` are taken here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.keys import KeyRing
from store.engine import Store
from tests.browser import ARGS, SHOTS, Watch, chromium_path, run_axe, serious
from tests.conftest import Server
from tests.test_gateway import routing_toml
from tests.upstream import Upstream

pytestmark = pytest.mark.slow  # live servers, a real browser: `make test` only
AXE_RESULTS: dict[str, list[dict[str, Any]]] = {}


def _load_sample(data: Path) -> None:
    from sample_data.sample import load

    with Store(data) as s:
        load(s)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(delay_s=3.0) as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console")
    _load_sample(root / "data")
    config = root / "gateway.toml"
    wildcard = '\n[use_cases."*"]\ndefault_model = "small"\n'
    config.write_text(routing_toml(upstream.base_url) + wildcard)
    s = Server(root / "data", ISTORE_GATEWAY_CONFIG=str(config), ISTORE_TEST_UPSTREAM_KEY="k")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    watch = Watch(server.url)
    watch.attach(p)
    yield p, watch
    context.close()


def api(server: Server, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, server.url + path, timeout=30, **kw)
    assert r.status_code < 300, r.text
    return r.json()


def sql(server: Server, query: str) -> list[dict[str, Any]]:
    return list(api(server, "POST", "/api/v1/sql", json={"sql": query})["data"])


def row_ids(p: Any) -> list[str]:
    return list(p.eval_on_selector_all("#rows tbody tr", "rs => rs.map(r => r.dataset.id)"))


def check(p: Any, watch: Watch, name: str) -> None:
    """The page as loaded: nothing foreign, no error, no serious axe violation."""
    p.wait_for_load_state("networkidle")
    violations = run_axe(p)
    AXE_RESULTS[name] = violations
    assert watch.foreign == [], f"{name}: requests to another origin {watch.foreign}"
    assert watch.errors == [], f"{name}: {watch.errors}"
    assert serious(violations) == [], f"{name}: {serious(violations)}"


def tool_call_id(server: Server) -> str:
    rows = sql(server, "SELECT id FROM interactions WHERE completion_message LIKE '%tool_calls%' "
                       "AND messages LIKE '%\"role\":\"tool\"%' ORDER BY id LIMIT 1")  # fmt: skip
    if not rows:
        rows = sql(server, "SELECT id FROM interactions WHERE completion_message LIKE "
                           "'%tool_calls%' ORDER BY id LIMIT 1")  # fmt: skip
    return str(rows[0]["id"])


# -- every page ---------------------------------------------------------------------------
def test_every_page_renders_cleanly_and_passes_axe(page: tuple[Any, Watch], server: Server) -> None:
    p, watch = page
    tid = tool_call_id(server)
    session = sql(server, "SELECT session_id, count(*) AS n FROM interactions "
                          "WHERE session_id IS NOT NULL GROUP BY 1 "
                          "ORDER BY n DESC, 1 LIMIT 1")[0]["session_id"]  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    pages = [
        ("overview", "/ui/"),
        ("overview-30d-by-model", "/ui/?range=30d&split=model"),
        ("interactions", "/ui/interactions"),
        ("interactions-filtered", "/ui/interactions?use_case=support&label=env:prod"),
        ("conversation", f"/ui/interactions/{quote(tid)}"),
        ("session", f"/ui/sessions/{quote(session)}"),
        ("labels", "/ui/labels"),
        ("sql", "/ui/sql"),
        ("export", "/ui/export?use_case=support&format=openai"),
        ("export-dpo", "/ui/export?format=dpo&metric=rating"),
        ("not-found", "/ui/nope"),
    ]
    for name, path in pages:
        watch.clear()
        resp = p.goto(server.url + path)
        assert resp is not None
        assert resp.status == (404 if name == "not-found" else 200), name
        csp = resp.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp, name
        if name == "not-found":
            watch.errors = [e for e in watch.errors if "404" not in e]
        check(p, watch, name)
        if name.startswith("overview"):
            assert p.locator(".chart canvas").count() >= 5, "the charts are drawn"
            assert p.locator(".u-legend").count() >= 5, "with legends"
            assert p.locator("#campaigns section table").count() >= 3, "campaigns, loaded after"
        if name == "conversation":
            assert p.locator("#neighbours h2").inner_text() == "In this session"
    # The screenshots of the README, from the sample data.
    p.goto(server.url + "/ui/")
    p.wait_for_load_state("networkidle")
    p.screenshot(path=str(SHOTS / "console-overview.png"), full_page=False)
    p.goto(server.url + "/ui/interactions")
    p.screenshot(path=str(SHOTS / "console-interactions.png"), full_page=False)
    p.goto(server.url + f"/ui/interactions/{quote(tid)}")
    p.wait_for_load_state("networkidle")
    p.screenshot(path=str(SHOTS / "console-conversation.png"), full_page=False)
    # The page weight: every script and stylesheet a page loads, uncompressed.
    sizes = p.evaluate("""() => performance.getEntriesByType('resource')
        .filter(e => /\\.(js|css)$/.test(new URL(e.name).pathname))
        .map(e => e.decodedBodySize)""")
    assert 0 < sum(sizes) <= 300_000, sizes
    print("axe:", {k: [(v["id"], v["impact"]) for v in vs] for k, vs in AXE_RESULTS.items()})


# -- filters --------------------------------------------------------------------------------
def test_filtering_by_a_label_in_the_ui_gives_the_apis_rows(
    page: tuple[Any, Watch], server: Server
) -> None:
    p, watch = page
    p.goto(server.url + "/ui/interactions")
    p.fill("input[name=label]", "project:growth")
    p.click("form.filters button[type=submit]")
    p.wait_for_url(re.compile(r"label=project%3Agrowth"))
    p.wait_for_selector("#rows tbody tr")
    want = api(server, "GET", "/api/v1/interactions", params={"label": "project:growth"})
    assert row_ids(p) == [x["id"] for x in want["data"]]
    assert len(want["data"]) == 50
    # A label chip of the first row adds its filter.
    chips = p.locator("#rows tbody tr").first.locator("td.labels a.chip")
    titles = [chips.nth(i).get_attribute("title") or "" for i in range(chips.count())]
    pick = next(i for i, t in enumerate(titles) if not t.startswith("Filter by project:"))
    other = titles[pick].removeprefix("Filter by ")
    chips.nth(pick).click()
    p.wait_for_url(re.compile(r"label=project%3Agrowth&label="))
    want2 = api(server, "GET", "/api/v1/interactions",
                params=[("label", "project:growth"), ("label", other)])  # fmt: skip
    assert row_ids(p) == [x["id"] for x in want2["data"]] and want2["data"]
    # The form again (htmx swapped it too): it keeps both filters and adds a third.
    p.fill("input[name=search]", "the")
    p.click("form.filters button[type=submit]")
    p.wait_for_url(re.compile(r"search=the"))
    p.wait_for_selector("#rows tbody tr, p.empty")
    three = [("label", "project:growth"), ("label", other), ("search", "the")]
    want3 = api(server, "GET", "/api/v1/interactions", params=three)
    assert row_ids(p) == [x["id"] for x in want3["data"]]
    # Back and forward.
    p.go_back()
    p.wait_for_url(re.compile(r"label=project%3Agrowth&label=[^&]+$"))
    p.wait_for_selector("#rows tbody tr")
    assert row_ids(p) == [x["id"] for x in want2["data"]]
    p.go_forward()
    p.wait_for_url(re.compile(r"search=the"))
    p.wait_for_selector("#rows tbody tr, p.empty")
    assert row_ids(p) == [x["id"] for x in want3["data"]]
    # The next page is the API's next page.
    p.goto(server.url + "/ui/interactions?label=project:growth&limit=20")
    p.click("a[rel=next]")
    p.wait_for_url(re.compile(r"after="))
    q = {"label": "project:growth", "limit": 20, "after": want_cursor(server)}
    page2 = api(server, "GET", "/api/v1/interactions", params=q)
    assert row_ids(p) == [x["id"] for x in page2["data"]]
    assert watch.errors == [] and watch.foreign == []


def want_cursor(server: Server) -> str:
    first = api(server, "GET", "/api/v1/interactions", params={"label": "project:growth",
                                                                 "limit": 20})  # fmt: skip
    return str(first["next_cursor"])


def test_keyboard_navigation(page: tuple[Any, Watch], server: Server) -> None:
    p, _ = page
    p.goto(server.url + "/ui/interactions?use_case=support")
    ids = row_ids(p)
    p.keyboard.press("j")
    p.keyboard.press("j")
    p.keyboard.press("k")
    p.keyboard.press("j")
    assert p.locator("#rows tbody tr.selected").get_attribute("data-id") == ids[1]
    p.keyboard.press("Enter")
    p.wait_for_url(re.compile(re.escape(f"/ui/interactions/{quote(ids[1])}") + "$"))
    p.go_back()
    p.wait_for_selector("#rows tbody tr")
    p.keyboard.press("/")
    assert p.evaluate("document.activeElement.id") == "search"
    p.keyboard.type("refund")
    p.keyboard.press("Enter")
    p.wait_for_url(re.compile(r"search=refund"))


# -- conversations ------------------------------------------------------------------------
def test_tool_calls_render(page: tuple[Any, Watch], server: Server) -> None:
    p, watch = page
    tid = tool_call_id(server)
    item = api(server, "GET", f"/api/v1/interactions/{quote(tid)}")
    p.goto(server.url + f"/ui/interactions/{quote(tid)}")
    calls = item["completion"]["tool_calls"]
    shown = p.locator(".chat > .msg.assistant .toolcall")
    assert shown.count() >= len(calls)
    for i, c in enumerate(calls):
        block = shown.nth(shown.count() - len(calls) + i)
        assert block.locator(".fn").inner_text() == c["function"]["name"]
        args = block.locator("pre").inner_text()
        import orjson

        assert orjson.loads(args) == orjson.loads(c["function"]["arguments"])
        if orjson.loads(args):
            assert "\n  " in args, "pretty-printed"
    tools = [m for m in item["messages"] if m.get("role") == "tool"]
    assert p.locator(".chat > .msg.tool").count() == len(tools)
    assert watch.errors == []


HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    '"><svg onload="window.__pwned = 3"><circle r=40></svg>',
    "</style><style>body { display: none !important }</style>",
    '<a href="javascript:window.__pwned = 4">click</a>',
    "{{ 7*7 }} {% raw %}",
    "x" * 6000,
]


def test_hostile_payloads_execute_nothing_and_break_no_layout(
    page: tuple[Any, Watch], server: Server
) -> None:
    p, watch = page
    body = {
        "use_case": "hostile",
        "model": '<script>window.__pwned = 5</script>',
        "messages": [
            {"role": "system", "content": HOSTILE[3]},
            {"role": "user", "content": [
                {"type": "text", "text": HOSTILE[0] + " " + HOSTILE[1]},
                {"type": "image_url", "image_url": {"url": "javascript:window.__pwned = 6"}},
                {"type": "image_url",
                 "image_url": {"url": "data:image/svg+xml,<svg onload=alert(1)>"}},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "<img src=x onerror=alert(1)>", "arguments": HOSTILE[2]}}]},
            {"role": "tool", "tool_call_id": "c1", "content": HOSTILE[4] + HOSTILE[5]},
            {"role": "user", "content": HOSTILE[6]},
        ],
        "completion": HOSTILE[6] + " " + HOSTILE[0],
        "labels": {"<b>k</b>": HOSTILE[1], "long": "y" * 1000, "css": HOSTILE[3]},
        "session_id": "<script>s</script>",
        "user": "javascript:alert(1)",
    }  # fmt: skip
    hid = api(server, "POST", "/api/v1/interactions", json=body)["completion_id"]
    api(server, "POST", "/api/v1/feedback", json={"completion_id": hid, "metric": "<i>m</i>",
                                                   "value": 1, "reason": HOSTILE[0]})  # fmt: skip
    for path in [
        f"/ui/interactions/{quote(hid)}",
        "/ui/interactions?use_case=hostile",
        "/ui/labels?use_case=hostile",
        f"/ui/sessions/{quote(body['session_id'])}",
        "/ui/export?use_case=hostile",
        "/ui/?use_case=hostile&split=label:css",
    ]:
        watch.clear()
        p.goto(server.url + path)
        p.wait_for_load_state("networkidle")
        assert p.evaluate("window.__pwned") is None, path
        assert watch.errors == [], (path, watch.errors)
        assert p.locator("main img, main svg, main iframe, main object").count() == 0, path
        hrefs = p.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
        assert not [h for h in hrefs if h.lower().lstrip().startswith(("javascript:", "data:"))]
        assert p.evaluate("getComputedStyle(document.body).display") != "none"
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 1400, f"{path}: the page is {width} px wide"
    p.goto(server.url + f"/ui/interactions/{quote(hid)}")
    assert HOSTILE[0] in p.locator(".chat").inner_text()  # shown as text, not run
    link = p.locator(".msg.user .part.image a")
    assert link.count() == 1 and link.get_attribute("href") == "https://example.invalid/x.png"


# -- curation round trips -----------------------------------------------------------------
def test_feedback_labels_bulk_label_and_replay_round_trip(
    page: tuple[Any, Watch], server: Server
) -> None:
    p, watch = page
    iid = sql(server, "SELECT id FROM interactions WHERE use_case = 'support' AND status = 'ok' "
                      "AND completion IS NOT NULL ORDER BY id LIMIT 1")[0]["id"]  # fmt: skip
    url = server.url + f"/ui/interactions/{quote(iid)}"
    p.goto(url)
    # Feedback: a thumbs up with a reason.
    p.fill("#feedback input[name=metric]", "thumbs_up")
    p.fill("#feedback input[name=reason]", "clear answer")
    p.click("#feedback button[value=true]")
    p.wait_for_selector("#feedback td:has-text('clear answer')")
    fb = api(server, "GET", f"/api/v1/interactions/{quote(iid)}")["feedback"]
    assert [(f["metric"], f["value"], f["reason"]) for f in fb][-1] == ("thumbs_up", 1.0,
                                                                        "clear answer")  # fmt: skip
    # Labels: set one, then remove it.
    p.fill("#labels input[name=key]", "reviewed")
    p.fill("#labels input[name=value]", "yes")
    p.click("#labels button:has-text('Set label')")
    p.wait_for_selector("#labels a.chip:has-text('reviewed')")
    assert api(server, "GET", f"/api/v1/interactions/{quote(iid)}")["labels"]["reviewed"] == "yes"
    p.click("#labels button[aria-label='Remove label reviewed']")
    p.wait_for_selector("#labels a.chip:has-text('reviewed')", state="detached")
    assert "reviewed" not in api(server, "GET", f"/api/v1/interactions/{quote(iid)}")["labels"]
    # Replay on the other model, side by side, then the preference.
    p.select_option("select[name=model]", "large")
    p.click("button:has-text('Replay')")
    p.wait_for_selector("#replay .pair")
    new = api(server, "GET", "/api/v1/interactions",
              params={"label": f"replay_of:{iid}"})["data"]  # fmt: skip
    assert len(new) == 1 and new[0]["model"] == "large"
    assert new[0]["completion"] in p.locator("#replay .pair").inner_text()
    p.click("#replay button:has-text('Replay is better')")
    p.wait_for_selector("text=Comparison recorded")
    comps = api(server, "GET", f"/api/v1/interactions/{quote(iid)}")["comparisons"]
    assert [(c["preferred_id"], c["other_id"]) for c in comps] == [(new[0]["id"], iid)]
    # Bulk label: every interaction the list shows for a filter, after a confirmation.
    flt = [("use_case", "rag-bot"), ("label", "env:staging")]
    expected = all_ids(server, flt)
    p.goto(server.url + "/ui/interactions?use_case=rag-bot&label=env:staging")
    p.click("summary:has-text('Label all matching')")
    p.fill("details.bulk input[name=set]", "dataset:ui-bulk")
    p.click("details.bulk button[type=submit]")
    p.wait_for_url(re.compile(r"/ui/bulk-label"))
    assert p.locator(".big strong").inner_text() == f"{len(expected):,}"
    p.click("button.primary")
    p.wait_for_selector("text=Done:")
    assert sorted(all_ids(server, [("label", "dataset:ui-bulk")])) == sorted(expected)
    assert watch.errors == [] and watch.foreign == []


def all_ids(server: Server, params: list[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    after = None
    while True:
        q = params + [("limit", "1000")] + ([("after", after)] if after else [])
        body = api(server, "GET", "/api/v1/interactions", params=q)
        out += [x["id"] for x in body["data"]]
        if not body["has_more"]:
            return out
        after = body["next_cursor"]


# -- keys -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path_factory.mktemp("keyed")
    _load_sample(root / "data")
    ring = KeyRing(root / "data")
    keys = {s: ring.create([s], name=f"{s}-key")[1] for s in ("read", "ingest", "admin")}
    s = Server(root / "data")
    s.start()
    yield s, keys
    s.stop()


def test_sign_in_sign_out_and_a_read_keys_403(
    browser: Any, keyed: tuple[Server, dict[str, str]]
) -> None:
    server, keys = keyed
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    p = context.new_page()
    watch = Watch(server.url)
    watch.attach(p)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    iid = httpx.get(server.url + "/api/v1/interactions?limit=1", headers=admin).json()["data"][0][
        "id"
    ]
    try:
        p.goto(server.url + f"/ui/interactions/{quote(iid)}")
        assert "/ui/login" in p.url
        check(p, watch, "login")
        p.fill("#key", "isk_000000000000_wrong")
        p.click("button[type=submit]")
        assert p.locator(".error").inner_text() == "That key is not valid."
        watch.clear()
        p.fill("#key", keys["read"])
        p.click("button[type=submit]")
        p.wait_for_url(re.compile(re.escape(f"/ui/interactions/{quote(iid)}") + "$"))
        cookie = next(c for c in context.cookies() if c["name"] == "istore_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert keys["read"] not in str(context.cookies())
        # A read key sees no write control …
        assert p.locator("text=Set label").count() == 0
        assert p.locator("text=Replay on another model").count() == 0
        assert p.locator("#feedback form").count() == 0
        check(p, watch, "conversation-read-key")
        # … and is refused if it writes anyway, with the right CSRF token and origin.
        status = p.evaluate(
            """async (id) => {
                const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
                const r = await fetch('/ui/interactions/' + encodeURIComponent(id) + '/labels', {
                    method: 'POST', headers: {'X-CSRF-Token': token,
                    'Content-Type': 'application/x-www-form-urlencoded'}, body: 'key=a&value=b'});
                return r.status; }""",
            iid,
        )
        assert status == 403
        # A cross-site form post carries no Origin of ours: refused even with the cookie.
        jar = {"istore_session": cookie["value"]}
        evil = {"Origin": "https://evil.example"}
        r = httpx.post(server.url + f"/ui/interactions/{quote(iid)}/labels", cookies=jar,
                       data={"key": "a", "value": "b"}, headers=evil)  # fmt: skip
        assert r.status_code == 403
        # Sign out: the session is over, here and for anyone holding the cookie.
        p.click("text=Sign out")
        p.wait_for_url(re.compile(r"/ui/login"))
        r = httpx.get(server.url + "/ui/interactions", cookies=jar, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        # An ingest key can write through the console.
        p.fill("#key", keys["ingest"])
        p.click("button[type=submit]")
        p.goto(server.url + f"/ui/interactions/{quote(iid)}")
        assert "/ui/login" not in p.url
        # ingest alone cannot read: the API's scopes, so the page is a 403.
        assert p.locator("h1").inner_text().startswith("403")
        assert watch.foreign == []
    finally:
        context.close()


def test_sql_page_runs_shows_errors_and_keeps_history(
    page: tuple[Any, Watch], server: Server
) -> None:
    p, watch = page
    p.goto(server.url + "/ui/sql")
    p.fill("#sql", "SELECT use_case, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1")
    p.click("#sql-form button:has-text('Run')")
    p.wait_for_selector("#sql-result table")
    want = sql(server, "SELECT use_case, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1")
    cells = p.eval_on_selector_all("#sql-result tbody tr", "rs => rs.map(r => r.innerText)")
    assert [c.split("\t") for c in cells] == [[r["use_case"], str(r["n"])] for r in want]
    p.fill("#sql", "SELECT nope FROM interactions")
    p.keyboard.press("Control+Enter")
    p.wait_for_selector("#sql-result .error")
    assert "nope" in p.locator("#sql-result .error").inner_text()  # DuckDB's own message
    p.reload()
    history = p.locator("#sql-history li").all_inner_texts()
    assert history[:2] == [
        "SELECT nope FROM interactions",
        "SELECT use_case, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1",
    ]
    with p.expect_download() as dl:
        p.click("button:has-text('Download CSV')")
    # The editor shows the page's default query again after the reload: that is what runs.
    assert Path(dl.value.path()).read_text().splitlines()[0] == "use_case,model,n,p50_ms"
    assert watch.foreign == [] and watch.errors == []
