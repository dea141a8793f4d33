"""The README and the reference pages in docs/ cannot drift: the settings table, SQL
examples, curl bodies, CLI exports and Python snippets are checked against the real
thing, on the data `make serve` loads (the sample, dated up to today): every read
returns rows, and where a page shows an answer, that answer."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from click.testing import CliRunner

from istore.cli import main
from sample_data.generate import dumps
from sample_data.sample import build, load
from service.settings import Settings
from store.engine import Store
from tests.conftest import ROOT, in_process, interaction

README = (ROOT / "README.md").read_text()
# The reference the README links to (docs/otlp.md has its own test below: its snippets
# are client programs; security.md and scaling.md hold no runnable examples).
PAGES = ("api", "sql", "gateway", "exports", "console", "cli", "configuration", "operations",
         "performance")  # fmt: skip
DOCS = README + "".join((ROOT / "docs" / f"{page}.md").read_text() for page in PAGES)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOCS, flags=re.S)


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        var = f"ISTORE_{name.upper()}"
        row = next((line for line in DOCS.splitlines() if line.startswith(f"| `{var}`")), None)
        assert row is not None, f"{var} is not in docs/configuration.md's table"
        assert field.description and field.description in row


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make serve` loads into an empty ./data (sample_data/sample.py, today's)."""
    data = tmp_path_factory.mktemp("readme") / "data"
    with Store(data) as s:
        assert load(s)["interactions"] == 3040
    return data


def _shown(block: str, after: int) -> Any:
    """The JSON the README shows after a command (``# 201 {…}`` or ``# → {…}``)."""
    m = re.compile(r"\n# (?:201 |→ )(\{.*?\})(?:\s|$)").search(block, after)
    return orjson.loads(m.group(1).replace("[…]", "[]")) if m else None


def _non_empty(r: httpx.Response, where: str) -> None:
    assert r.status_code == 200, f"{where}: {r.text}"
    if r.headers["content-type"].startswith("application/json"):
        data = r.json()["data"]
        assert data, f"{where}: no rows on the sample"
    else:
        assert r.content.strip(), f"{where}: nothing on the sample"
    assert "x-istore-warning" not in r.headers, (where, r.headers["x-istore-warning"])


@pytest.mark.slow  # the sample store and every example of the docs
def test_readme_sql_examples_run(sample_store: Path) -> None:
    commands = []
    for block in blocks("bash"):
        for cmd in re.findall(r'^istore sql "(.*?)"', block, flags=re.S | re.M):
            if "…" not in cmd:  # the synopsis, not an example
                commands.append(cmd.replace("\\$", "$"))
    assert len(commands) >= 4
    for sql in commands:
        r = CliRunner().invoke(main, ["sql", "--data", str(sample_store), "--format", "json", sql])
        assert r.exit_code == 0, f"{sql}\n{r.output}"
        assert orjson.loads(r.stdout), f"no rows on the sample: {sql}"


@pytest.mark.slow  # the sample store and every example of the docs
def test_readme_python_snippets_run(sample_store: Path) -> None:
    snippets = blocks("python")
    assert len(snippets) >= 2
    cwd = os.getcwd()
    os.chdir(sample_store.parent)
    try:
        frames = 0
        for code in snippets:
            scope: dict[str, Any] = {}
            exec(compile(code, "docs", "exec"), scope)  # noqa: S102
            for name in ("df", "lf"):  # the frames the snippets build hold rows
                frame = scope.get(name)
                if isinstance(frame, pl.LazyFrame):
                    frame = frame.collect()
                if isinstance(frame, pl.DataFrame):
                    assert frame.height > 0, f"{name} is empty on the sample:\n{code}"
                    frames += 1
        assert frames >= 2
    finally:
        os.chdir(cwd)


@pytest.mark.slow  # the sample store and every example of the docs
def test_readme_cli_exports_run(sample_store: Path, tmp_path: Path) -> None:
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            if line.startswith("istore export ") and "…" not in line:
                commands.append(shlex.split(line.split("#")[0].split("|")[0]))
    assert len(commands) >= 3
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for args in commands:
            r = CliRunner().invoke(main, [*args[1:], "--data", str(sample_store)])
            assert r.exit_code == 0, f"{args}: {r.output}"
            assert "warning:" not in r.stderr, r.stderr
            out = args[args.index("-o") + 1]
            if "--manifest" in args:  # the same export again, checked against the first
                assert "identical to the manifest" in r.stdout, r.output
            elif out == "-":
                assert r.stdout.strip(), args
            elif "--split" in args:
                for side in ("train", "validation"):
                    assert Path(out.replace(".jsonl", f".{side}.jsonl")).stat().st_size, side
            else:
                assert Path(out).stat().st_size, args
    finally:
        os.chdir(cwd)


@pytest.mark.slow  # the sample store and every example of the docs
async def test_readme_curl_bodies_are_accepted(sample_store: Path) -> None:
    """Every curl example against `make serve`'s data: writes are accepted, reads return
    rows, and where the README shows an answer, that is the answer."""
    store = Store(sample_store)
    try:
        async with in_process(store) as client:
            await _curls(client)
    finally:
        store.close()


