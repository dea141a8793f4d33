"""The README cannot drift: its settings table, SQL examples, curl bodies and Python
snippets are checked against the real thing."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from istore.cli import main
from service.settings import Settings
from tests.conftest import ROOT, interaction

README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        var = f"ISTORE_{name.upper()}"
        row = next((line for line in README.splitlines() if line.startswith(f"| `{var}`")), None)
        assert row is not None, f"{var} is not in the README's configuration table"
        assert field.description and field.description in row


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    src = tmp_path / "in.ndjson"
    rows = [interaction(i, model=("a", "b")[i % 2], latency_ms=100.0 + i) for i in range(30)]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert CliRunner().invoke(main, ["import", "--data", str(data), str(src)]).exit_code == 0
    return data


def test_readme_sql_examples_run(sample_store: Path) -> None:
    commands = []
    for block in blocks("bash"):
        for cmd in re.findall(r'^istore sql "(.*?)"', block, flags=re.S | re.M):
            if "…" not in cmd:  # the synopsis, not an example
                commands.append(cmd.replace("\\$", "$"))
    assert len(commands) >= 4
    for sql in commands:
        r = CliRunner().invoke(main, ["sql", "--data", str(sample_store), sql])
        assert r.exit_code == 0, f"{sql}\n{r.output}"


def test_readme_python_snippets_run(sample_store: Path) -> None:
    snippets = blocks("python")
    assert len(snippets) >= 2
    cwd = os.getcwd()
    os.chdir(sample_store.parent)
    try:
        for code in snippets:
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    finally:
        os.chdir(cwd)


async def test_readme_curl_bodies_are_accepted(client: httpx.AsyncClient) -> None:
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
            r = await client.post("/api/v1/sql", json=orjson.loads(m.group(1)))
            assert r.status_code == 200, r.text
    gets = 0
    for block in blocks("bash"):
        for m in re.finditer(r"curl -s '(http://127\.0\.0\.1:8080)?(/api/v1/[^']*)'( -H)?", block):
            url = m.group(2)
            if "<" not in url and not m.group(3):
                r = await client.get(url)
                assert r.status_code == 200, r.text
                gets += 1
    assert gets >= 5
    for block in blocks("bash"):
        for m in re.finditer(r"interactions/query -H 'content-type: application/json' -d '(.*?)'",
                             block, re.S):  # fmt: skip
            r = await client.post("/api/v1/interactions/query", json=orjson.loads(m.group(1)))
            assert r.status_code == 200, r.text


def test_quickstart_has_exactly_the_two_commands() -> None:
    quick = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert [shlex.split(line)[:2] for line in block.strip().splitlines()] == [
        ["make", "serve"],
        ["make", "test"],
    ]
