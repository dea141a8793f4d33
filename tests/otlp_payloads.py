"""OTLP requests built with the opentelemetry-proto messages, for the tests that need
a shape no client sends on demand (joins split at will, hostile input)."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROTOBUF = {"content-type": "application/x-protobuf"}
T0 = 1_780_000_000 * 10**9  # 2026-05-28


def any_value(v: Any) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
        return out
    raise TypeError(v)


def kvs(d: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in d.items()]


def new_ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def legacy_span(trace: bytes, span: bytes, *, question: str = "Hi?", error: bool = False,
                **attrs: Any) -> Span:  # fmt: skip
    """An openai-v2 legacy (v1.30) chat span: no content of its own."""
    a = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
         "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
         "gen_ai.usage.input_tokens": 21, "gen_ai.usage.output_tokens": 7,
         "gen_ai.response.finish_reasons": ["stop"], **attrs}  # fmt: skip
    return Span(
        trace_id=trace, span_id=span, name="chat gpt-4o-mini", kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 55_000_000, attributes=kvs(a),
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom") if error else Status(),
    )  # fmt: skip


def legacy_events(trace: bytes, span: bytes, question: str = "Hi?",
                  answer: str | None = "Hello!") -> list[LogRecord]:  # fmt: skip
    recs = [("gen_ai.system.message", {"content": "Be brief."}),
            ("gen_ai.user.message", {"content": question})]  # fmt: skip
    if answer is not None:
        recs.append(
            (
                "gen_ai.choice",
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": answer},
                },
            )
        )
    return [
        LogRecord(trace_id=trace, span_id=span, event_name=name, body=any_value(body),
                  observed_time_unix_nano=T0 + i, attributes=kvs({"gen_ai.system": "openai"}))
        for i, (name, body) in enumerate(recs)
    ]  # fmt: skip


def traces(*spans: Span, resource: dict[str, Any] | None = None) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kvs(resource or {"service.name": "geo-assistant"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.spans.extend(spans)
    return req.SerializeToString()


def logs(*records: LogRecord, resource: dict[str, Any] | None = None) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(kvs(resource or {"service.name": "geo-assistant"}))
    sl = rl.scope_logs.add()
    sl.scope.name = "opentelemetry.instrumentation.openai_v2"
    sl.log_records.extend(records)
    return req.SerializeToString()


def llm_span(trace: bytes, span: bytes, i: int = 0, content: str = "What is 2+2?",
             **attrs: Any) -> Span:  # fmt: skip
    """An OpenInference LLM span with its content: complete on its own."""
    a = {"openinference.span.kind": "LLM", "llm.system": "openai",
         "llm.model_name": "gpt-4o-mini-2024-07-18",
         "llm.invocation_parameters": '{"model": "gpt-4o-mini", "temperature": 0.2}',
         "llm.input_messages.0.message.role": "system",
         "llm.input_messages.0.message.content": "Be brief.",
         "llm.input_messages.1.message.role": "user",
         "llm.input_messages.1.message.content": content,
         "llm.output_messages.0.message.role": "assistant",
         "llm.output_messages.0.message.content": f"answer {i}",
         "llm.token_count.prompt": 21, "llm.token_count.completion": 7,
         "llm.token_count.total": 28, **attrs}  # fmt: skip
    return Span(trace_id=trace, span_id=span, name="ChatCompletion",
                start_time_unix_nano=T0 + i, end_time_unix_nano=T0 + i + 40_000_000,
                attributes=kvs(a), status=Status(code=Status.STATUS_CODE_OK))  # fmt: skip
