"""API keys: created by ``istore keys create``, checked on every ``/api/v1`` request.

A key looks like ``isk_<key id>_<secret>``. The key id (12 hex digits) is public: it
names the key in ``keys list`` and finds its record without trying every hash. The
secret is 32 random bytes; only its scrypt hash (with a per-key salt) is stored, in
``<data>/keys.json`` with mode 0600. Hashes are compared with ``hmac.compare_digest``.

scrypt costs ~30-80 ms on purpose (a stolen keys file does not give the keys away),
so a verified key is remembered by the SHA-256 of the whole key (in memory only), and
a wrong secret for a real key id is remembered too, so a client repeating a bad key
cannot make the server burn CPU. A request whose key id is unknown costs nothing.
Both memories are dropped whenever the file changes (a revoke takes effect at the
next request).

New secrets are verified off the event loop, on a small pool of their own
(``VERIFY_THREADS``), one verification per key id at a time: requests that carry the
same key wait for that one verification; a different secret for a key id being
verified, or for a key id whose recent verifications failed (backing off up to
``MAX_BACKOFF_S``), is answered 429 without hashing. So a flood of wrong secrets
costs at most one scrypt per key id per back-off period and never stalls other
requests; a client with the right key is unaffected once its key is remembered.

Writers (the CLI, and the server recording ``last_used_at``) take an exclusive
``fcntl`` lock on ``keys.lock`` and replace the file atomically."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from store.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    require_use_case,
)
from store.wal import fsync_path

SCOPES = ("ingest", "read", "admin")
PREFIX = "isk_"
FILE = "keys.json"

_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32}
_NEGATIVE_MAX = 4096
VERIFY_THREADS = 2
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. ``use_cases`` None: every use case."""

    key_id: str | None
    name: str | None
    scopes: frozenset[str]
    use_cases: frozenset[str] | None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            have = ", ".join(sorted(self.scopes))
            raise Forbidden(
                f"this API key has scope {have}; this request needs {scope}",
                code="insufficient_scope",
            )

    def check_use_case(self, use_case: str, param: str = "use_case") -> None:
        require_use_case(self.use_cases, use_case, param)

    def visible(self, requested: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """The use cases a read may cover: ``requested`` (each must be allowed), or all
        the key's use cases when none are requested. None: no restriction."""
        if self.use_cases is None:
            return requested or None
        if requested:
            for uc in requested:
                self.check_use_case(uc)
            return requested
        return tuple(sorted(self.use_cases))


OPEN = Principal(None, None, frozenset(SCOPES), None)  # no keys configured


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)  # type: ignore[arg-type]


_POOL = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="istore-keycheck")


def _check_secret(record: dict[str, Any], secret: str) -> bool:
    expected = bytes.fromhex(record["hash"])
    return hmac.compare_digest(_hash(secret, bytes.fromhex(record["salt"])), expected)


@dataclass(frozen=True)
class _Check:
    """A secret for a real key id, not verified yet."""

    record: dict[str, Any]
    secret: str
    digest: bytes


