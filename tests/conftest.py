"""Shared fixtures: a real store on tmp_path, an in-process client, a real server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio  # noqa: F401  (plugin presence check)

from api.app import create_app
from service.settings import Settings
from store.engine import Store, StoreOptions

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store(data_dir, options=StoreOptions(flush_interval_s=0.2))
    yield s
    s.close()


@contextlib.asynccontextmanager
async def in_process(
    store: Store, *, raise_errors: bool = True, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app on ``store`` (settings as given, bodies up to 8 MiB by
    default). Without ``raise_errors`` a crash is a 500 response, not an exception."""
    settings.setdefault("max_body_bytes", 8 << 20)
    app = create_app(Settings(data=str(store.root), **settings), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            yield c


@pytest_asyncio.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(store) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real `istore serve` process on 127.0.0.1 and a free port."""

    def __init__(self, data: Path, port: int | None = None, **env: str) -> None:
        self.data = data
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self._err: list[bytes] = []
        self._reader: threading.Thread | None = None

    @property
    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (read continuously, so a chatty
        server never blocks on a full pipe)."""
        return b"".join(self._err).decode("utf-8", "replace")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self._err.append(line)

    def _close_stderr(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def start(self, timeout: float = 30.0) -> Server:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "istore.cli",
                "serve",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
            ],  # fmt: skip
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_stderr()
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{self.stderr_text}")  # fmt: skip
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_stderr()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_stderr()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    class _Tracked(Server):
        def start(self, timeout: float = 30.0) -> Server:
            started.append(self)
            return super().start(timeout)

    yield _Tracked
    for s in started:
        s.stop()


def interaction(i: int = 0, **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "use_case": "support",
        "model": "small",
        "messages": [
            {"role": "system", "content": "You are a good bot."},
            {"role": "user", "content": f"question {i}"},
        ],
        "completion": f"answer {i}",
        "labels": {"project": "RAG Bot", "topic": "Industrial Tools"},
    }
    body.update(over)
    return body


def assert_error(
    resp: httpx.Response, status: int, param: str | None = None, prefix: str | None = None
) -> dict[str, Any]:
    """``resp`` is exactly ``{"error": {"message","type","param","code"}}`` with ``status``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    if param is not None:
        assert err["param"] == param, err
    if prefix is not None:
        assert isinstance(err["param"], str) and err["param"].startswith(prefix), err
    return err


@pytest.fixture
def slow_store(tmp_path: Path) -> Iterator[Store]:
    """The flusher does not run on its own: reads before ``flush()`` come from the tail."""
    s = Store(tmp_path / "slow", options=StoreOptions(flush_interval_s=3600))
    yield s
    s.close()


@pytest_asyncio.fixture
async def slow_client(slow_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app on ``slow_store``; a crash is a 500 response, not an exception."""
    async with in_process(slow_store, raise_errors=False) as c:
        yield c
