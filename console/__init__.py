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

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/", 307, headers=HEADERS)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", 307, headers=HEADERS)

    @app.get("/ui/static/{name:path}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in ASSETS.files:
            return Response("not found", 404, media_type="text/plain", headers=HEADERS)
        return ASSETS.response(name, request.query_params.get("v"))

    @app.api_route("/ui/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)  # fmt: skip
    async def not_found(request: Request, rest: str) -> Response:
        from console.render import page
        from store.errors import NotFound

        error = NotFound(f"no page {request.url.path}")
        return page(request, None, "error.html", status=404, error=error, fragment=False,
                    links=pages.Links([]))  # fmt: skip
