"""OTLP/HTTP request bodies → plain records: one dict per span and per log record.

Decoding is the ``opentelemetry-proto`` messages' own (protobuf; OTLP/JSON through
protobuf's ``json_format`` once its hex ids are turned into the base64 that
``json_format`` expects: it would otherwise read a 32-hex-digit trace id as base64 and
make 24 bytes of it). Nothing here parses protobuf by hand.

Invariants of a record:
- every value is JSON-native (str, int, float, bool, None, list, dict), so a record
  can go to the receiver's log as JSON and come back equal; ``bytes`` values become
  base64 text and non-finite doubles become None;
- ``trace_id``/``span_id`` are lowercase hex, checked for length (16 and 8 bytes) and
  for not being all zeros; a record that fails is rejected on its own
  (``partial_success``), never the request;
- an attribute nested deeper than ``MAX_DEPTH`` rejects its record.
Errors that make the whole body unusable (not protobuf, not OTLP/JSON, an id that is
not hex) raise ``InvalidRequest`` (400), another content type ``UnsupportedMediaType``."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from store.errors import InvalidRequest

MAX_DEPTH = 32
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf", "application/octet-stream", ""})
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

Record = dict[str, Any]


class TooDeep(ValueError):
    pass


@dataclass
class Decoded:
    """The records of one request, and the ones refused (with why)."""

    records: list[Record] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    total: int = 0


def encoding(content_type: str | None) -> str:
    """``PROTOBUF`` or ``JSON``, or InvalidRequest naming what is accepted."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in _PROTOBUF_TYPES:
        return PROTOBUF
    if ctype == JSON:
        return JSON
    raise InvalidRequest(
        f"Content-Type {ctype!r} is not OTLP/HTTP: send application/x-protobuf or application/json",
        param="content-type",
    )


def parse(body: bytes, enc: str, message: type[Message]) -> Message:
    """A request message from its protobuf or OTLP/JSON bytes."""
    what = message.DESCRIPTOR.name
    if enc == PROTOBUF:
        try:
            return message.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise InvalidRequest(
                f"the body is not a protobuf {what} ({exc}; strings must be UTF-8, nesting "
                "at most 100 levels)",
                param="body",
            ) from None
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", param="body") from None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"the body must be an OTLP/JSON {what} object", param="body")
    _hex_ids(raw)
    msg = message()
    try:
        json_format.ParseDict(raw, msg, ignore_unknown_fields=True, max_recursion_depth=64)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise InvalidRequest(f"the body is not an OTLP/JSON {what}: {exc}", param="body") from None
    return msg


_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_CONTAINERS = {
    "resourceSpans": "scopeSpans", "resource_spans": "scope_spans",
    "resourceLogs": "scopeLogs", "resource_logs": "scope_logs",
}  # fmt: skip
_ITEMS = {"scopeSpans": "spans", "scope_spans": "spans",
          "scopeLogs": "logRecords", "scope_logs": "log_records"}  # fmt: skip


def _hex_ids(raw: dict[str, Any]) -> None:
    """OTLP/JSON ids are hex; ``json_format`` reads bytes fields as base64."""
    for outer, inner in _CONTAINERS.items():
        for i, res in enumerate(_list(raw.get(outer))):
            for j, scope in enumerate(_list(_get(res, inner))):
                items = _ITEMS[inner]
                for k, item in enumerate(_list(_get(scope, items))):
                    where = f"{outer}[{i}].{inner}[{j}].{items}[{k}]"
                    if isinstance(item, dict):
                        _fix(item, where)
                        for n, link in enumerate(_list(item.get("links"))):
                            if isinstance(link, dict):
                                _fix(link, f"{where}.links[{n}]")


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _get(v: Any, key: str) -> Any:
    return v.get(key) if isinstance(v, dict) else None


def _fix(item: dict[str, Any], where: str) -> None:
    for key in _ID_KEYS:
        v = item.get(key)
        if not isinstance(v, str) or not v:
            continue
        try:
            item[key] = base64.b64encode(bytes.fromhex(v)).decode()
        except ValueError:
            raise InvalidRequest(
                f"{where}.{key}: {v[:40]!r} is not hex (OTLP/JSON ids are hex digits)",
                param=f"{where}.{key}",
            ) from None


