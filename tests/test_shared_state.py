"""Two real servers sharing one data root (a local folder, and a moto S3 bucket), each
with only the data URI and a log folder of its own: keys and retention rules made from
a third place reach both, with nothing copied; a revoked key stops working on both
(measured, printed); a third node started later needs nothing else either."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from testkit.s3 import start_s3
from tests.conftest import ROOT, Server, interaction

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

BUCKET = "istore-shared"
REFRESH_S = 1.0


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server, env = start_s3(BUCKET)
    try:
        yield env
    finally:
        server.stop()


def istore(*args: str, env: dict[str, str]) -> str:
    """The CLI in a process of its own, as on another host (``env``: its environment)."""
    done = subprocess.run([sys.executable, "-m", "istore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _secret(out: str) -> str:
    return next(w for w in out.split() if w.startswith("isk_"))


def _status(url: str, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    row = interaction(0, use_case="fresh")
    r = httpx.post(url + "/api/v1/interactions", json=row, headers=headers, timeout=30)
    return r.status_code


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_servers_share_keys_and_retention_with_nothing_copied(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, server_factory: type[Server]
) -> None:
    cloud: dict[str, str] = request.getfixturevalue("s3") if kind == "s3" else {}
    data = f"s3://{BUCKET}/{tmp_path.name}" if kind == "s3" else str(tmp_path / "data")
    # A third host: the data URI and nothing else (no log folder, no state folder).
    admin_host = {**cloud, "ISTORE_DATA": data}
    admin = _secret(istore("keys", "create", "--scope", "admin", "--name", "ops", env=admin_host))
    writer = _secret(istore("keys", "create", "--scope", "ingest", "--name", "app",
                            env=admin_host))  # fmt: skip

    env = {**cloud, "ISTORE_STATE_REFRESH_S": str(REFRESH_S),
           "ISTORE_MAINTENANCE_INTERVAL_S": "2", "ISTORE_FLUSH_INTERVAL_S": "0.3"}  # fmt: skip
    nodes = [
        server_factory(data, ISTORE_WAL_DIR=str(tmp_path / f"node{i}"), **env)  # type: ignore[arg-type]
        for i in range(2)
    ]
    for n in nodes:
        n.start(timeout=60)
    for n in nodes:
        assert _status(n.url, writer) == 201
        assert _status(n.url, None) == 401
        assert _status(n.url, "isk_000000000000_nope") == 401

    # Revoked on the third host: refused by both nodes, each within its next re-read.
    istore("keys", "revoke", "app", env=admin_host)
    revoked_at = time.monotonic()  # the revoke is written
    took = []
    for n in nodes:
        deadline = revoked_at + 60
        while _status(n.url, writer) != 401 and time.monotonic() < deadline:
            time.sleep(0.05)
        took.append(time.monotonic() - revoked_at)
        assert _status(n.url, writer) == 401, "the revoked key still works"
        assert _status(n.url, admin) == 201  # the others do
    print(f"\n{kind}: revoked key refused by the two nodes after {took[0]:.2f} s and "
          f"{took[1]:.2f} s (ISTORE_STATE_REFRESH_S={REFRESH_S:g})")  # fmt: skip

    # Retention set on the third host is applied by whichever node runs maintenance.
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    rows = [interaction(i, use_case="aging", created_at=old) for i in range(5)]
    r = httpx.post(nodes[0].url + "/api/v1/interactions", json=rows,
                   headers={"authorization": f"Bearer {admin}"})  # fmt: skip
    assert r.status_code == 201, r.text
    istore("retention", "set", "aging", "30", env=admin_host)
    count = {"sql": "SELECT count(*) AS n FROM interactions WHERE use_case = 'aging'"}
    deadline = time.monotonic() + 120
    left = None
    while time.monotonic() < deadline:
        r = httpx.post(nodes[1].url + "/api/v1/sql", json=count,
                       headers={"authorization": f"Bearer {admin}"}, timeout=30)  # fmt: skip
        left = r.json()["data"][0]["n"]
        if left == 0:
            break
        time.sleep(0.3)
    assert left == 0, "the shared retention rule was never applied"

    # A node started now needs nothing but the URI and its log folder.
    late = server_factory(data, ISTORE_WAL_DIR=str(tmp_path / "late"), **env).start(timeout=60)  # type: ignore[arg-type]
    assert _status(late.url, admin) == 201 and _status(late.url, writer) == 401
    shown = orjson.loads(istore("retention", "show", env={**cloud, "ISTORE_DATA": data,
                                "ISTORE_WAL_DIR": str(tmp_path / "late")}))  # fmt: skip
    assert shown["use_cases"] == {"aging": 30.0}
    for n in [*nodes, late]:
        n.stop()
    for i in range(2):  # nothing was copied into the nodes' own folders
        assert not (tmp_path / f"node{i}" / "keys.json").exists()
    if kind == "local":
        assert (tmp_path / "data" / "keys.json").exists()


def test_a_node_upgraded_with_its_own_keys_file_shares_it(
    s3: dict[str, str], tmp_path: Path, server_factory: type[Server]
) -> None:
    """Before: each object-store node kept keys.json in its log folder (copied by
    hand). The first node started after the upgrade uploads its copy; another node
    with no copy then accepts those keys."""
    from service.keys import KeyRing

    data = f"s3://{BUCKET}/{tmp_path.name}"
    old_home = tmp_path / "node0"
    old_home.mkdir()
    _, secret = KeyRing(old_home).create(["admin"], name="before")  # the old layout
    env: dict[str, Any] = {**s3, "ISTORE_MAINTENANCE_INTERVAL_S": "0"}
    first = server_factory(data, ISTORE_WAL_DIR=str(old_home), **env).start(timeout=60)
    second = server_factory(data, ISTORE_WAL_DIR=str(tmp_path / "node1"), **env).start(timeout=60)
    for n in (first, second):
        assert _status(n.url, secret) == 201
        assert _status(n.url, None) == 401
    assert (old_home / "keys.json.migrated").exists() and not (old_home / "keys.json").exists()
    first.stop()
    second.stop()
