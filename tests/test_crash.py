"""A real server process, concurrent writers of interactions, feedback and comparisons,
`kill -9` at a random moment (mid-ingest, mid-flush, or while the maintenance job
compacts and vacuums every half second), a torn tail added to the write-ahead log
(half a record, or a record with flipped bytes: what a crash mid-append leaves),
restart: every acknowledged record is there exactly once, every batch is all-or-nothing,
the Delta tables open cleanly, and the torn tail is cut. `make soak` runs 50 rounds;
CI runs 5 (``ISTORE_CRASH_ROUNDS``)."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from deltalake import DeltaTable

import store
from tests.conftest import Server, interaction

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

ROUNDS = int(os.environ.get("ISTORE_CRASH_ROUNDS", "5"))


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


def _referrer(url: str, kind: str, stop: threading.Event, acked: list[list[str]],
              done: list[str]) -> None:  # fmt: skip
    """Feedback or comparisons on acknowledged interactions; ``done``: acked record ids."""
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            pool = [i for batch in acked[-50:] for i in batch]
            if len(pool) < 2:
                time.sleep(0.01)
                continue
            a, b = random.sample(pool, 2)
            if kind == "feedback":
                path, body, key = "/api/v1/feedback", {"completion_id": a, "metric": "m",
                                                       "value": 1}, "feedback_id"  # fmt: skip
            else:
                path, body, key = "/api/v1/comparison", {"metric": "pref", "project": "support",
                    "preferred_completion": a, "other_completion": b}, "comparison_id"  # fmt: skip
            try:
                r = c.post(path, json=body)
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                done.append(r.json()[key])


def _tear(wal: Path, rnd: int) -> str:
    """Append what a crash in the middle of an append leaves at the end of the log."""
    from store.wal import _frame, list_segments

    segments = list_segments(wal)
    if not segments:
        return "none"
    frame = _frame(10**15 + rnd, 1, b'{"interactions": "never acknowledged"}' * 20)
    if rnd % 2:
        torn, how = frame[: len(frame) // 2], "half a record"
    else:
        flipped = bytearray(frame)
        flipped[-7] ^= 0xFF
        torn, how = bytes(flipped), "flipped bytes"
    with open(segments[-1], "ab") as f:
        f.write(torn)
    return how


def test_kill_9_mid_load_loses_and_duplicates_nothing(
    tmp_path: Path, server_factory: type[Server]
) -> None:
    data = tmp_path / "data"
    all_acked: list[list[str]] = []
    all_sent: list[list[str]] = []
    feedback: list[str] = []
    comparisons: list[str] = []
    cut = 0
    env = {"ISTORE_FLUSH_INTERVAL_S": "0.3", "ISTORE_MAINTENANCE_INTERVAL_S": "0.5",
           "ISTORE_VACUUM_RETENTION_HOURS": "0"}  # fmt: skip
    for rnd in range(ROUNDS):
        server = server_factory(data, **env).start()
        if rnd:  # the torn tail left before this start was found and cut
            cut += "write-ahead log" in server.stderr_text and "cut" in server.stderr_text
        stop = threading.Event()
        acked: list[list[str]] = []
        sent: list[list[str]] = []
        threads = [
            threading.Thread(target=_writer, args=(server.url, f"r{rnd}w{w}", stop, acked, sent))
            for w in range(3)
        ] + [
            threading.Thread(target=_referrer, args=(server.url, kind, stop, acked, done))
            for kind, done in (("feedback", feedback), ("comparison", comparisons))
        ]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.5, 2.0))
        server.kill()  # SIGKILL: no shutdown hook, no final flush
        stop.set()
        for t in threads:
            t.join()
        all_acked.extend(acked)
        all_sent.extend(sent)
        assert acked, "the load generator got no acknowledgement before the kill"
        _tear(data / "wal", rnd)

    server = server_factory(data).start()  # recovery runs on start
    cut += "write-ahead log" in server.stderr_text and "cut" in server.stderr_text
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/api/v1/sql", json={"sql": "SELECT count(*) AS n FROM interactions"})
        assert r.status_code == 200, r.text
        served = r.json()["data"][0]["n"]
    server.stop()
    for table in ("interactions", "feedback", "comparisons", "amendments"):
        DeltaTable(str(data / table)).to_pyarrow_table()  # opens and reads cleanly
    with store.open(data) as s:  # no row limit, unlike the HTTP SQL endpoint
        df = s.sql("SELECT id, count(*) AS n FROM interactions GROUP BY id")
        fb = s.sql("SELECT id, count(*) AS n FROM feedback GROUP BY id")
        cmp = s.sql("SELECT id, count(*) AS n FROM comparisons GROUP BY id")
    found = dict(zip(df["id"].to_list(), df["n"].to_list(), strict=True))
    assert served == sum(found.values())
    acked_ids = [i for batch in all_acked for i in batch]
    lost = [i for i in acked_ids if i not in found]
    duplicated = [i for i, n in found.items() if n > 1]
    print(
        f"\ncrash soak, {ROUNDS} rounds: interactions acked={len(acked_ids)} "
        f"found={len(found)} lost={len(lost)} duplicated={len(duplicated)}"
    )
    for name, frame, ids in (("feedback", fb, feedback), ("comparisons", cmp, comparisons)):
        have = dict(zip(frame["id"].to_list(), frame["n"].to_list(), strict=True))
        gone = [i for i in ids if i not in have]
        twice = [i for i, n in have.items() if n > 1]
        print(f"  {name}: acked={len(ids)} found={len(have)} lost={len(gone)} "
              f"duplicated={len(twice)}")  # fmt: skip
        assert not gone and not twice, name
    print(f"  torn log tails added={ROUNDS} cut at restart={cut}")
    assert cut == ROUNDS
    assert not lost
    assert not duplicated
    # Unacknowledged batches are all-or-nothing: never half visible.
    sent_ids = {i for batch in all_sent for i in batch}
    assert set(found) <= sent_ids
    for batch in all_sent:
        present = [i in found for i in batch]
        assert all(present) or not any(present), f"batch half visible: {batch[:3]}…"