async def _curls(client: httpx.AsyncClient) -> None:
    bodies = []
    for block in blocks("bash"):
        for m in re.finditer(
            r"curl -s (\S+interactions) -H 'content-type: application/json' -d '(.*?)'", block, re.S
        ):
            bodies.append(orjson.loads(m.group(2)))
    assert bodies
    for body in bodies:
        r = await client.post("/api/v1/interactions", json=body)
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"completion_id", "session_id", "feedback_ids"}
    for block in blocks("bash"):
        for m in re.finditer(r"-d '(\{\"sql\".*?\})'", block, re.S):
            _non_empty(await client.post("/api/v1/sql", json=orjson.loads(m.group(1))), m[1])
    gets = 0
    for block in blocks("bash"):
        for m in re.finditer(r"curl -s '(http://127\.0\.0\.1:8080)?(/api/v1/[^']*)'( -H)?", block):
            url = m.group(2)
            if "<" not in url and not m.group(3):
                _non_empty(await client.get(url), url)
                gets += 1
    assert gets >= 7
    for block in blocks("bash"):
        for m in re.finditer(r"interactions/query -H 'content-type: application/json' -d '(.*?)'",
                             block, re.S):  # fmt: skip
            body = orjson.loads(m.group(1))
            _non_empty(await client.post("/api/v1/interactions/query", json=body), "query")
    shown = 0
    for block in blocks("bash"):
        if "python3 -m sample_data.sample | curl" in block:  # the batch answer shown
            lines = "".join(dumps(x) + "\n" for x in build().interactions)
            r = await client.post("/api/v1/interactions", content=lines,
                                  headers={"content-type": "application/x-ndjson"})  # fmt: skip
            want = _shown(block, block.index("sample_data.sample"))
            assert {k: r.json()[k] for k in ("accepted", "new", "repeats")} == {
                k: want[k] for k in ("accepted", "new", "repeats")
            }
            shown += 1
        for m in re.finditer(
            r"-X POST '?(http://127\.0\.0\.1:8080)?(/api/v1/interactions/delete[^' ]*)'?.*?"
            r"-d '(.*?)'", block, re.S,
        ):  # fmt: skip
            r = await client.post(m.group(2), json=orjson.loads(m.group(3)))
            assert r.json() == _shown(block, m.end()), m.group(0)
            shown += 1
        for m in re.finditer(r"-X POST '(http://127\.0\.0\.1:8080)?(/api/v1/maintenance[^']*)'",
                             block):  # fmt: skip
            r = await client.post(m.group(2))
            assert r.status_code == 200, r.text
            steps = re.search(r"steps=([\w,]+)", m.group(2))
            assert r.json()["steps"] == (steps.group(1).split(",") if steps else ["retention"])
    assert shown >= 3
    # The stored-completions example (the openai client's list with metadata).
    for code in blocks("py"):
        for m in re.finditer(r'list\(model="([^"]+)", metadata=\{"(\w+)": "([^"]+)"\}\)', code):
            params = {"model": m.group(1), f"metadata[{m.group(2)}]": m.group(3)}
            _non_empty(await client.get("/v1/chat/completions", params=params), m.group(0))


def test_quickstart_has_exactly_the_two_commands() -> None:
    quick = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert [shlex.split(line)[:2] for line in block.strip().splitlines()] == [
        ["make", "serve"],
        ["make", "test"],
    ]


OTLP_DOC = (ROOT / "docs" / "otlp.md").read_text()


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_otlp_doc_snippets_log_to_a_live_server(server_factory: type, tmp_path: Path) -> None:
    """Each client section of docs/otlp.md: its `export` lines and its Python snippet,
    run as an application would (own process, the environment the doc says), log a
    call that the server then holds, in the use case the section implies."""
    import subprocess
    import sys
    import time

    from service.keys import KeyRing
    from tests.upstream import Upstream

    data = tmp_path / "data"
    _, key = KeyRing(data).create(["ingest", "read"], name="docs")
    server = server_factory(data).start()
    sections = [s for s in OTLP_DOC.split("\n## ")[1:] if "```python" in s]
    assert len(sections) == 3
    want = {"support-bot": 0, "support-oi": 0, "support-lf": 0}
    with Upstream() as up:
        for section in sections:
            (env_block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
            (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE"))}
            env.update(OPENAI_BASE_URL=up.base_url, OPENAI_API_KEY="sk-test", ISTORE_KEY=key)
            for line in env_block.strip().splitlines():
                name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
                value = value.replace("$ISTORE_KEY", key).replace("http://127.0.0.1:8080",
                                                                  server.url)  # fmt: skip
                env[name] = value
            run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                                 capture_output=True, timeout=120)  # fmt: skip
            assert run.returncode == 0, run.stderr.decode()[-2000:]
            assert b"Failed to export" not in run.stderr, run.stderr.decode()[-2000:]
    h = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = httpx.get(server.url + "/api/v1/interactions", params={"source": "otlp"},
                         headers=h).json()["data"]  # fmt: skip
        if len(rows) >= 3:
            break
        time.sleep(0.1)
    for row in rows:
        want[row["use_case"]] += 1
        assert row["messages"][-1] == {"role": "user", "content": "Where is my order?"}
        assert row["completion"] == "echo: Where is my order?"
    assert want == {"support-bot": 1, "support-oi": 1, "support-lf": 1}


async def test_readme_curation_bodies_work(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/interactions", json=interaction(1, labels={"draft": "1"}))
    iid = r.json()["completion_id"]
    section = DOCS.split("## Curation: labels and replays", 1)[1].split("\n## ", 1)[0]
    bodies = re.findall(r"-d '(.*?)'", section)
    assert len(bodies) == 3
    r = await client.patch(f"/api/v1/interactions/{iid}", json=orjson.loads(bodies[0]))
    assert r.status_code == 200 and r.json()["labels"] == {"dataset": "sft-v2"}, r.text
    await client.patch(f"/api/v1/interactions/{iid}", json={"labels": {"topic": "billing"}})
    r = await client.post("/api/v1/interactions/labels", json=orjson.loads(bodies[1]))
    assert r.status_code == 200 and r.json() == {"updated": 0, "matched": 1}, r.text
    r = await client.post(f"/api/v1/interactions/{iid}/replay", json=orjson.loads(bodies[2]))
    assert r.status_code == 503, r.text  # the body is right; this server has no gateway