def value(v: AnyValue, depth: int = 0) -> Any:
    """An AnyValue as a JSON-native Python value."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else None
    if depth >= MAX_DEPTH:
        raise TooDeep(f"a value is nested deeper than {MAX_DEPTH} levels")
    if kind == "array_value":
        return [value(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")  # the common scalar kinds inline: the hot loop
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = v.int_value
        else:
            out[kv.key] = value(v)
    return out


def _ids(trace: bytes, span: bytes) -> tuple[str, str, str | None]:
    """Hex ids, and why they are unusable (None when they are fine)."""
    t, s = trace.hex(), span.hex()
    if len(trace) != 16 or t == _ZERO_TRACE:
        return t, s, f"traceId must be 16 bytes and not all zero, got {len(trace)} bytes"
    if len(span) != 8 or s == _ZERO_SPAN:
        return t, s, f"spanId must be 8 bytes and not all zero, got {len(span)} bytes"
    return t, s, None


# What of a resource and a scope the mapping reads. Only these are kept: every record
# carries them, so a large resource must not be copied into each of 10,000 records (and
# into the log the receiver keeps while a call's pieces wait for each other).
RESOURCE_KEYS = ("istore.use_case", "service.name")
_KEPT_CHARS = 1024


def _kept(v: Any) -> Any:
    return v[:_KEPT_CHARS] if isinstance(v, str) else None


def _resource(attrs: Any) -> dict[str, Any]:
    keys = {kv.key: kv for kv in attrs if kv.key in RESOURCE_KEYS}
    return {k: _kept(v) for k, v in attributes(list(keys.values())).items()}


def _scope(scope: Any) -> dict[str, Any]:
    return {"name": scope.name[:_KEPT_CHARS], "version": scope.version[:_KEPT_CHARS]}


def spans(request: ExportTraceServiceRequest) -> Decoded:
    out = Decoded()
    for rs in request.resource_spans:
        try:
            resource = _resource(rs.resource.attributes)
        except TooDeep as exc:
            n = sum(len(ss.spans) for ss in rs.scope_spans)
            out.total += n
            out.rejected.extend([f"resource attributes: {exc}"] * n)
            continue
        for ss in rs.scope_spans:
            try:
                scope = _scope(ss.scope)
            except TooDeep as exc:
                out.total += len(ss.spans)
                out.rejected.extend([f"scope attributes: {exc}"] * len(ss.spans))
                continue
            for span in ss.spans:
                out.total += 1
                t, s, bad = _ids(span.trace_id, span.span_id)
                where = f"span {span.name!r} ({t}/{s})"
                if bad:
                    out.rejected.append(f"{where}: {bad}")
                    continue
                try:
                    rec = {
                        "kind": "span",
                        "trace_id": t,
                        "span_id": s,
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "span_kind": span.kind,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attrs": attributes(span.attributes),
                        "dropped_attrs": span.dropped_attributes_count,
                        "events": [
                            {
                                "name": e.name,
                                "time_ns": e.time_unix_nano,
                                "attrs": attributes(e.attributes),
                            }
                            for e in span.events
                        ],  # fmt: skip
                        "status": {"code": span.status.code, "message": span.status.message},
                        "resource": resource,
                        "scope": scope,
                    }
                except TooDeep as exc:
                    out.rejected.append(f"{where}: {exc}")
                    continue
                out.records.append(rec)
    return out


def log_records(request: ExportLogsServiceRequest) -> Iterator[tuple[Any, Any, Any]]:
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                yield rl, sl, lr


def logs(request: ExportLogsServiceRequest, wanted: frozenset[str]) -> Decoded:
    """The log records whose event name is in ``wanted`` (the others are accepted and
    not kept: they are not part of an LLM call)."""
    out = Decoded()
    cache: dict[int, Any] = {}
    for rl, sl, lr in log_records(request):
        out.total += 1
        name = lr.event_name
        if not name:
            for kv in lr.attributes:
                if kv.key == "event.name":
                    name = kv.value.string_value
        if name not in wanted:
            continue
        t, s, bad = _ids(lr.trace_id, lr.span_id)
        where = f"log record {name!r} ({t}/{s})"
        if bad:
            out.rejected.append(f"{where}: {bad}; it cannot be joined to its span")
            continue
        try:
            key = id(rl)
            if key not in cache:
                cache[key] = _resource(rl.resource.attributes)
            skey = id(sl)
            if skey not in cache:
                cache[skey] = _scope(sl.scope)
            rec = {
                "kind": "log",
                "trace_id": t,
                "span_id": s,
                "event_name": name,
                "time_ns": lr.time_unix_nano or lr.observed_time_unix_nano,
                "body": value(lr.body),
                "attrs": attributes(lr.attributes),
                "resource": cache[key],
                "scope": cache[skey],
            }
        except TooDeep as exc:
            out.rejected.append(f"{where}: {exc}")
            continue
        out.records.append(rec)
    return out


def response(kind: str, rejected: int, message: str, enc: str) -> tuple[bytes, str]:
    """``Export*ServiceResponse`` in the request's encoding."""
    msg: Message
    if kind == "traces":
        msg = ExportTraceServiceResponse()
        if rejected:
            msg.partial_success.rejected_spans = rejected
            msg.partial_success.error_message = message
    else:
        msg = ExportLogsServiceResponse()
        if rejected:
            msg.partial_success.rejected_log_records = rejected
            msg.partial_success.error_message = message
    if enc == JSON:
        return orjson.dumps(json_format.MessageToDict(msg)), JSON
    return msg.SerializeToString(), PROTOBUF


__all__ = [
    "Decoded",
    "ExportLogsServiceRequest",
    "ExportTraceServiceRequest",
    "JSON",
    "PROTOBUF",
    "encoding",
    "logs",
    "parse",
    "response",
    "spans",
]
