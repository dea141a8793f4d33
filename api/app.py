"""The FastAPI application factory. HTTP only: routes call ``store``/``ingest``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.body import JSONResponse
from api.fastlane import IngestFastLane
from api.routes import health, interactions, sql
from api.settings import Settings
from store.engine import Store
from store.reader import Reader

log = logging.getLogger("istore.api")


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the app. With ``store`` the caller owns it; otherwise the app opens the
    data root on start-up and closes it (flushing) on shut-down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = store or Store(settings.data, options=settings.store_options())
        app.state.store = st
        app.state.reader = Reader(st)
        if st.recovery.cut_bytes:
            log.warning(
                "recovery cut %d corrupt bytes from the write-ahead log (%s)",
                st.recovery.cut_bytes,
                ", ".join(st.recovery.cut_segments),
            )
        try:
            yield
        finally:
            if own:
                st.close()

    app = FastAPI(
        title="interaction-store",
        version="0.1.0",
        description="Self-hosted interaction store for LLM applications.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(IngestFastLane)
    app.include_router(health.router)
    app.include_router(interactions.router, prefix="/api/v1")
    app.include_router(sql.router, prefix="/api/v1")
    _add_body_schemas(app)
    return app


def _add_body_schemas(app: FastAPI) -> None:
    """Routes that read their body raw (NDJSON, size limits) still document it."""
    from typing import Any

    from ingest.models import InteractionIn

    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        model = InteractionIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(model.pop("$defs", {}))
        components["InteractionIn"] = model
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
