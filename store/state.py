"""The small shared documents of a data root, and the maintenance lease.

Besides its tables a data root holds two small JSON documents: the API keys
(``keys.json``) and the retention rules (``retention.json``). They live with the data,
so every node of a shared root reads the same ones, and a new node needs only the data
URI and its own log folder.

- **Local root**: files ``<root>/<name>`` (mode 0600), changed under an ``fcntl`` lock on
  ``<root>/<stem>.lock`` and replaced atomically (temporary file, fsync, rename, fsync of
  the folder). Readers ``stat`` the file at each use, so a change is seen at once.
- **Object storage**: objects ``<root>/_istore/<name>``, changed only by conditional
  writes (create if absent; replace if the ETag or generation is still the one read),
  so two editors never overwrite each other: the loser reads again and re-applies its
  change. A node keeps the last copy in memory and in ``<cache>/<name>``; a watching
  node (a server) re-reads it every ``refresh_s`` seconds with a conditional GET (an
  unchanged document costs no body), so a change made anywhere reaches every node within
  ``refresh_s`` plus one request. A node that cannot reach the bucket keeps its last copy
  (logged, and ``age`` grows) rather than refusing every request; one that never had a
  copy refuses (503) until it can read it.

Upgrading: object-store nodes used to keep their own copies in their state folder. A
node that finds no shared document but a copy of its own (``<legacy>/<name>``) uploads it
(create if absent: when several nodes do, the first wins) and renames its copy to
``<name>.migrated``. The same holds for a local root whose documents were in a separate
``ISTORE_STATE_DIR``.

``Lease``: at most one holder at a time of a named job over the data root (maintenance
among several writers), by ``flock`` locally and by a conditional write on object
storage; see its docstring.

Object storage is reached through ``obstore`` (the Rust ``object_store`` crate that
``deltalake`` is built on, with the same configuration keys), whose put modes are the
conditional writes of each cloud: S3 ``If-None-Match``/``If-Match``, GCS generation
preconditions, Azure ETag conditions.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from store.errors import Conflict, StoreError, Unavailable
from store.files import atomic_write
from store.location import Location

log = logging.getLogger("istore.state")

STATE_PREFIX = "_istore"
REFRESH_S = 2.0  # how often a watching node re-reads a shared document on object storage
EDIT_ATTEMPTS = 20


def object_store(location: Location) -> Any:
    """An ``obstore`` store rooted at the data root's bucket and prefix."""
    from obstore.store import AzureStore, GCSStore, S3Store

    bucket, _, prefix = location.uri.split("://", 1)[1].partition("/")
    config = dict(location.options() or {})
    # Small documents: fail in seconds, not after obstore's default of three minutes of
    # retries (a node keeps its last copy meanwhile).
    client: dict[str, Any] = {"connect_timeout": "5s", "timeout": "20s"}
    # deltalake takes the client's "allow http" among the store's keys; obstore, for
    # Azure and GCS, only among the client options.
    for key in [k for k in config if k.lower().endswith("allow_http")]:
        client["allow_http"] = config.pop(key).lower() == "true"
    retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=15)}
    kw: dict[str, Any] = {
        "prefix": prefix or None, "config": config, "client_options": client,
        "retry_config": retry,
    }  # fmt: skip
    if location.scheme == "s3":
        return S3Store(bucket, **kw)
    if location.scheme == "gs":
        return GCSStore(bucket, **kw)
    return AzureStore(bucket, **kw)


@dataclass
class Edit:
    """One attempt at changing a document: ``data`` as read (None: absent) at version
    ``stamp``; set ``new`` to the new content (leave it None to write nothing)."""

    data: bytes | None
    stamp: object = None
    new: bytes | None = None


class Document:
    """A small document of the data root. ``stamp()`` changes when the content may
    have, and is cheap: a ``stat``; on object storage the watched copy's ETag (no
    network), or, unwatched, a read at most every ``refresh_s``. ``read()`` gives the
    content (None: absent)."""

    name: str
    where: str

    def stamp(self) -> object:
        raise NotImplementedError

    def read(self) -> tuple[object, bytes | None]:
        raise NotImplementedError

    def edits(self) -> Iterator[Edit]:
        """Read-modify-write attempts: ``for e in doc.edits(): e.new = change(e.data)``.
        The write happens when the loop body ends; if another writer changed the
        document meanwhile, the body runs again on what it wrote."""
        raise NotImplementedError

    def write_if(self, stamp: object, data: bytes) -> None:
        """Write ``data`` if the document is still at ``stamp`` (from ``read``); else
        ``Conflict``."""
        for e in self.edits():
            if e.stamp != stamp:
                raise Conflict(
                    f"{self.where} changed since it was read (another node or command "
                    "wrote it); run the command again",
                    code="changed_concurrently",
                )
            e.new = data

    def watch(self, stop: threading.Event) -> None:
        """Keep the document fresh until ``stop`` (object storage; locally a no-op)."""

    def status(self) -> dict[str, Any]:
        return {"where": self.where}


