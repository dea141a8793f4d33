"""Helpers shared by the tests and the benchmarks (which must not import the tests):
a real ``istore serve`` process on a free loopback port, and a realistic interaction."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


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
