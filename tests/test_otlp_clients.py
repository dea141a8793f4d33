"""The real clients, unchanged, against a live server: opentelemetry-instrumentation-
openai-v2 (legacy events with content, span mode, event mode), openinference-
instrumentation-openai (with ``using_attributes``) and the Langfuse v5 SDK
(``langfuse.openai``, ``@observe``, ``propagate_attributes``; HTTP Basic
``public:secret`` with the istore key as the secret), each making a plain, a
streamed, a tool-call, a tool-result and a failing call through the real ``openai``
client to a stand-in model server. The stored interactions are checked field by field."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.keys import KeyRing
from tests.conftest import ROOT, Server
from tests.otlp_capture import client_env
from tests.otlp_clients import CLIENTS, QUESTIONS
from tests.otlp_expect import check
from tests.upstream import Upstream

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only


def wait_for(url: str, key: str, n: int) -> list[dict[str, Any]]:
    """The stored OTLP interactions once there are ``n`` (joins finish in the background)."""
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        while True:
            r = c.get("/api/v1/interactions", params={"source": "otlp", "limit": 100})
            assert r.status_code == 200, r.text
            data: list[dict[str, Any]] = r.json()["data"]
            if len(data) >= n or time.monotonic() > deadline:
                return data
            time.sleep(0.1)


@pytest.mark.parametrize("client", CLIENTS)
def test_real_client_calls_are_stored_complete(
    client: str, server_factory: type[Server], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _, key = KeyRing(data).create(["ingest", "read"], name="otel")
    server = server_factory(data).start()
    with Upstream() as up:
        run = subprocess.run(
            [sys.executable, "-m", "tests.otlp_clients", client, up.base_url],
            cwd=ROOT, env=client_env(server.url, key), capture_output=True, timeout=300,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    # the exporters log a failed export (401, 4xx, 5xx) on stderr: there must be none
    assert b"Failed to export" not in run.stderr, run.stderr.decode()[-3000:]
    items = wait_for(server.url, key, len(QUESTIONS))
    check(client, items)
    assert "Traceback" not in server.stderr_text