class LocalDocument(Document):
    def __init__(self, path: Path, *, mode: int = 0o600, legacy: Path | None = None) -> None:
        self.path = path
        self.name = path.name
        self.where = str(path)
        self.mode = mode
        self.legacy = legacy if legacy is not None and legacy != path else None
        self._migrated = False

    def _migrate(self) -> None:
        if self._migrated or self.legacy is None:
            return
        self._migrated = True
        if not self.legacy.exists():
            return
        data = self.legacy.read_bytes()
        for e in self.edits():
            if e.data is None:
                e.new = data
            elif e.data != data:
                log.warning("%s already exists and differs from %s, which is set aside: "
                            "the first is used", self.where, self.legacy)  # fmt: skip
        _retire(self.legacy, self.where)

    def stamp(self) -> object:
        self._migrate()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> tuple[object, bytes | None]:
        self._migrate()
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                return (st.st_ino, st.st_mtime_ns, st.st_size), f.read()
        except FileNotFoundError:
            return None, None

    def edits(self) -> Iterator[Edit]:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{self.path.stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    data: bytes | None = f.read()
                stamp: object = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                data, stamp = None, None
            e = Edit(data, stamp)
            yield e
            if e.new is not None:
                atomic_write(self.path, e.new, self.mode)
        finally:
            os.close(fd)


class RemoteDocument(Document):
    def __init__(
        self,
        location: Location,
        name: str,
        *,
        cache: Path | None,
        legacy: Path | None = None,
        refresh_s: float = REFRESH_S,
        store: Any = None,
    ) -> None:
        self.location = location
        self.name = name
        self.key = f"{STATE_PREFIX}/{name}"
        self.where = f"{location.uri}/{self.key}"
        self.cache = cache / name if cache is not None else None
        self.legacy = legacy
        self.refresh_s = refresh_s
        self._store = store
        self._mu = threading.Lock()
        self._etag: str | None = None
        self._version: str | None = None
        self._data: bytes | None = None
        self._loaded = False
        self._checked = 0.0  # monotonic time of the last successful read
        self._watching = False
        self.errors = 0
        self.last_error: str | None = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = object_store(self.location)
        return self._store

    # -- reading ------------------------------------------------------------------------
    def _fetch(self) -> None:
        """Read the object if it changed since the last read (conditional GET)."""
        import obstore
        from obstore.exceptions import NotModifiedError

        self._migrate()
        with self._mu:
            etag, loaded = self._etag, self._loaded
        opts: dict[str, Any] = {"if_none_match": etag} if (loaded and etag) else {}
        try:
            got = obstore.get(self.store, self.key, options=opts)  # type: ignore[arg-type]
        except NotModifiedError:
            with self._mu:
                self._checked = time.monotonic()
            return
        except FileNotFoundError:
            self._install(None, None, None)
            return
        data = bytes(got.bytes())
        self._install(got.meta.get("e_tag"), got.meta.get("version"), data)

    def _install(self, etag: str | None, version: str | None, data: bytes | None) -> None:
        """Make a read current: the local copy first, so that what a node uses is
        always what it would start from."""
        with self._mu:
            changed = not self._loaded or etag != self._etag
        if changed and self.cache is not None:
            try:
                if data is None:
                    self.cache.unlink(missing_ok=True)
                else:
                    atomic_write(self.cache, data, 0o600)
            except OSError as exc:  # a cache that cannot be written is only a cache
                log.warning("could not write the local copy %s: %s", self.cache, exc)
        with self._mu:
            self._etag, self._version, self._data = etag, version, data
            self._loaded = True
            self._checked = time.monotonic()
            self.last_error = None

    def _refresh(self) -> None:
        """Read now; on failure keep what is known (or the local copy)."""
        try:
            self._fetch()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            with self._mu:
                loaded = self._loaded
            if not loaded and self.cache is not None and self.cache.exists():
                log.warning("cannot read %s (%s); using the local copy %s", self.where,
                            self.last_error, self.cache)  # fmt: skip
                with self._mu:
                    self._data, self._etag, self._loaded = self.cache.read_bytes(), "cache", True
                return
            if not loaded:
                raise Unavailable(
                    f"cannot read {self.where} ({self.last_error}) and there is no local copy yet",
                    retry_after=5,
                ) from None
            log.warning("cannot read %s, keeping the copy from %.0f s ago: %s", self.where,
                        time.monotonic() - self._checked, self.last_error)  # fmt: skip

    def stamp(self) -> object:
        with self._mu:
            fresh = self._loaded and (
                self._watching or time.monotonic() - self._checked < self.refresh_s
            )
            if fresh:
                return self._etag if self._data is not None else None
            if self._watching:  # the watcher has not managed a first read: no copy
                raise Unavailable(
                    f"cannot read {self.where} ({self.last_error}) and there is no local copy yet",
                    retry_after=5,
                )
        self._refresh()
        with self._mu:
            return self._etag if self._data is not None else None

    def read(self) -> tuple[object, bytes | None]:
        """The content: the watched copy, or else read now (a conditional GET)."""
        with self._mu:
            watching = self._watching
        if watching:
            self.stamp()
        else:
            self._refresh()
        with self._mu:
            return (self._etag if self._data is not None else None), self._data

    def watch(self, stop: threading.Event) -> None:
        """Read now, then every ``refresh_s`` on a thread until ``stop``: ``stamp`` and
        ``read`` then never wait for the network."""
        with contextlib.suppress(Unavailable):
            self._refresh()
        with self._mu:
            self._watching = True

        def run() -> None:
            while not stop.wait(self.refresh_s):
                with contextlib.suppress(Exception):
                    self._refresh()
            with self._mu:
                self._watching = False

        threading.Thread(target=run, name=f"istore-state-{self.name}", daemon=True).start()

    def status(self) -> dict[str, Any]:
        with self._mu:
            age = time.monotonic() - self._checked if self._loaded else None
        return {"where": self.where, "age_s": age, "errors": self.errors,
                "last_error": self.last_error}  # fmt: skip

    # -- writing ------------------------------------------------------------------------
    def edits(self) -> Iterator[Edit]:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        self._migrate()
        for _ in range(EDIT_ATTEMPTS):
            try:
                got = obstore.get(self.store, self.key)
                data: bytes | None = bytes(got.bytes())
                etag, version = got.meta.get("e_tag"), got.meta.get("version")
            except FileNotFoundError:
                data, etag, version = None, None, None
            except Exception as exc:
                raise _unreachable(self.where, exc) from None
            e = Edit(data, etag if data is not None else None)
            yield e
            if e.new is None:
                return
            mode: Any = "create" if data is None else _update_mode(etag, version)
            try:
                put = obstore.put(self.store, self.key, e.new, mode=mode, use_multipart=False)
            except (AlreadyExistsError, PreconditionError):
                continue  # another node wrote first: apply the change to what it wrote
            except Exception as exc:
                raise _unreachable(self.where, exc) from None
            self._install(put.get("e_tag"), put.get("version"), e.new)
            return
        raise Conflict(f"{self.where} kept changing under {EDIT_ATTEMPTS} attempts to edit it",
                       code="changed_concurrently")  # fmt: skip

    # -- upgrading ----------------------------------------------------------------------
    def _migrate(self) -> None:
        """Upload this node's own copy if the shared document does not exist yet; set
        the copy aside either way."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        if self.legacy is None or not self.legacy.exists():
            return
        data = self.legacy.read_bytes()
        try:
            obstore.put(self.store, self.key, data, mode="create", use_multipart=False)
            log.warning("%s: uploaded this node's %s (shared by every node from now on)",
                        self.where, self.legacy)  # fmt: skip
        except AlreadyExistsError:
            got = bytes(obstore.get(self.store, self.key).bytes())
            if got != data:
                log.warning("%s already exists and differs from this node's %s, which is "
                            "set aside: the shared one is used",
                            self.where, self.legacy)  # fmt: skip
        _retire(self.legacy, self.where)


def _unreachable(where: str, exc: Exception) -> Unavailable:
    return Unavailable(f"cannot write {where} ({type(exc).__name__}: {exc})", retry_after=5)


def _update_mode(etag: str | None, version: str | None) -> dict[str, str]:
    mode = {}
    if etag:
        mode["e_tag"] = etag
    if version:
        mode["version"] = version
    return mode


def _retire(legacy: Path, where: str) -> None:
    aside = legacy.with_name(legacy.name + ".migrated")
    os.replace(legacy, aside)
    log.warning("%s now lives in %s; the old copy is kept as %s", legacy.name, where, aside)


def document(source: str | Path | Document, name: str) -> Document:
    """``source`` itself, or the local document ``<source>/<name>``."""
    return source if isinstance(source, Document) else LocalDocument(Path(source) / name)


class SharedState:
    """The documents of one data root. ``local``: this node's state folder, which
    holds the local copies of object-store documents (``<local>/cache``) and, from
    before, documents of its own to migrate."""

    def __init__(
        self, location: Location, local: Path | None = None, *, refresh_s: float = REFRESH_S
    ) -> None:
        self.location = location
        self.local = local
        self.refresh_s = refresh_s
        self._docs: dict[str, Document] = {}
        self._store: Any = None
        self._mu = threading.Lock()

    def document(self, name: str) -> Document:
        with self._mu:
            return self._document(name)

    def _document(self, name: str) -> Document:
        doc = self._docs.get(name)
        if doc is None:
            legacy = self.local / name if self.local is not None else None
            if self.location.remote:
                if self._store is None:
                    self._store = object_store(self.location)
                cache = self.local / "cache" if self.local is not None else None
                doc = RemoteDocument(self.location, name, cache=cache, legacy=legacy,
                                     refresh_s=self.refresh_s, store=self._store)  # fmt: skip
            else:
                doc = LocalDocument(self.location.path / name, legacy=legacy)
            self._docs[name] = doc
        return doc


# -- the maintenance lease ----------------------------------------------------------------
class Lease:
    """At most one holder at a time of a named job over the data root (maintenance
    among several writers).

    Local roots: an ``flock`` on ``<root>/<name>.lock``, exact, released by the kernel
    if the holder dies. Object storage: a lease object ``_istore/<name>.json`` holding
    the owner and an expiry, claimed only by a conditional write: create if absent, or
    replace if it is expired (or ours) *and* still the version read. Of any number of
    racing claimants exactly one write succeeds; the others see a failed precondition and
    do not hold the lease. The holder renews it every ``ttl_s / 3`` seconds (again
    conditionally: a renewal that fails means the lease was lost, which is logged), and
    releases it by writing an expiry of 0. A holder that dies holds it until ``ttl_s``
    runs out. Expiry compares wall clocks: nodes' clocks must agree to well within
    ``ttl_s`` (NTP does)."""

    def __init__(self, location: Location, name: str, owner: str, ttl_s: float = 300.0):
        self.location, self.name, self.owner, self.ttl_s = location, name, owner, ttl_s
        self.key = f"{STATE_PREFIX}/{name}.json"
        self.lost = False
        self._fd: int | None = None
        self._store: Any = None
        self._etag: str | None = None
        self._version: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> bool:
        if not self.location.remote:
            fd = os.open(self.location.path / f"{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True
        if not self._claim():
            return False
        self._renewer = threading.Thread(target=self._renew_loop, name="istore-lease",
                                         daemon=True)  # fmt: skip
        self._renewer.start()
        return True

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            return
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join()
        self._renewer = None
        if not self.lost:
            with contextlib.suppress(StoreError):
                self._put(0.0)  # expired at once: the next runner need not wait

    # -- object storage ------------------------------------------------------------------
    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = object_store(self.location)
        return self._store

    def _put(self, until: float, *, create: bool = False) -> bool:
        """Write our claim conditionally; False if the precondition failed."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        body = orjson.dumps({"owner": self.owner, "until": until})
        mode: Any = "create" if create else _update_mode(self._etag, self._version)
        try:
            put = obstore.put(self.store, self.key, body, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:
            raise StoreError(f"the lease {self.key}: {type(exc).__name__}: {exc}") from exc
        self._etag, self._version = put.get("e_tag"), put.get("version")
        return True

    def _claim(self) -> bool:
        import obstore

        for _ in range(3):
            try:
                got = obstore.get(self.store, self.key)
            except FileNotFoundError:
                if self._put(time.time() + self.ttl_s, create=True):
                    return True
                continue  # created by another claimant meanwhile: look at theirs
            try:
                held = orjson.loads(bytes(got.bytes()))
                owner, until = held.get("owner"), float(held.get("until", 0))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                owner, until = None, 0.0  # unreadable: treat as expired
            if owner not in (None, self.owner) and until > time.time():
                return False
            self._etag, self._version = got.meta.get("e_tag"), got.meta.get("version")
            if self._put(time.time() + self.ttl_s):
                return True
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self._put(time.time() + self.ttl_s):
                    self.lost = True
                    log.error("the %s lease was taken over by another node while %s held "
                              "it (its renewal failed for longer than %.0f s?)", self.name,
                              self.owner, self.ttl_s)  # fmt: skip
                    return
            except StoreError as exc:
                log.warning("could not renew the %s lease (will retry): %s", self.name, exc)
