"""A write-ahead log that heals around damage: bytes flipped in the first, a middle or
the last frame of a segment holding acknowledged, unflushed records; a real server
`kill -9`ed, the bytes flipped, the server restarted: every intact record comes back
exactly once, the damaged ones never (not even in part), and the damage is reported
with its position by the log, ``/readyz``, ``/metrics`` and ``istore doctor``.
Segments written in the framing before this one (``ISW1``) still recover."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

import store
from istore.cli import main
from store.wal import HEADER, _frame, inspect_segment, list_segments, scan, scan_bytes
from tests.conftest import Server, interaction

N = 20
QUIET = {"ISTORE_FLUSH_INTERVAL_S": "3600", "ISTORE_MAINTENANCE_INTERVAL_S": "0"}


# -- the framing, byte by byte ------------------------------------------------------------
def _frames(n: int) -> tuple[bytes, list[int]]:
    frames = [_frame(lsn, 1, orjson.dumps({"n": lsn, "pad": "x" * (lsn % 7)})) for lsn in
              range(1, n + 1)]  # fmt: skip
    starts = [sum(len(f) for f in frames[:i]) for i in range(n)]
    return b"".join(frames), starts


def test_every_single_flipped_byte_loses_exactly_its_own_frame() -> None:
    data, starts = _frames(8)
    bounds = [*starts, len(data)]
    for pos in range(len(data)):
        hit = next(i for i in range(8) if bounds[i] <= pos < bounds[i + 1])
        damaged = bytearray(data)
        damaged[pos] ^= 0x5A
        found = scan_bytes(bytes(damaged), "seg")
        assert [r.lsn for r in found.records] == [k + 1 for k in range(8) if k != hit], pos
        (d,) = found.damage
        assert d.offset == starts[hit] and d.length == bounds[hit + 1] - starts[hit], pos
        assert d.tail == (hit == 7)
        header = pos - starts[hit] < HEADER.size
        assert d.lsn == (None if header else hit + 1), pos  # named when its header held


def test_garbage_zeroed_sectors_and_torn_tails() -> None:
    data, starts = _frames(10)
    # A zeroed 64-byte stretch across the boundary of frames 4 and 5 (lsn 4, 5).
    zeroed = bytearray(data)
    zeroed[starts[4] - 20 : starts[4] + 44] = bytes(64)
    found = scan_bytes(bytes(zeroed), "seg")
    assert [r.lsn for r in found.records] == [1, 2, 3, 6, 7, 8, 9, 10]
    assert [(d.offset, d.after, d.before) for d in found.damage] == [(starts[3], 3, 6)]
    # Garbage inserted between frames: nothing lost, the stretch reported.
    junk = data[: starts[2]] + b"\x00junk\xffIW2" * 3 + data[starts[2] :]
    found = scan_bytes(junk, "seg")
    assert [r.lsn for r in found.records] == list(range(1, 11))
    assert [(d.offset, d.length, d.tail) for d in found.damage] == [(starts[2], 27, False)]
    # Half a frame at the end: a torn tail.
    torn = data + _frame(11, 1, b'{"n": 11}')[:20]
    found = scan_bytes(torn, "seg")
    assert len(found.records) == 10 and found.valid_end == len(data)
    assert [(d.offset, d.tail) for d in found.damage] == [(len(data), True)]


def test_a_frame_inside_a_payload_is_never_taken_for_one() -> None:
    """Payloads are UTF-8 JSON: a client cannot smuggle a frame into the log by sending
    one as text, because the magic starts with 0xFF (never in UTF-8)."""
    inner = _frame(99, 1, b'{"evil": 1}')
    payload = orjson.dumps({"text": inner.decode("latin-1")})
    assert b"\xff" not in payload
    data = _frame(1, 1, payload) + _frame(2, 1, b"{}")
    damaged = bytearray(data)
    damaged[5] ^= 1  # frame 1's header: the reader resynchronises past its payload
    found = scan_bytes(bytes(damaged), "seg")
    assert [r.lsn for r in found.records] == [2]


def _frame_v1(lsn: int, code: int, payload: bytes) -> bytes:
    """The framing before resynchronisation, as the previous release wrote it."""
    head = struct.pack("<IQB", len(payload), lsn, code)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return struct.pack("<4sIQBI", b"ISW1", len(payload), lsn, code, crc) + payload


def test_old_frames_are_read_and_resynchronised() -> None:
    frames = [_frame_v1(lsn, 1, b'{"a": "ISW1 in the text"}') for lsn in range(1, 7)]
    data = bytearray(b"".join(frames))
    data[len(frames[0]) * 2 + 3] ^= 0xFF  # frame 3's magic
    found = scan_bytes(bytes(data), "seg")
    assert [r.lsn for r in found.records] == [1, 2, 4, 5, 6]
    assert [(d.after, d.before) for d in found.damage] == [(2, 4)]
    mixed = b"".join(frames[:3]) + _frame(4, 1, b"{}")  # an upgraded log: old, then new
    assert [r.lsn for r in scan_bytes(mixed).records] == [1, 2, 3, 4]


# -- a real server, kill -9 ---------------------------------------------------------------
def _ingest(url: str, tag: str, n: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(n):  # one request, one record, one frame
            row = interaction(i, id=f"{tag}-{i:03d}")
            r = c.post("/api/v1/interactions", json=row)
            assert r.status_code == 201, r.text
            ids.append(str(row["id"]))
    return ids


def _frames_by_id(seg: Path) -> list[tuple[int, int, str]]:
    """(offset, lsn, interaction id) of each frame in a segment."""
    out = []
    for r in inspect_segment(seg).records:
        (row_id,) = orjson.loads(r.payload)["interactions"]["id"]
        out.append((r.offset, r.lsn, row_id))
    return out


def _stored(url: str) -> dict[str, int]:
    sql = "SELECT id, count(*) AS n FROM interactions GROUP BY id"
    r = httpx.post(url + "/api/v1/sql", json={"sql": sql}, timeout=30)
    assert r.status_code == 200, r.text
    return {row["id"]: row["n"] for row in r.json()["data"]}


def _doctor(data: Path) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["doctor", "--data", str(data)])
    return r.exit_code, r.output


def _flip(seg: Path, pos: int) -> None:
    raw = bytearray(seg.read_bytes())
    raw[pos] ^= 0xFF
    seg.write_bytes(bytes(raw))


@pytest.mark.slow  # a live server
@pytest.mark.parametrize("which", ["last", "first+middle+last"])
def test_kill_9_then_damaged_frames_lose_only_themselves(
    which: str, tmp_path: Path, server_factory: type[Server]
) -> None:
    data = tmp_path / "data"
    server = server_factory(data, **QUIET).start()
    acked = _ingest(server.url, which.replace("+", "-"), N)
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["pending_rows"] == N and ready["versions"]["interactions"] == 0  # unflushed
    server.kill()

    (seg,) = list_segments(data / "wal")
    frames = _frames_by_id(seg)
    assert [f[2] for f in frames] == acked
    # Where each frame is hit: the first in its magic, a middle one in its payload,
    # the last in its LSN field (header checksum).
    targets = {"first": (0, 1), "middle": (N // 2, HEADER.size + 7), "last": (N - 1, 6)}
    hit = [targets[w] for w in which.split("+")]
    for index, delta in hit:
        _flip(seg, frames[index][0] + delta)
    lost = {frames[i][2] for i, _ in hit}

    # istore doctor (read-only) sees each damaged frame, where it is.
    code, out = _doctor(data)
    for index, _ in hit:
        assert f"at offset {frames[index][0]} of {seg.name}" in out, out
    middle = any(i != N - 1 for i, _ in hit)
    assert code == (1 if middle else 0), out  # damage between intact frames is a failure
    assert f"record {frames[N // 2][1]}" in out or "middle" not in which

    again = server_factory(data, ISTORE_FLUSH_INTERVAL_S="0.2",
                           ISTORE_MAINTENANCE_INTERVAL_S="0").start()  # fmt: skip
    stored = _stored(again.url)
    assert set(stored) == set(acked) - lost  # every intact record …
    assert set(stored.values()) == {1}  # … once
    # Reported by /readyz (segment, offset, lost record) and /metrics …
    report = httpx.get(again.url + "/readyz").json()["wal_recovery"]
    assert report["records"] == N - len(hit)
    assert sorted((d["segment"], d["offset"], d["tail"]) for d in report["damaged"]) == sorted(
        (seg.name, frames[i][0], i == N - 1) for i, _ in hit
    )
    for d in report["damaged"]:
        if d["offset"] == frames[N // 2][0]:  # header intact: the lost record is named
            assert d["lsn"] == frames[N // 2][1]
    metrics = httpx.get(again.url + "/metrics").text
    assert f"istore_wal_damaged_frames {float(len(hit))}" in metrics
    lines = [x for x in metrics.splitlines() if x.startswith("istore_wal_damage_bytes{")]
    assert len(lines) == len(hit)
    for index, _ in hit:
        assert any(f'offset="{frames[index][0]}",segment="{seg.name}"' in x for x in lines)
    # … and by the log.
    for index, _ in hit:
        assert f"at offset {frames[index][0]} of {seg.name}" in again.stderr_text
    again.stop()
    assert again.proc is not None and again.proc.returncode == 0, again.stderr_text[-2000:]

    # In the Delta table itself, after the shutdown flush; the damaged segment is gone
    # (every record in it applied), a restart replays nothing twice.
    with store.open(data) as s:
        df = s.sql("SELECT id, count(*) AS n FROM interactions GROUP BY id")
    assert dict(zip(df["id"].to_list(), df["n"].to_list(), strict=True)) == stored
    _, later = scan(data / "wal", repair=False)
    assert not later.damaged
    third = server_factory(data, **QUIET).start()
    assert _stored(third.url) == stored
    assert httpx.get(third.url + "/readyz").json()["wal_recovery"]["damaged"] == []
    third.stop()
    # The damaged bytes were kept aside, and doctor says so.
    aside = sorted(p.name for p in (data / "wal").glob("*.bin"))
    assert len(aside) == len(hit)
    code, out = _doctor(data)
    assert code == 0, out
    assert ("damaged frames kept aside" in out) == middle


@pytest.mark.slow  # a live server
@pytest.mark.parametrize("damaged", [False, True])
def test_a_log_in_the_old_framing_recovers_after_an_upgrade(
    damaged: bool, tmp_path: Path, server_factory: type[Server]
) -> None:
    """Acknowledged, unflushed records in an ``ISW1`` segment (what the previous
    release wrote), then new ones in the new framing: a restart replays all of them
    once; with a damaged old frame in the middle, all but that one."""
    data = tmp_path / "data"
    server = server_factory(data, **QUIET).start()
    old = _ingest(server.url, "old", N)
    server.kill()
    (seg,) = list_segments(data / "wal")
    records = inspect_segment(seg).records
    frames = [_frame_v1(r.lsn, r.code, r.payload) for r in records]
    raw = bytearray(b"".join(frames))
    lost: set[str] = set()
    if damaged:
        k = random.Random(7).randrange(1, N - 1)
        raw[sum(len(f) for f in frames[:k]) + 30] ^= 0x01
        lost = {old[k]}
    seg.write_bytes(bytes(raw))

    server = server_factory(data, **QUIET).start()  # upgraded: replays the old segment
    assert httpx.get(server.url + "/readyz").json()["pending_rows"] == N - len(lost)
    new = _ingest(server.url, "new", 5)  # into a new segment, in the new framing
    server.kill()
    segs = list_segments(data / "wal")
    assert len(segs) == 2 and segs[0].read_bytes()[:4] == b"ISW1"
    assert segs[1].read_bytes()[:4] == b"\xffIW2"

    server = server_factory(data, ISTORE_MAINTENANCE_INTERVAL_S="0").start()
    stored = _stored(server.url)
    assert set(stored) == (set(old) - lost) | set(new)
    assert set(stored.values()) == {1}
    damage = httpx.get(server.url + "/readyz").json()["wal_recovery"]["damaged"]
    assert len(damage) == len(lost)
    server.stop()
