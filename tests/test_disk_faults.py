"""The data root fills up under load: the server answers 503 with
``Retry-After``, acknowledges nothing it could not persist, stays up, and recovers by
itself when space returns; every acknowledged interaction is there exactly once, also
after a restart. A real small filesystem (tmpfs) when this machine lets the tests mount
one; otherwise the server process gets a file-size limit (RLIMIT_FSIZE: writes past it
fail with EFBIG), lifted later, the same way. (A read-only remount is refused while
the log is open for writing; ``tests/test_limits.py`` fails the log's writes with EROFS
and ENOSPC in process instead.)"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, interaction

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

PAD = "lorem ipsum dolor sit amet " * 400  # ~10 KB per interaction


class Disk:
    def __init__(self, where: Path) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        if not os.environ.get("ISTORE_TEST_NO_MOUNT"):  # set it to test the fallback
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
                               capture_output=True)  # fmt: skip
            self.mounted = r.returncode == 0
        self.server: Server | None = None

    def _remount(self, opts: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{opts}", str(self.where)], check=True)

    def fill_up(self) -> None:
        """Nothing to do for tmpfs (24 MB fill up under load); else a size limit."""
        if not self.mounted:
            assert self.server is not None and self.server.proc is not None
            try:
                _, hard = resource.prlimit(self.server.proc.pid, resource.RLIMIT_FSIZE)
                resource.prlimit(self.server.proc.pid, resource.RLIMIT_FSIZE, (8 << 20, hard))
            except PermissionError:
                pytest.skip("neither a tmpfs mount nor a file-size limit is allowed here; "
                            "tests/test_limits.py fails the log's writes in process")  # fmt: skip

    def make_room(self) -> None:
        if self.mounted:
            self._remount("size=512m")
        else:
            assert self.server is not None and self.server.proc is not None
            _, hard = resource.prlimit(self.server.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(self.server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk(tmp_path / "mnt")
    yield d
    d.close()


def _post(c: httpx.Client, batch: int, i: int) -> tuple[int, list[str], httpx.Response]:
    ids = [f"b{batch}-{j}" for j in range(i)]
    body = [interaction(j, id=x, completion=PAD) for j, x in enumerate(ids)]
    r = c.post("/api/v1/interactions", json=body)
    return r.status_code, ids, r


def _stored(c: httpx.Client) -> list[str]:
    r = c.post("/api/v1/sql", json={"sql": "SELECT id FROM interactions"}, timeout=60)
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["data"]]


def test_full_disk_under_load(disk: Disk, server_factory: type[Server]) -> None:
    data = disk.where / "data"
    server = server_factory(data, ISTORE_FLUSH_INTERVAL_S="0.2",
                            ISTORE_MAINTENANCE_INTERVAL_S="0").start()  # fmt: skip
    disk.server = server
    acked: list[str] = []
    refused = 0
    with httpx.Client(base_url=server.url, timeout=30) as c:
        disk.fill_up()
        for batch in range(400):  # ~40 MB offered to a 24 MB disk (or an 8 MB file limit)
            status, ids, r = _post(c, batch, 10)
            assert status in (201, 503), r.text
            if status == 201:
                acked += ids
            else:
                refused += 1
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["type"] == "service_unavailable"
                if refused >= 5:
                    break
        assert refused >= 5, "the disk never filled up"
        assert c.get("/healthz").status_code == 200  # up, and saying why it cannot write

        disk.make_room()
        deadline = time.monotonic() + 30
        while (status := _post(c, 1000, 3))[0] != 201:
            assert time.monotonic() < deadline, "did not recover when space returned"
            time.sleep(0.5)
        acked += status[1]
        for batch in range(1001, 1011):
            status, ids, r = _post(c, batch, 5)
            assert status == 201, r.text
            acked += ids

        stored = _stored(c)
        assert sorted(stored) == sorted(set(stored))  # nothing twice
        assert set(stored) == set(acked)  # every ack, and nothing unacknowledged
    server.stop()
    again = server_factory(data).start()
    with httpx.Client(base_url=again.url, timeout=60) as c:
        stored = _stored(c)
    assert sorted(stored) == sorted(acked)
