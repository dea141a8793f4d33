"""What `make serve` installs and serves: the runtime dependencies are enough, and the
API docs load nothing from another origin (they work offline)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` pull in (installed ones, extras followed)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in needs:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras):
                todo.append(sub)
            elif sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def dev_only_imports() -> set[str]:
    """Top-level import names that only the dev extra installs: those of distributions
    the dev extra pulls in and the runtime dependencies do not (whatever else provides
    the same name, e.g. the ``opentelemetry`` namespace, is left importable)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _closure(project["dependencies"])
    dev = _closure(project["optional-dependencies"]["dev"]) - runtime
    blocked = set()
    for name, dists in metadata.packages_distributions().items():
        owners = {canonicalize_name(d) for d in dists}
        if owners & dev and not owners & runtime:
            blocked.add(name)
    return blocked


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_the_dev_extra_is_blocked() -> None:
    blocked = dev_only_imports()
    assert {"pytest", "httpx", "hypothesis", "schemathesis", "moto", "chdb", "psycopg",
            "openai", "playwright", "importlinter"} <= blocked  # fmt: skip
    assert not blocked & {"duckdb", "pyarrow", "polars", "fastapi", "opentelemetry", "jinja2"}


@pytest.mark.slow  # a live server or a long property run: `make test` only
def test_the_server_and_the_sample_need_no_dev_extra(tmp_path: object) -> None:
    """Import what `istore serve --load-sample-if-empty` runs, with every dev-only
    package made unimportable: a runtime import of one would break `make serve`."""
    code = f"""
import sys
BLOCKED = {tuple(sorted(dev_only_imports()))!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError('dev-only package imported at runtime: ' + name)
sys.meta_path.insert(0, Block())
import istore.cli, api.app, api.docs, gateway.chat, ingest.importer, store.reader, store.export
import sample_data.sample
from service.settings import Settings
api.app.create_app(Settings(data={str(tmp_path)!r}))
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


async def test_docs_load_nothing_from_another_origin(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", html)  # the OpenAPI document
    assert len(urls) >= 4, html
    base = str(client.base_url) + "/docs"
    for url in urls:
        absolute = urljoin(base, url)
        assert urlsplit(absolute).netloc == urlsplit(base).netloc, url
        got = await client.get(absolute)
        assert got.status_code == 200, url
        assert got.content, url
    assert "https://" not in html and "http://" not in html, html
    assert '"validatorUrl": null' in html  # the online validator badge is another origin
    js = await client.get("/docs/static/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"] and len(js.content) > 500_000
    r = await client.get("/redoc")
    assert r.status_code == 404  # its page would load ReDoc from a CDN


def test_the_vendored_assets_are_installed_with_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "api.static.swagger" in project["tool"]["setuptools"]["packages"]
    assert project["tool"]["setuptools"]["package-data"]["api.static.swagger"] == ["*"]
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"):
        assert (ROOT / "api" / "static" / "swagger" / name).is_file(), name
