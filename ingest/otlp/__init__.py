"""OpenTelemetry (OTLP) ingest: LLM-call spans and their GenAI log records →
interactions. ``decode`` (bodies → records), ``mapping`` with one module per
convention (``genai``, ``openinference``, ``langfuse``), ``pieces`` (per-record
checks) and ``join`` (the receiver: joining and its write-ahead log)."""
