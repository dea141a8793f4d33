"""The FastAPI application factory. HTTP only: routes call ``store``/``ingest``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import console
from api import docs, errors, metrics
from api.body import JSONResponse
from api.fastlane import FastLaneApp
from api.guard import Gate
from api.routes import (
    analytics,
    chat,
    completions,
    curation,
    export,
    feedback,
    health,
    interactions,
    lifecycle,
    otlp,
    sql,
)
from gateway.chat import GatewayStats
from gateway.config import RoutingFile
from gateway.upstream import Upstreams
from service.keys import KeyRing, usage_saver
from service.maintenance import MaintenanceJob
from service.settings import Settings
from store.engine import Store
from store.errors import StoreError
from store.reader import Reader
from store.version import VERSION

log = logging.getLogger("istore.api")


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the app. With ``store`` the caller owns it; otherwise the app opens the
    data root on start-up and closes it (flushing) on shut-down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = store or settings.open_store()
        app.state.store = st
        app.state.reader = Reader(st)
        stop_usage = threading.Event()
        st.api_keys().watch(stop_usage)  # object storage: re-read every few seconds
        app.state.keys = KeyRing(st.api_keys())
        app.state.gate = Gate(app.state.keys, settings.host, settings.allowed_hosts,
                              settings.max_body_bytes)  # fmt: skip
        app.state.metrics_registry = metrics.registry(app.state)
        job = None
        if st.writable and settings.maintenance_interval_s > 0:
            job = MaintenanceJob(st, settings.maintenance_interval_s,
                                 settings.vacuum_retention_hours,
                                 compact_interval_s=settings.compaction_interval_s)  # fmt: skip
            job.start()
        app.state.maintenance = job
        reload_on_hup = _on_sighup(app.state.gateway)
        usage_saver(app.state.keys, stop_usage)
        app.state.otlp = await otlp.start_receiver(app.state, settings)
        try:
            yield
        finally:
            stop_usage.set()
            if app.state.otlp is not None:
                await app.state.otlp.close()
            if job is not None:
                # A pass stops between its steps; one still in a long Delta operation
                # is left behind (it holds nothing the final flush needs), so SIGTERM
                # exits within ISTORE_SHUTDOWN_TIMEOUT_S plus the final flush.
                job.stop(timeout=min(5.0, settings.shutdown_timeout_s))
            reload_on_hup()
            await app.state.upstreams.close()
            with contextlib.suppress(OSError, StoreError):
                app.state.keys.save_usage()
            if own:
                st.close()

    app = FastLaneApp(
        title="interaction-store",
        version=VERSION,
        description="Self-hosted interaction store for LLM applications.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,  # api.docs serves /docs from our own origin (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.gateway = RoutingFile(settings.gateway_config)
    app.state.upstreams = Upstreams()
    app.state.gateway_stats = GatewayStats()
    app.state.request_metrics = metrics.RequestMetrics()
    app.state.started = time.monotonic()
    errors.install(app)
    docs.install(app)
    app.include_router(health.router)
    # Before interactions: /interactions/stats and /query are not interaction ids.
    app.include_router(analytics.router, prefix="/api/v1")
    app.include_router(lifecycle.router, prefix="/api/v1")
    app.include_router(curation.router, prefix="/api/v1")  # /interactions/labels: before {id}
    app.include_router(interactions.router, prefix="/api/v1")
    app.include_router(feedback.router, prefix="/api/v1")
    app.include_router(sql.router, prefix="/api/v1")
    app.include_router(export.router, prefix="/api/v1")
    app.include_router(chat.router)  # /api/v1 and /v1 chat/completions (the gateway)
    app.include_router(completions.router)  # under /api/v1 and /v1 (OpenAI clients)
    app.include_router(otlp.router)  # OTLP/HTTP: /v1/traces, /v1/logs, Langfuse's path
    console.install(app)  # the web console at /ui/ (HTML; not in the OpenAPI document)
    _add_body_schemas(app)
    return app


def _on_sighup(routing: RoutingFile) -> Callable[[], None]:
    """Reload the gateway's routing file on SIGHUP; returns the undo."""
    if routing.path is None:
        return lambda: None
    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, routing.reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return lambda: None

    def undo() -> None:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGHUP)

    return undo


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _document_errors(schema: dict[str, Any]) -> None:
    """Every operation's errors have the one error shape (FastAPI would document its
    own ``HTTPValidationError`` for 422, which this API never sends)."""
    components = schema["components"]["schemas"]
    components["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for status, resp in list(responses.items()):
                if status[0] in "45":
                    resp["content"] = error
                for media in resp.get("content", {}).values():
                    # Routes returning a Response document no model: any JSON, not "string".
                    if media.get("schema") == {"type": "string"} and status[0] == "2":
                        media["schema"] = {}
            responses["default"] = {"description": "An error (4xx, 5xx)", "content": error}


def _add_body_schemas(app: FastAPI) -> None:
    """Routes that read their body raw (NDJSON, size limits) still document it."""
    from api.routes.chat import ChatRequest
    from ingest.feedback import ComparisonIn, FeedbackIn, OutcomeIn
    from ingest.models import InteractionIn

    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for cls in (InteractionIn, FeedbackIn, ComparisonIn, OutcomeIn, ChatRequest):
            model = cls.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model.pop("$defs", {}))
            components[cls.__name__] = model
        _document_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
