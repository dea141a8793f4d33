"""LiteLLM's proxy as the gateway benchmark's peer (``bench/gateway.py --litellm``).

LiteLLM runs from its own virtual environment (``make bench-gateway`` creates
``.bench-litellm`` with ``litellm[proxy]`` pinned: heavy, kept out of ``.[dev]``), one
uvicorn worker, in front of the same instant upstream as our gateway, with a master key
(it refuses to start without one).

Logging, since logging is what we do: LiteLLM logs each call to PostgreSQL through
Prisma. ``database_probe`` starts it once against a private PostgreSQL 15
(``bench.compare.Postgres``) with ``DATABASE_URL`` set and reports whether it came up;
on a machine without internet it cannot, because the Prisma CLI downloads its engine
binaries from Prisma's CDN at first start (no package registry ships them), and the
proxy refuses to start when its migrations cannot run. The measured run then logs
through LiteLLM's own callback interface instead: ``FILE_LOGGER`` below writes each
call's ``standard_logging_object`` (the record LiteLLM hands every logging integration,
the same fields it would write to its spend-log table) as one JSON line, flushed to
the OS per call (no fsync: LiteLLM's database writer batches too, so neither side of
this peer is durable at answer time)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from testkit import free_port

MASTER_KEY = "sk-bench-" + "0123456789abcdef" * 2

FILE_LOGGER = """\
import json, os

from litellm.integrations.custom_logger import CustomLogger


class FileLog(CustomLogger):
    def __init__(self):
        super().__init__()
        self.out = open(os.environ["BENCH_LITELLM_LOG"], "ab")

    def _write(self, kwargs):
        record = kwargs.get("standard_logging_object")
        self.out.write(json.dumps(record, default=str).encode() + b"\\n")
        self.out.flush()

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)


handler = FileLog()
"""


class LiteLLM:
    """One ``litellm`` proxy process (``--num_workers 1``) on a free port."""

    def __init__(self, exe: Path, work: Path, upstream_port: int, *, database_url: str = ""):
        self.exe = exe
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls_log = work / "litellm-calls.jsonl"
        self.output = work / f"litellm-{self.port}.log"
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        (work / "bench_litellm_log.py").write_text(FILE_LOGGER)
        callbacks = "litellm_settings:\n  callbacks: bench_litellm_log.handler\n"
        if database_url:
            callbacks = ""  # its own logging: the spend-log table
        (work / "litellm.yaml").write_text(
            "model_list:\n"
            "  - model_name: bench/instant\n"
            "    litellm_params:\n"
            "      model: openai/instant\n"
            f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
            "      api_key: sk-upstream\n" + callbacks
        )

    def start(self, timeout: float = 240.0) -> LiteLLM:
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
            "LITELLM_LOG": "ERROR",
            "BENCH_LITELLM_LOG": str(self.calls_log),
            "PYTHONPATH": str(self.work),
        }
        env.pop("DATABASE_URL", None)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        cmd = [str(self.exe), "--config", str(self.work / "litellm.yaml"), "--host",
               "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]  # fmt: skip
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.proc.returncode}")
            try:
                r = httpx.get(self.url + "/health/liveliness", timeout=1)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"litellm did not start within {timeout:.0f} s")

    def logged(self) -> int:
        if not self.calls_log.exists():
            return 0
        with open(self.calls_log, "rb") as f:
            return sum(1 for _ in f)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def error_lines(self) -> list[str]:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("Error:")]


def database_probe(exe: Path, work: Path, upstream_port: int) -> dict[str, object]:
    """Start LiteLLM with ``DATABASE_URL`` on a private PostgreSQL 15 and one call: did
    it start and log the call to its spend-log table? Returns what happened."""
    from bench.compare import Postgres, pg_available

    if not pg_available():
        return {"ok": False, "error": "PostgreSQL 15 or psycopg is not installed"}
    pg = Postgres(work).start()
    url = f"postgresql://postgres@localhost:{pg.port}/postgres?host={pg.dir}"
    peer = LiteLLM(exe, work / "db-probe", upstream_port, database_url=url)
    try:
        try:
            peer.start()
        except RuntimeError as exc:
            errors = peer.error_lines()
            return {"ok": False, "error": errors[0] if errors else str(exc)}
        r = httpx.post(peer.url + "/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {MASTER_KEY}"},
                       json={"model": "bench/instant",
                             "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        time.sleep(70)  # LiteLLM writes spend logs from a queue, once a minute
        with pg.conn.cursor() as cur:
            cur.execute('SELECT count(*) FROM "LiteLLM_SpendLogs"')
            rows = int(cur.fetchone()[0])
        return {"ok": r.status_code == 200 and rows == 1, "spend_log_rows": rows}
    finally:
        peer.stop()
        pg.stop()
