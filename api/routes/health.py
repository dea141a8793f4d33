"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.body import JSONResponse
from api.errors import error_response
from api.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
def readyz(request: Request) -> Response:
    store = request.app.state.store
    status = store.status()
    problem = status["wal_error"] or status["flush_error"]
    if status["wal_error"]:
        return error_response(
            503, f"the write-ahead log cannot be written: {problem}", headers={"Retry-After": "5"}
        )
    state = request.app.state
    gateway = {**state.gateway.status(), **state.gateway_stats.as_dict()}
    job = state.maintenance
    return JSONResponse(
        {
            "status": "degraded" if problem else "ready",
            **status,
            "gateway": gateway,
            "maintenance": job.status() if job is not None else None,
        }
    )


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def prometheus(request: Request) -> Response:
    # On the event loop, where the request counters are written: no concurrent change.
    return Response(render(request.app.state.metrics_registry), media_type=CONTENT_TYPE)
