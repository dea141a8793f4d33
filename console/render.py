"""Templates, static assets and HTML responses for the console.

Jinja2 autoescapes every template (``autoescape=True`` for all names), so every string
a template prints is escaped; nothing is marked safe except the JSON of chart data,
which ``tojson`` escapes for a ``<script type="application/json">`` block (``<``, ``>``,
``&`` and quotes as ``\\u…``). No markdown is rendered: texts are shown as they were
stored (``white-space: pre-wrap``), which is also what a fine-tuning set holds.

Static files are read once from the package, served only by name from that list, and
addressed with a content hash (``?v=``) so browsers may cache them for a year."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response

from console.security import CSRF_COOKIE, HEADERS, Viewer, cookie_args

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class Assets:
    """The package's static files: name → (bytes, media type, short hash)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(STATIC.rglob("*")):
            media = _TYPES.get(path.suffix)
            if path.is_file() and media:
                data = path.read_bytes()
                name = path.relative_to(STATIC).as_posix()
                self.files[name] = (data, media, hashlib.sha256(data).hexdigest()[:12])

    def url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.files[name][2]}"

    def response(self, name: str, version: str | None) -> Response:
        data, media, digest = self.files[name]
        cache = "public, max-age=31536000, immutable" if version == digest else "no-cache"
        headers = {**HEADERS, "Cache-Control": cache, "ETag": f'"{digest}"'}
        return Response(data, media_type=media, headers=headers)


ASSETS = Assets()


def _qs(params: list[tuple[str, str]] | dict[str, Any]) -> str:
    return urlencode(list(params.items()) if isinstance(params, dict) else params)


def _time(iso: str | None) -> str:
    if not iso:
        return ""
    return iso.replace("T", " ")[:19]


def _num(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or digits == 0:
        return f"{round(x):,}"
    return f"{x:,.{digits}f}"


def _json(x: Any) -> str:
    return orjson.dumps(x, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals["asset"] = ASSETS.url
ENV.filters["qs"] = _qs
ENV.filters["time"] = _time
ENV.filters["num"] = _num
ENV.filters["pretty"] = _json


def page(
    request: Request,
    v: Viewer | None,
    template: str,
    status: int = 200,
    **context: Any,
) -> Response:
    """A rendered template with the console's headers. In open mode a visitor without
    the CSRF cookie gets one (the token the page's forms carry)."""
    new_token = None
    if v is not None and not v.session and not v.csrf:
        new_token = secrets.token_urlsafe(24)
        v = Viewer(v.principal, new_token, session=False)
    html = ENV.get_template(template).render(
        request=request, v=v, path=request.url.path, now=datetime.now(UTC), status=status,
        **context,
    )  # fmt: skip
    resp = HTMLResponse(html, status_code=status, headers=HEADERS)
    if new_token is not None:
        resp.set_cookie(CSRF_COOKIE, new_token, **cookie_args(request))
    return resp
