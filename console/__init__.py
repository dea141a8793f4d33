"""The web console: server-rendered pages at ``/ui/`` over the same code as the API.

``install(app)`` adds its routes to the API's app (``api.app.create_app``): the pages
(``console.pages``), the writes and downloads (``console.actions``), its static files,
and ``/`` → ``/ui/``. It sits beside ``api`` at the top layer: it imports ``api``,
``gateway``, ``ingest`` and ``store``; nothing imports it but ``api.app``.

Security invariants (``console.security``): every response carries a strict
Content-Security-Policy (only this origin, no inline script or style); every write
checks origin, CSRF token and the API scope; every string is escaped by Jinja2."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from console.render import ASSETS
from console.security import HEADERS


def install(app: FastAPI) -> None:
    from console import actions, pages

    app.include_router(actions.router)
    app.include_router(pages.router)

    everything = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

    @app.api_route("/", methods=everything, include_in_schema=False)
    @app.api_route("/ui", methods=everything, include_in_schema=False)
    async def root(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _error(request, 405, f"{request.method} is not allowed here")
        return RedirectResponse("/ui/", 307, headers=HEADERS)

    @app.get("/ui/static/{name:path}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in ASSETS.files:
            return _error(request, 404, f"no file {name!r}")
        return ASSETS.response(name, request.query_params.get("v"))

    @app.api_route("/ui/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)  # fmt: skip
    async def not_found(request: Request, rest: str) -> Response:
        return _error(request, 404, f"no page {request.url.path}")


def _error(request: Request, status: int, message: str) -> Response:
    from console.pages import Links
    from console.render import page
    from store.errors import InvalidRequest, NotFound

    error = NotFound(message) if status == 404 else InvalidRequest(message)
    return page(request, None, "error.html", status=status, error=error, fragment=False,
                links=Links([]))  # fmt: skip
