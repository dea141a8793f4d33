"""Shared fixtures: a real store on tmp_path, an in-process client, a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio  # noqa: F401  (plugin presence check)

from api.app import create_app
from api.settings import Settings
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


@pytest_asyncio.fixture
async def client(store: Store, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(data=str(data_dir), max_body_bytes=8 << 20), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err}")
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

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


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
