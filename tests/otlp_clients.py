"""The real instrumentations, driving the real ``openai`` client against a stand-in
model server, exporting over OTLP/HTTP to wherever the environment says.

Run as ``python -m tests.otlp_clients CLIENT MODEL_BASE_URL``, one process per client
(instrumentations patch ``openai`` process-wide and OpenTelemetry's global providers
can be set once). Exporters read ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` (or, for Langfuse,
``LANGFUSE_BASE_URL``/``LANGFUSE_PUBLIC_KEY``/``LANGFUSE_SECRET_KEY``) from the
environment, as an application would. Clients:

- ``openai-v2-legacy``: opentelemetry-instrumentation-openai-v2, v1.30 conventions,
  content as per-message log events;
- ``openai-v2-span`` / ``openai-v2-event``: the latest experimental conventions,
  content in span attributes / in one log record per call;
- ``openinference``: openinference-instrumentation-openai, with ``using_attributes``;
- ``langfuse``: the Langfuse SDK (``from langfuse.openai import openai``, ``@observe``,
  ``propagate_attributes``).

Cases, each flushed before the next: plain, stream, tool_call, tool_result, error."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

SYSTEM = "You are a concise geography assistant."
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]  # fmt: skip
QUESTIONS = {
    "plain": "What is the capital of France?",
    "stream": "Name a river in Paris.",
    "tool_call": "What's the weather in Paris?",
    "tool_result": "And the weather in Paris now?",
    "error": "This call fails.",
}
TOOL_HISTORY = [
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_abc123", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp_c": 18, "sky": "sunny"}'},
]  # fmt: skip


def messages(case: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTIONS[case]},
    ]
    if case == "tool_result":
        out[1]["content"] = QUESTIONS["tool_call"]
        out += TOOL_HISTORY
        out.append({"role": "user", "content": QUESTIONS["tool_result"]})
    return out


def run_case(client: Any, case: str, **extra: Any) -> None:
    kwargs: dict[str, Any] = {"model": "plain", "messages": messages(case), **extra}
    if case == "plain":
        kwargs.update(temperature=0.2, max_tokens=50, user="end-user-42")
    elif case == "stream":
        kwargs.update(stream=True, stream_options={"include_usage": True})
    elif case == "tool_call":
        kwargs.update(model="tools", tools=TOOLS)
    elif case == "error":
        kwargs["model"] = "fail400"
    try:
        resp = client.chat.completions.create(**kwargs)
        if case == "stream":
            for _ in resp:
                pass
    except Exception as exc:  # the error case: the SDK raises BadRequestError
        if case != "error":
            raise
        assert type(exc).__name__ == "BadRequestError", exc


def _otel(content_logs: bool) -> Callable[[], None]:
    from opentelemetry import _logs, trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tp)
    lp = LoggerProvider(resource=resource)
    if content_logs:
        lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    _logs.set_logger_provider(lp)

    def flush() -> None:
        tp.force_flush()
        lp.force_flush()

    return flush


def openai_v2(base_url: str) -> None:
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    flush = _otel(content_logs=True)
    OpenAIInstrumentor().instrument()
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    for case in QUESTIONS:
        run_case(client, case)
        flush()


def openinference(base_url: str) -> None:
    import openai
    from openinference.instrumentation import using_attributes
    from openinference.instrumentation.openai import OpenAIInstrumentor

    flush = _otel(content_logs=False)
    OpenAIInstrumentor().instrument()
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    for case in QUESTIONS:
        with using_attributes(user_id="user-7", session_id="session-1",
                              tags=["geo", case], metadata={"use_case": "geo-qa",
                                                            "tier": "gold"}):  # fmt: skip
            run_case(client, case)
        flush()


def langfuse(base_url: str) -> None:
    from langfuse import get_client, observe, propagate_attributes
    from langfuse.openai import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

    @observe(name="answer")
    def answer(case: str) -> None:
        with propagate_attributes(user_id="user-7", session_id="session-1",
                                  tags=["geo", case],
                                  metadata={"use_case": "geo-qa"}):  # fmt: skip
            run_case(client, case, metadata={"feature": "qa-box"})

    lf = get_client()
    for case in QUESTIONS:
        answer(case)
        lf.flush()
    lf.shutdown()


@contextlib.contextmanager
def _env(**kv: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update(kv)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


MODES = {
    "openai-v2-legacy": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    "openai-v2-span": {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
                       "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only"},
    "openai-v2-event": {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
                        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only"},
}  # fmt: skip


def main(client: str, base_url: str) -> None:
    if client in MODES:
        with _env(**MODES[client]):
            openai_v2(base_url)
    elif client == "openinference":
        openinference(base_url)
    elif client == "langfuse":
        langfuse(base_url)
    else:
        raise SystemExit(f"unknown client {client!r}")


CLIENTS = (*MODES, "openinference", "langfuse")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
