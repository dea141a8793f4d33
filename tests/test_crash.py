"""A real server process, concurrent writers, `kill -9` mid-load, restart: every
acknowledged interaction is there exactly once, and every batch is all-or-nothing."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import orjson

import store
from tests.conftest import Server, interaction

ROUNDS = int(os.environ.get("ISTORE_CRASH_ROUNDS", "3"))


def _writer(
    url: str, tag: str, stop: threading.Event, acked: list[list[str]], sent: list[list[str]]
) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        k = 0
        while not stop.is_set():
            size = random.choice([1, 1, 5, 50])
            batch_ids = [f"{tag}-{k}-{j}" for j in range(size)]
            k += 1
            sent.append(batch_ids)
            if size == 1:
                kwargs: dict[str, object] = {"json": interaction(0, id=batch_ids[0])}
            else:
                lines = b"\n".join(
                    orjson.dumps(interaction(j, id=i)) for j, i in enumerate(batch_ids)
                )
                kwargs = {"content": lines, "headers": {"content-type": "application/x-ndjson"}}
            try:
                r = c.post("/api/v1/interactions", **kwargs)  # type: ignore[arg-type]
            except httpx.HTTPError:
                return  # the server died under us
            if r.status_code == 201:
                acked.append(batch_ids)


def test_kill_9_mid_load_loses_and_duplicates_nothing(
    tmp_path: Path, server_factory: type[Server]
) -> None:
    data = tmp_path / "data"
    all_acked: list[list[str]] = []
    all_sent: list[list[str]] = []
    for rnd in range(ROUNDS):
        server = server_factory(data, ISTORE_FLUSH_INTERVAL_S="0.3").start()
        stop = threading.Event()
        acked: list[list[str]] = []
        sent: list[list[str]] = []
        threads = [
            threading.Thread(target=_writer, args=(server.url, f"r{rnd}w{w}", stop, acked, sent))
            for w in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.5, 1.5))
        server.kill()  # SIGKILL: no shutdown hook, no final flush
        stop.set()
        for t in threads:
            t.join()
        all_acked.extend(acked)
        all_sent.extend(sent)
        assert acked, "the load generator got no acknowledgement before the kill"

    server = server_factory(data).start()  # recovery runs on start
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
        assert r.status_code == 200, r.text
        served = r.json()["data"][0]["n"]
    server.stop()
    with store.open(data) as s:  # no row limit, unlike the HTTP SQL endpoint
        df = s.sql("SELECT id, count(*) AS n FROM interactions GROUP BY id")
    found = dict(zip(df["id"].to_list(), df["n"].to_list(), strict=True))
    assert served == sum(found.values())
    acked_ids = [i for batch in all_acked for i in batch]
    lost = [i for i in acked_ids if i not in found]
    duplicated = [i for i, n in found.items() if n > 1]
    print(
        f"acked={len(acked_ids)} found={len(found)} lost={len(lost)} duplicated={len(duplicated)}"
    )
    assert not lost
    assert not duplicated
    # Unacknowledged batches are all-or-nothing: never half visible.
    sent_ids = {i for batch in all_sent for i in batch}
    assert set(found) <= sent_ids
    for batch in all_sent:
        present = [i in found for i in batch]
        assert all(present) or not any(present), f"batch half visible: {batch[:3]}…"