class KeyRing:
    """The keys of one data root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / FILE
        self._mu = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, dict[str, Any]] = {}
        self._good: dict[bytes, Principal] = {}
        self._bad: set[bytes] = set()
        self._verifying: dict[str, tuple[bytes, Future[bool]]] = {}  # key id → running
        self._backoff: dict[str, tuple[int, float]] = {}  # key id → (failures, until)
        # New secrets: scrypt runs ("hashed"), and requests answered by one: "verified"
        # or "refused"; "throttled": answered 429 without hashing.
        self.counts = {"hashed": 0, "verified": 0, "refused": 0, "throttled": 0}
        self._used: dict[str, str] = {}  # key id → last use, not yet written

    # -- reading -------------------------------------------------------------------------
    def _load(self) -> None:
        """Re-read the file if it changed since the last look (one ``stat`` otherwise)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        keys = self._read() if stamp is not None else {}
        self._keys = keys
        self._stamp = stamp
        # Keep what was verified for keys that are unchanged (``last_used_at`` updates
        # rewrite the file every half minute); forget everything else.
        self._good = {
            d: p for d, p in self._good.items()
            if (k := keys.get(p.key_id or "")) is not None and not k.get("revoked_at")
            and _principal(k) == p
        }  # fmt: skip
        self._bad.clear()

    def _read(self) -> dict[str, dict[str, Any]]:
        """The keys in the file. A file that exists but cannot be read fails closed: no
        request is served (503) until it is fixed; only a missing file means open."""
        try:
            data = orjson.loads(self.path.read_bytes())
            keys = {k["id"]: k for k in data["keys"]}
            for k in keys.values():
                _principal(k), k["hash"], k["salt"]  # noqa: B018 - shape check
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise Unavailable(
                f"the API key file {self.path} cannot be read ({exc.__class__.__name__}); "
                "fix or remove it",
                retry_after=30,
            ) from None
        return keys

    def active(self) -> bool:
        """Whether any key was ever created: then every request needs a valid one.
        Revoking the last key locks the API; deleting ``keys.json`` opens it again."""
        with self._mu:
            self._load()
            return bool(self._keys)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header; ``OPEN`` when no key exists.
        Blocks while a new secret is verified (use ``authenticate_async`` on a loop)."""
        step = self._begin(authorization)
        if isinstance(step, Principal):
            return step
        return self._finish(step, self._verification(step).result())

    async def authenticate_async(self, authorization: str | None) -> Principal:
        """``authenticate`` without blocking the event loop on scrypt."""
        step = self._begin(authorization)
        if isinstance(step, Principal):
            return step
        ok = await asyncio.wrap_future(self._verification(step))
        return self._finish(step, ok)

    def _begin(self, authorization: str | None) -> Principal | _Check:
        """What the header says, as far as memory knows: a principal, or a secret
        still to be verified (or Unauthorized)."""
        with self._mu:
            self._load()
            if not self._keys:
                return OPEN
            if not authorization:
                raise Unauthorized(
                    "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
                )
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("the Authorization header must be 'Bearer <key>'")
            digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
            known = self._good.get(digest)
            if known is not None:
                self._used[known.key_id or ""] = _now()
                return known
            if digest in self._bad:
                raise Unauthorized("invalid API key")
            key_id, secret = _split(token)
            record = self._keys.get(key_id) if key_id else None
            if record is None or record.get("revoked_at"):
                raise Unauthorized("invalid API key")
            return _Check(record, secret, digest)

    def _verification(self, check: _Check) -> Future[bool]:
        """The (shared) verification of ``check``'s secret, or TooManyRequests."""
        key_id = check.record["id"]
        with self._mu:
            running = self._verifying.get(key_id)
            if running is not None:
                digest, fut = running
                if digest == check.digest:
                    return fut  # the same key, already being verified: wait for it
                self.counts["throttled"] += 1
                raise TooManyRequests(
                    "another secret for this API key is being verified; retry shortly",
                    retry_after=1,
                )
            wait = self._backoff.get(key_id, (0, 0.0))[1] - time.monotonic()
            if wait > 0:
                self.counts["throttled"] += 1
                raise TooManyRequests(
                    "too many failed attempts for this API key; retry later",
                    retry_after=max(1, int(wait + 0.999)),
                )
            fut = _POOL.submit(_check_secret, check.record, check.secret)
            self.counts["hashed"] += 1
            self._verifying[key_id] = (check.digest, fut)

        def done(_: Future[bool]) -> None:
            with self._mu:
                if self._verifying.get(key_id, (b"", None))[1] is fut:
                    del self._verifying[key_id]

        fut.add_done_callback(done)
        return fut

    def _finish(self, check: _Check, ok: bool) -> Principal:
        record, digest = check.record, check.digest
        with self._mu:
            # The file may have changed meanwhile (a revoke): decide on what it says now.
            self._load()
            now = self._keys.get(record["id"])
            if now is None or now.get("revoked_at") or now.get("hash") != record["hash"]:
                raise Unauthorized("invalid API key")
            self.counts["verified" if ok else "refused"] += 1
            if not ok:
                if len(self._bad) >= _NEGATIVE_MAX:
                    self._bad.clear()
                self._bad.add(digest)
                fails = self._backoff.get(record["id"], (0, 0.0))[0] + 1
                # Two free mistakes, then a doubling pause (0.1 s, 0.2 s … MAX_BACKOFF_S).
                delay = 0.0 if fails < 3 else min(MAX_BACKOFF_S, 0.1 * 2 ** (fails - 3))
                self._backoff[record["id"]] = (fails, time.monotonic() + delay)
                raise Unauthorized("invalid API key")
            self._backoff.pop(record["id"], None)
            p = _principal(now)
            self._good[digest] = p
            self._used[record["id"]] = _now()
            return p

    def describe(self) -> list[dict[str, Any]]:
        """Every key's public fields (never a hash or a secret)."""
        with self._mu:
            self._load()
            keys = list(self._keys.values())
        public = ("id", "name", "scopes", "use_cases", "created_at", "last_used_at", "revoked_at")
        return [{f: k.get(f) for f in public} for k in keys]

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The keys, locked against other writers; written back atomically on exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = self._read() if self.path.exists() else {}
            yield keys
            tmp = self.path.with_suffix(".tmp")
            data = orjson.dumps({"keys": list(keys.values())}, option=orjson.OPT_INDENT_2)
            wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(wfd, data)
                os.fsync(wfd)
            finally:
                os.close(wfd)
            os.replace(tmp, self.path)
            fsync_path(self.root)
        finally:
            os.close(fd)

    def create(
        self, scopes: list[str], use_cases: list[str] | None = None, name: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """A new key: its public record and the secret (shown once, never stored)."""
        bad = [s for s in scopes if s not in SCOPES]
        if not scopes or bad:
            raise InvalidRequest(
                f"scope must be one of {', '.join(SCOPES)}, got {bad or scopes}", param="scope"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = {
            "id": key_id,
            "name": name,
            "scopes": sorted(set(scopes)),
            "use_cases": sorted(set(use_cases)) if use_cases else None,
            "created_at": _now(),
            "last_used_at": None,
            "revoked_at": None,
            "salt": salt.hex(),
            "hash": _hash(secret, salt).hex(),
        }
        with self._editing() as keys:
            keys[key_id] = record
        public = {k: v for k, v in record.items() if k not in ("salt", "hash")}
        return public, f"{PREFIX}{key_id}_{secret}"

    def revoke(self, ref: str) -> dict[str, Any]:
        """Revoke the key with id (or name) ``ref``."""
        with self._editing() as keys:
            hits = [k for k in keys.values() if ref in (k["id"], k.get("name"))]
            if not hits:
                raise NotFound(f"no API key with id or name {ref!r}", param="key")
            if len(hits) > 1:
                raise InvalidRequest(
                    f"{len(hits)} keys are named {ref!r}; revoke by id", param="key"
                )
            key = hits[0]
            key["revoked_at"] = key.get("revoked_at") or _now()
        return {k: v for k, v in key.items() if k not in ("salt", "hash")}

    def save_usage(self) -> None:
        """Write the ``last_used_at`` times seen since the last call."""
        with self._mu:
            used, self._used = self._used, {}
        if not used:
            return
        with self._editing() as keys:
            for key_id, when in used.items():
                if key_id in keys:
                    keys[key_id]["last_used_at"] = max(keys[key_id].get("last_used_at") or "", when)


def _principal(record: dict[str, Any]) -> Principal:
    return Principal(
        record["id"],
        record.get("name"),
        frozenset(record["scopes"]),
        frozenset(record["use_cases"]) if record.get("use_cases") else None,
    )


def _split(token: str) -> tuple[str | None, str]:
    if not token.startswith(PREFIX):
        return None, ""
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 12:
        return None, ""
    return key_id, secret


def usage_saver(ring: KeyRing, stop: threading.Event, every_s: float = 30.0) -> threading.Thread:
    """A thread that records key use every ``every_s`` seconds until ``stop``."""

    def run() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):
                ring.save_usage()

    t = threading.Thread(target=run, name="istore-keys", daemon=True)
    t.start()
    return t
