"""``GET /docs``: Swagger UI over ``/openapi.json``, from the server's own origin.

FastAPI's default page loads Swagger UI from a CDN; on a machine without internet
access it stays blank. The assets are vendored in ``api/static/swagger`` (npm
``swagger-ui-dist``, pinned, license kept; see its README) and served under
``/docs/static``; Swagger UI's online validator badge (another origin) is off."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = Path(__file__).resolve().parent / "static" / "swagger"
STATIC_PATH = "/docs/static"


def install(app: FastAPI) -> None:
    """``/docs`` and its assets (call with ``docs_url=None, redoc_url=None``)."""

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        static = f"{root}{STATIC_PATH}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{static}/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_route("/docs", docs, include_in_schema=False)
    app.mount(STATIC_PATH, StaticFiles(directory=ASSETS), name="swagger-ui")
