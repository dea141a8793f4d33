"""OpenTelemetry ingest over OTLP/HTTP: ``POST /v1/traces``, ``POST /v1/logs`` and the
Langfuse SDK's ``POST /api/public/otel/v1/traces``.

HTTP only: auth, body limits, the response in the request's encoding. Decoding and
mapping are ``ingest.otlp``; joining a call's span with its log records and keeping
what waits durable is ``ingest.otlp.join.Receiver`` (one per app, started with it).

Auth: ``Authorization: Bearer <key>`` (``OTEL_EXPORTER_OTLP_HEADERS``), or HTTP Basic
whose password is the key (the Langfuse SDK sends ``public_key:secret_key``; the gate,
``api.guard``, reads it so before the body), scope ``ingest``. A key limited to some
use cases: calls of other use cases are refused one by one in ``partial_success``;
when every LLM call of a request is refused that way the answer is 403 instead, so
that an exporter's log shows it (exporters do not log ``partial_success``). 200 means
durable, as everywhere."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.responses import Response

from api import guard
from api.body import read_body
from ingest import pipeline
from ingest.otlp import decode
from ingest.otlp.join import Receiver
from ingest.otlp.mapping import LOG_EVENTS
from ingest.otlp.pieces import Extracted, from_logs, from_spans
from service.keys import Principal
from service.settings import Settings
from store.ack import wait
from store.engine import Store
from store.errors import Forbidden, PayloadTooLarge, Unavailable

log = logging.getLogger("istore.otlp")
router = APIRouter(tags=["opentelemetry"])

_INLINE_BYTES = 64 << 10  # larger bodies are decoded off the event loop


def _body_doc(message: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"An OTLP {message} (protobuf or OTLP/JSON; gzip or deflate).",
            "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    }


async def persist(store: Store, items: list[dict[str, Any]]) -> None:
    """The one place OTLP interactions are written (the ingest pipeline): durable when
    this returns. Use cases were checked per call before (``ingest.otlp.pieces``)."""
    await wait(pipeline.submit(store, items, source="otlp").ack)


async def start_receiver(state: State, settings: Settings) -> Receiver | None:
    """The app's receiver, its log in ``<write-ahead log folder>/otlp`` (under the
    store's lock, like the store's own log); None for a read-only store."""
    store: Store = state.store
    if not store.writable:
        return None

    async def write(items: list[dict[str, Any]]) -> None:
        await persist(store, items)

    receiver = Receiver(store.wal_dir / "otlp", join_s=settings.otlp_join_s, persist=write,
                        max_pending_bytes=settings.max_pending_bytes)  # fmt: skip
    await receiver.start()
    return receiver


def principal_of(request: Request) -> Principal:
    """The caller, as the gate (``api.guard``) authenticated it before the body was
    read (there, HTTP Basic's password stands for the key on these paths)."""
    principal = guard.principal_of(request.scope)
    if principal is None:  # not through the gate (a bare router in a test)
        principal = request.app.state.keys.authenticate(
            guard.basic_as_bearer(request.headers.get("authorization"))
        )
    principal.require("ingest")
    request.state.principal = principal
    return principal


async def _export(request: Request, kind: str) -> Response:
    principal = principal_of(request)
    state = request.app.state
    settings: Settings = state.settings
    receiver: Receiver | None = getattr(state, "otlp", None)
    if receiver is None:
        raise Unavailable("this server does not take writes (read-only store)", retry_after=60)
    enc = decode.encoding(request.headers.get("content-type"))
    body = await read_body(request, settings.max_body_bytes)
    allowed = sorted(principal.use_cases) if principal.use_cases is not None else None

    def work() -> Extracted:
        limits = settings.limits()
        if kind == "traces":
            msg = decode.parse(body, enc, decode.ExportTraceServiceRequest)
            # Counted before anything is made of them (cheap: lengths of repeated fields).
            _check_count(sum(len(ss.spans) for rs in msg.resource_spans  # type: ignore[attr-defined]
                             for ss in rs.scope_spans), limits.max_items, "spans")  # fmt: skip
            decoded = decode.spans(msg)  # type: ignore[arg-type]
            _check_count(decoded.total, limits.max_items, "spans")
            return from_spans(decoded, limits, allowed)
        msg = decode.parse(body, enc, decode.ExportLogsServiceRequest)
        _check_count(sum(len(sl.log_records) for rl in msg.resource_logs  # type: ignore[attr-defined]
                         for sl in rl.scope_logs), limits.max_items, "log records")  # fmt: skip
        decoded = decode.logs(msg, LOG_EVENTS)  # type: ignore[arg-type]
        _check_count(decoded.total, limits.max_items, "log records")
        return from_logs(decoded, limits, allowed)

    got = await run_in_threadpool(work) if len(body) > _INLINE_BYTES else work()
    if got.forbidden and got.forbidden == got.calls:
        raise Forbidden(
            f"this API key may not write the use cases of these calls ({got.rejected[0]})",
            code="use_case_forbidden",
        )
    receiver.refuse(got.refused)
    got.rejected += await receiver.submit(got.pieces)
    message = ""
    if got.rejected:
        more = f" (and {len(got.rejected) - 1} more)" if len(got.rejected) > 1 else ""
        message = got.rejected[0] + more
        log.warning("OTLP %s: %d rejected: %s", kind, len(got.rejected), message)
    data, ctype = decode.response(kind, len(got.rejected), message, enc)
    return Response(data, media_type=ctype)


def _check_count(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise PayloadTooLarge(
            f"the request holds {n} {what}; at most {limit} are accepted per request "
            "(ISTORE_MAX_BATCH_ITEMS): lower the exporter's batch size",
            param="body",
        )


@router.post("/v1/traces", summary="OTLP/HTTP traces (LLM-call spans become interactions)",
             openapi_extra=_body_doc("ExportTraceServiceRequest"))  # fmt: skip
async def traces(request: Request) -> Response:
    return await _export(request, "traces")


@router.post("/v1/logs", summary="OTLP/HTTP logs (GenAI events join their spans)",
             openapi_extra=_body_doc("ExportLogsServiceRequest"))  # fmt: skip
async def logs(request: Request) -> Response:
    return await _export(request, "logs")


@router.post("/api/public/otel/v1/traces", summary="OTLP/HTTP traces at the Langfuse SDK's path",
             openapi_extra=_body_doc("ExportTraceServiceRequest"))  # fmt: skip
async def langfuse_traces(request: Request) -> Response:
    return await _export(request, "traces")
