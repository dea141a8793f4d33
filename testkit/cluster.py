"""Several servers sharing one data root: how long a write takes to reach another node."""

from __future__ import annotations

import time
import uuid

import httpx

from testkit import interaction


def cross_node_visibility(
    writer: str, reader: str, timeout: float = 60.0, *, confirm: bool = True
) -> tuple[float, float]:
    """Write one interaction on ``writer``; seconds until it is committed (the writer's
    flush), and until ``reader`` has picked up that commit (its refresh). Then the
    reader must return it. Read through ``/readyz``, because one lookup by id on the
    emulated bucket costs seconds (many small files, each a few HTTP requests to moto)."""
    row = interaction(0, id=str(uuid.uuid4()))
    started = time.monotonic()
    assert httpx.post(writer + "/api/v1/interactions", json=row).status_code == 201
    committed = seen = None
    while time.monotonic() - started < timeout:
        if committed is None:
            st = httpx.get(writer + "/readyz").json()
            if st["pending_rows"] == 0:
                committed, version = time.monotonic() - started, st["versions"]["interactions"]
        if committed is not None:
            if httpx.get(reader + "/readyz").json()["versions"]["interactions"] >= version:
                seen = time.monotonic() - started
                break
        time.sleep(0.05)
    assert committed is not None and seen is not None, "the write never reached the reader"
    if confirm:
        r = httpx.get(f"{reader}/api/v1/interactions/{row['id']}", timeout=60)
        assert r.status_code == 200, r.text
    return committed, seen
