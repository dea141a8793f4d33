"""Capture what the real clients send: ``python -m tests.otlp_capture [CLIENT…]``
runs ``tests.otlp_clients`` against a recording OTLP receiver and the model stand-in,
and writes ``tests/fixtures/otlp/<client>.jsonl`` (one request a line: path,
content type and encoding, the body in base64, as received)."""

from __future__ import annotations

import base64
import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import ROOT, free_port
from tests.otlp_clients import CLIENTS
from tests.upstream import Upstream

FIXTURES = ROOT / "tests" / "fixtures" / "otlp"


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.requests.append({
            "path": self.path,
            "content_type": self.headers.get("content-type", ""),
            "content_encoding": self.headers.get("content-encoding", ""),
            "authorization": self.headers.get("authorization", ""),
            "body": base64.b64encode(body).decode(),
        })  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def capture(client: str, model_url: str) -> Path:
    _Recorder.requests = []
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    env = client_env(url, "test-key")
    try:
        subprocess.run([sys.executable, "-m", "tests.otlp_clients", client, model_url],
                       cwd=ROOT, env=env, check=True, timeout=300)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    out = FIXTURES / f"{client}.jsonl"
    out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _Recorder.requests))
    return out


def client_env(url: str, key: str) -> dict[str, str]:
    """What an application sets to send here (the README's snippets say the same)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{key}",
        "OTEL_SERVICE_NAME": "geo-assistant",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "LANGFUSE_BASE_URL": url,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "LANGFUSE_SECRET_KEY": key,
        "LANGFUSE_TRACING_ENVIRONMENT": "test",
    })  # fmt: skip
    return env


def main(clients: list[str]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with Upstream() as up:
        for client in clients or CLIENTS:
            path = capture(client, up.base_url)
            print(f"{client}: {sum(1 for _ in path.open())} requests → {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
