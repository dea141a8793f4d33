"""Shared state of a data root (``store.state``): the keys and retention rules as
documents with conditional writes, locally and on object storage (a moto S3 server;
Azurite where installed), and the maintenance lease: of many concurrent claimants,
exactly one wins."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.keys import KeyRing
from store.errors import Conflict, Unavailable
from store.lifecycle import Retention
from store.location import Location
from store.state import Lease, LocalDocument, RemoteDocument, SharedState
from testkit.s3 import start_s3

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

BUCKET = "istore-state"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server, env = start_s3(BUCKET)
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from tests.azurite import azurite_bin, start_azurite

    if azurite_bin() is None:
        pytest.skip("azurite is not installed (make test-azure installs it from npm)")
    proc, env = start_azurite(tmp_path_factory.mktemp("azurite"), "istore")
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


def remote_root(kind: str, request: pytest.FixtureRequest, monkeypatch: Any) -> Location:
    """A fresh prefix on S3 (moto) or Azure (Azurite), its endpoint in the environment."""
    env = request.getfixturevalue("s3" if kind == "s3" else "azure")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = BUCKET if kind == "s3" else "istore"
    return Location.parse(f"{kind}://{bucket}/{uuid.uuid4().hex[:8]}")


def root_of(kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp: Path) -> Location:
    if kind == "local":
        return Location.parse(tmp / "data")
    return remote_root(kind, request, monkeypatch)


KINDS = ["local", "s3", "az"]


# -- documents --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_editors_lose_no_change(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    """16 writers, each on its own handle (as on its own node), each creating a key at
    the same moment: every key is there afterwards (no write overwrote another)."""
    location = root_of(kind, request, monkeypatch, tmp_path)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def create(i: int) -> None:
        ring = KeyRing(SharedState(location, tmp_path / f"node{i}").document("keys.json"))
        barrier.wait()
        try:
            ring.create(["read"], name=f"k{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = {k["name"] for k in KeyRing(SharedState(location).document("keys.json")).describe()}
    assert names == {f"k{i}" for i in range(16)}


@pytest.mark.parametrize("kind", KINDS)
def test_retention_save_refuses_to_overwrite_a_newer_version(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    location = root_of(kind, request, monkeypatch, tmp_path)
    a = SharedState(location, tmp_path / "a").document("retention.json")
    b = SharedState(location, tmp_path / "b").document("retention.json")
    mine, theirs = Retention.load(a), Retention.load(b)
    mine.set("support", 30)
    mine.save(a)
    theirs.set("other", 5)
    with pytest.raises(Conflict, match="changed since it was read"):
        theirs.save(b)  # read before the first save: would drop "support"
    fresh = Retention.load(b)
    fresh.set("other", 5)
    fresh.save(b)
    assert Retention.load(a).use_cases == {"support": 30, "other": 5}


def test_local_documents_keep_their_mode_and_lock(tmp_path: Path) -> None:
    doc = LocalDocument(tmp_path / "keys.json")
    for e in doc.edits():
        e.new = b'{"keys": []}'
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert (tmp_path / "keys.lock").exists()
    # A second editor waits for the first (the fcntl lock), then sees its write.
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait()
        for e in doc.edits():
            order.append(f"second saw {e.data!r}")

    t = threading.Thread(target=second)
    t.start()
    for e in doc.edits():
        inside.set()
        time.sleep(0.2)
        order.append("first")
        e.new = b"1"
    t.join()
    assert order == ["first", "second saw b'1'"]


@pytest.mark.parametrize("kind", ["s3", "az"])
def test_a_change_reaches_a_watching_node_and_the_cache_outlives_the_bucket(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    location = remote_root(kind, request, monkeypatch)
    node = SharedState(location, tmp_path / "node", refresh_s=0.2).document("keys.json")
    stop = threading.Event()
    node.watch(stop)
    try:
        assert node.read() == (None, None)
        other = SharedState(location, tmp_path / "other").document("keys.json")
        for e in other.edits():
            e.new = b'{"keys": []}'
        deadline = time.monotonic() + 30
        while node.read()[1] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.read()[1] == b'{"keys": []}'
        assert (tmp_path / "node" / "cache" / "keys.json").read_bytes() == b'{"keys": []}'
    finally:
        stop.set()
    # A node that cannot reach the bucket starts from its local copy; one without a
    # copy refuses (503) rather than acting as if no key existed.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
    dead = Location.parse(location.uri)
    cached = SharedState(dead, tmp_path / "node").document("keys.json")
    assert isinstance(cached, RemoteDocument)
    assert cached.read()[1] == b'{"keys": []}'
    bare = SharedState(dead, tmp_path / "bare").document("keys.json")
    with pytest.raises(Unavailable, match="no local copy"):
        KeyRing(bare).authenticate(None)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_nodes_own_copy_from_before_is_uploaded_once(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    """Keys made before they were shared sit in each node's state folder: the first
    node to look uploads its copy; a node whose copy differs keeps the shared one."""
    location = root_of(kind, request, monkeypatch, tmp_path)
    old_a, old_b = tmp_path / "a", tmp_path / "b"
    old_a.mkdir()
    old_b.mkdir()
    _, secret = KeyRing(old_a).create(["admin"], name="from-a")  # the old layout
    KeyRing(old_b).create(["admin"], name="from-b")
    ring_a = KeyRing(SharedState(location, old_a).document("keys.json"))
    assert ring_a.authenticate(f"Bearer {secret}").name == "from-a"
    assert not (old_a / "keys.json").exists() and (old_a / "keys.json.migrated").exists()
    ring_b = KeyRing(SharedState(location, old_b).document("keys.json"))
    assert [k["name"] for k in ring_b.describe()] == ["from-a"]  # the first upload wins
    assert (old_b / "keys.json.migrated").exists()
    fresh = KeyRing(SharedState(location, tmp_path / "new-node").document("keys.json"))
    assert fresh.authenticate(f"Bearer {secret}").name == "from-a"


# -- the lease --------------------------------------------------------------------------
def _race(location: Location, n: int, ttl_s: float = 300.0) -> list[Lease]:
    """``n`` claimants (new writers) at once; returns the leases granted (still held)."""
    tag = uuid.uuid4().hex[:6]
    barrier = threading.Barrier(n)
    won: list[Lease] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        lease = Lease(location, "maintenance", f"node-{tag}-{i}", ttl_s=ttl_s)
        barrier.wait()
        try:
            if lease.__enter__():
                with lock:
                    won.append(lease)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return won


@pytest.mark.parametrize("kind", KINDS)
def test_of_many_concurrent_claimants_exactly_one_holds_the_lease(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    location = root_of(kind, request, monkeypatch, tmp_path)
    if kind == "local":
        (tmp_path / "data").mkdir()
    for round_ in range(5):
        won = _race(location, 24)
        assert len(won) == 1, f"round {round_}: {[w.owner for w in won]} all hold the lease"
        held = won[0]
        # While it is held, nobody else gets it.
        assert not _race(location, 8)
        held.__exit__(None, None, None)
    # An expired lease (its holder died): again exactly one of the racers takes it.
    if kind != "local":
        dead = Lease(location, "maintenance", "dead", ttl_s=0.5)
        assert dead.__enter__()
        dead._stop.set()  # dies: no renewal, no release
        time.sleep(1.0)
        won = _race(location, 24)
        assert [w.owner for w in won] and len(won) == 1
        won[0].__exit__(None, None, None)


@pytest.mark.parametrize("kind", ["s3", "az"])
@pytest.mark.parametrize("before", ["absent", "expired"])
def test_a_claim_made_on_a_stale_read_never_succeeds(
    kind: str, before: str, request: pytest.FixtureRequest, monkeypatch: Any
) -> None:
    """The slow claimant: it reads the lease (absent, or expired), then another node
    claims it, then it writes its own claim. A write that is not conditional on what it
    read (the earlier best-effort lease) would take the lease from the other node."""
    location = remote_root(kind, request, monkeypatch)
    if before == "expired":
        with Lease(location, "maintenance", "old"):
            pass  # released: expiry 0
    fast = Lease(location, "maintenance", "fast")
    slow = Lease(location, "maintenance", "slow")
    write = slow._put

    def late_write(until: float, *, create: bool = False) -> bool:
        assert fast.__enter__()  # the other node claims between our read and our write
        return write(until, create=create)

    monkeypatch.setattr(slow, "_put", late_write)
    assert not slow.__enter__()
    with Lease(location, "maintenance", "third") as third:
        assert not third  # fast holds it
    fast.__exit__(None, None, None)


@pytest.mark.parametrize("kind", ["s3"])
def test_a_held_lease_is_renewed_and_released(
    kind: str, request: pytest.FixtureRequest, monkeypatch: Any, tmp_path: Path
) -> None:
    import obstore

    location = remote_root(kind, request, monkeypatch)
    with Lease(location, "maintenance", "holder", ttl_s=0.6) as held:
        assert held
        time.sleep(1.5)  # past its first expiry: renewed meanwhile, so still held
        with Lease(location, "maintenance", "other") as other:
            assert not other
    lease = Lease(location, "maintenance", "reader")
    body = orjson.loads(bytes(obstore.get(lease.store, lease.key).bytes()))
    assert body == {"owner": "holder", "until": 0.0}  # released
    with Lease(location, "maintenance", "other") as other:
        assert other
