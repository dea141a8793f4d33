"""Spans and log records of one LLM call → one canonical interaction dict (the shape
``ingest.normalize.build_batch`` takes), whichever convention produced them.

Rules (the contract's "OpenTelemetry ingest"): ``model`` is the request model where
the span has one, else the response model; ``latency_ms`` the span's duration;
``status = "error"`` with the span's status message on failure; labels ``trace_id``,
``span_id``, ``service.name``, the call's metadata keys and ``tag.<name>=true``;
``use_case`` from ``istore.use_case`` (span, then resource), else a metadata key
``use_case``, else ``service.name``, else ``default``, made a valid key. The id is a
function of trace id and span id only, so every piece of a call, whenever it comes,
names the same interaction and a retried export stores nothing twice.

Everything here is pure: records in, an interaction (or ``Rejected``) out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.models import MAX_MS, check_labels
from ingest.otlp import genai, langfuse, openinference
from ingest.otlp.common import as_text
from ingest.parse import Limits, check_limits
from store.errors import ValidationFailed

GENAI, OPENINFERENCE, LANGFUSE = "genai", "openinference", "langfuse"
LOG_EVENTS = genai.EVENTS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")
STATUS_ERROR = 2


class Rejected(ValueError):
    """A record that cannot become (part of) an interaction; the message says why."""


def interaction_id(trace_id: str, span_id: str) -> str:
    return f"otlp-{trace_id}-{span_id}"


def convention(span: dict[str, Any]) -> str | None:
    """The convention of an LLM-call span; None for every other span."""
    attrs = span["attrs"]
    if langfuse.is_langfuse(span):
        return LANGFUSE if langfuse.is_llm(span) else None
    if openinference.is_openinference(attrs):
        return OPENINFERENCE if openinference.is_llm(attrs) else None
    if genai.is_llm(attrs):
        return GENAI
    return None


def complete(span: dict[str, Any] | None, logs: list[dict[str, Any]]) -> bool:
    """Whether nothing more is expected for this call: then it is written at once;
    otherwise it waits for its other pieces, at most ``ISTORE_OTLP_JOIN_S``."""
    if span is None:
        return False
    conv = convention(span)
    if conv != GENAI or genai.has_content(span["attrs"]):
        return True
    if genai.is_legacy(span):
        return genai.legacy_complete(span, logs)
    return any(r["event_name"] == genai.DETAILS for r in logs)


def span_fields(span: dict[str, Any]) -> dict[str, Any]:
    conv = convention(span)
    if conv == LANGFUSE:
        return langfuse.fields(span)
    if conv == OPENINFERENCE:
        return openinference.fields(span)
    return genai.fields(span["attrs"])


def valid_key(v: str) -> str:
    key = _BAD_KEY_CHARS.sub("-", v).lstrip("-_.")[:128]
    return key or "default"


def use_case(span_or_log: dict[str, Any], metadata: dict[str, str] | None) -> str:
    attrs, resource = span_or_log["attrs"], span_or_log["resource"]
    for v in (attrs.get("istore.use_case"), resource.get("istore.use_case"),
              (metadata or {}).get("use_case"), resource.get("service.name")):  # fmt: skip
        if isinstance(v, str) and v.strip():
            return valid_key(v.strip())
    return "default"


def _time(ns: int) -> datetime | None:
    if not ns:
        return None
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _ms(v: float | None) -> float | None:
    return v if v is not None and 0 <= v <= MAX_MS else None


def _error(span: dict[str, Any] | None, f: dict[str, Any]) -> str | None:
    msg = f.get("error")
    if span is not None:
        msg = msg or span["status"]["message"] or None
        for e in span["events"]:
            if e["name"] == "exception" and not msg:
                msg = as_text(e["attrs"].get("exception.message"))
    return msg or f.get("error_type") or "error"


def interaction(
    span: dict[str, Any] | None, logs: list[dict[str, Any]], limits: Limits | None = None
) -> dict[str, Any]:
    """The interaction of one call. ``span`` may be missing (its log records waited
    for it in vain); ``logs`` are its GenAI log records. Raises Rejected."""
    first = span if span is not None else min(logs, key=lambda r: r["time_ns"])
    f: dict[str, Any] = span_fields(span) if span is not None else {}
    if logs:
        for k, v in genai.from_events(logs).items():
            if f.get(k) is None:
                f[k] = v
    trace_id, span_id = first["trace_id"], first["span_id"]
    metadata: dict[str, str] = dict(f.get("metadata") or {})
    labels: dict[str, str] = {"trace_id": trace_id, "span_id": span_id}
    service = first["resource"].get("service.name")
    if isinstance(service, str) and service:
        labels["service.name"] = service
    labels.update(metadata)
    for tag in f.get("tags") or ():
        if tag:
            labels[f"tag.{tag}"] = "true"
    if span is not None and span.get("dropped_attrs"):
        labels["otlp.dropped_attributes"] = str(span["dropped_attrs"])
    try:
        check_labels(labels)
    except ValueError as exc:
        raise Rejected(f"labels: {exc}") from None
    failed = bool(f.get("is_error"))
    failed = failed or (span is not None and span["status"]["code"] == STATUS_ERROR)
    latency = None
    if span is not None and span["end_ns"] >= span["start_ns"] > 0:
        latency = (span["end_ns"] - span["start_ns"]) / 1e6
    created = _time(span["start_ns"] if span is not None else first["time_ns"])
    item = {
        "id": interaction_id(trace_id, span_id),
        "use_case": use_case(first, metadata),
        "model": f.get("model"),
        "messages": f.get("messages") or [],
        "completion": f.get("completion"),
        "labels": labels,
        "user": f.get("user"),
        "session_id": f.get("session_id"),
        "ab_campaign": None,
        "created_at": created,
        "usage": f.get("usage"),
        "latency_ms": _ms(latency),
        "ttft_ms": _ms(f.get("ttft_ms")),
        "params": f.get("params"),
        "status": "error" if failed else "ok",
        "error": _error(span, f) if failed else None,
        "feedbacks": [],
    }
    if limits is not None:
        try:
            check_limits(item, limits, "")
        except ValidationFailed as exc:
            raise Rejected(exc.message) from None
    return item


def log_use_case(rec: dict[str, Any]) -> str:
    return use_case(rec, None)
