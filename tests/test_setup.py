"""What `make serve` installs and serves: the runtime dependencies are enough, and the
API docs load nothing from another origin (they work offline)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from urllib.parse import urljoin, urlsplit

import httpx

from tests.conftest import ROOT

# The dev extra's distributions and their import names, which `make serve` does not install.
DEV_ONLY = {
    "pytest": "pytest", "pytest-asyncio": "pytest_asyncio", "hypothesis": "hypothesis",
    "httpx": "httpx", "ruff": "ruff", "mypy": "mypy", "adaptive-sdk": "adaptive_sdk",
    "openai": "openai", "requests": "requests", "schemathesis": "schemathesis",
    "psycopg": "psycopg", "chdb": "chdb", "moto": "moto", "flask": "flask",
    "flask-cors": "flask_cors", "import-linter": "importlinter",
}  # fmt: skip


def test_the_dev_extra_is_what_this_test_blocks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = {re.split(r"[\[<>=]", d)[0].strip() for d in project["optional-dependencies"]["dev"]}
    assert dev == set(DEV_ONLY)


def test_the_server_and_the_sample_need_no_dev_extra(tmp_path: object) -> None:
    """Import what `istore serve --load-sample-if-empty` runs, with every dev-only
    package made unimportable: a runtime import of one would break `make serve`."""
    code = f"""
import sys
BLOCKED = {tuple(DEV_ONLY.values())!r}
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
