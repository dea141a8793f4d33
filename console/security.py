"""Who is using the console, and what protects its pages and writes.

**Open mode** (no API key exists): every visitor acts with full rights, exactly as the
API does; ``istore serve`` then listens on loopback only.

**Keys configured**: ``/ui/login`` takes a key, checks it with
``KeyRing.authenticate`` (the API's own verification) and starts a session. The browser
gets only a random session id, in an HttpOnly, SameSite=Strict cookie (Secure when the
request came over https). The key itself is never stored, in the cookie or on disk.
Sessions live in ``console-sessions.json`` beside ``keys.json`` (mode 0600, holding the
SHA-256 of each session id, the key's id and public principal, and the expiry), so
every worker of ``istore serve --workers N`` knows them, and signing out ends a session
everywhere. Every request re-checks that the key is still active (``KeyRing.describe``),
so revoking a key ends its sessions at the next request. Sessions expire after
``SESSION_HOURS``.

**Writes** (any method but GET/HEAD) need: the request's ``Origin`` (else ``Referer``)
to be this server's own origin, and a CSRF token, in the ``X-CSRF-Token`` header (htmx)
or the ``csrf`` form field. With a session the token is derived from the session id
(so a page from another origin cannot know it); in open mode it is a random value in a
SameSite=Strict cookie, repeated in the page (double submit). Scopes are the API's:
a read-only key sees no write control and gets 403 if it tries anyway.

**Every response** carries a Content-Security-Policy allowing only this origin (no
inline script or style, no framing, forms post only here) and ``nosniff``."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request

from service.keys import OPEN, KeyRing, Principal
from store.errors import Forbidden, Unauthorized

SESSION_COOKIE = "istore_session"
CSRF_COOKIE = "istore_csrf"
SESSION_HOURS = 12.0
SESSIONS_FILE = "console-sessions.json"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SignInRequired(Unauthorized):
    """No valid session: the page redirects to /ui/login."""


@dataclass(frozen=True)
class Viewer:
    """The console's user: a principal, and how to protect their writes."""

    principal: Principal
    csrf: str
    session: bool  # signed in with a key (else open mode)
    name: str | None = None

    @property
    def can_write(self) -> bool:
        return self.principal.allows("ingest")


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def csrf_of(sid: str) -> str:
    return hashlib.sha256(b"istore-console-csrf\0" + sid.encode()).hexdigest()[:40]


class Sessions:
    """The session table of one data root (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / SESSIONS_FILE
        self._mu = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._table: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._table = orjson.loads(self.path.read_bytes())["sessions"]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
                self._table = {}  # unreadable: every session is gone, sign in again
            self._stamp = stamp
        return self._table

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._mu:
                self._stamp = None
                table = dict(self._read())
            now = time.time()
            table = {k: v for k, v in table.items() if v.get("expires", 0) > now}
            yield table
            tmp = self.path.with_suffix(".tmp")
            wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(wfd, orjson.dumps({"sessions": table}))
                os.fsync(wfd)
            finally:
                os.close(wfd)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def start(self, principal: Principal, hours: float = SESSION_HOURS) -> str:
        sid = secrets.token_urlsafe(32)
        record = {
            "key_id": principal.key_id,
            "name": principal.name,
            "scopes": sorted(principal.scopes),
            "use_cases": sorted(principal.use_cases) if principal.use_cases is not None else None,
            "expires": time.time() + hours * 3600,
        }
        with self._editing() as table:
            table[_digest(sid)] = record
        return sid

    def end(self, sid: str) -> None:
        with self._editing() as table:
            table.pop(_digest(sid), None)

    def find(self, sid: str) -> dict[str, Any] | None:
        with self._mu:
            record = self._read().get(_digest(sid))
        if record is None or record.get("expires", 0) <= time.time():
            return None
        return record


def sessions_of(state: Any) -> Sessions:
    """The app's session table (beside its keys), made on first use."""
    table = getattr(state, "console_sessions", None)
    if table is None or table.path.parent != Path(state.keys.root):
        table = state.console_sessions = Sessions(state.keys.root)
    return table  # type: ignore[no-any-return]


def _active(keys: KeyRing, key_id: str | None) -> bool:
    """The key still exists and is not revoked."""
    for k in keys.describe():
        if k.get("id") == key_id:
            return not k.get("revoked_at")
    return False


def viewer(request: Request) -> Viewer:
    """The console's user for this request, or ``SignInRequired``."""
    state = request.app.state
    keys: KeyRing = state.keys
    if not keys.active():
        token = request.cookies.get(CSRF_COOKIE) or ""
        return Viewer(OPEN, token, session=False)
    sid = request.cookies.get(SESSION_COOKIE)
    record = sessions_of(state).find(sid) if sid else None
    if record is None or not _active(keys, record.get("key_id")):
        raise SignInRequired("sign in with an API key")
    principal = Principal(
        record["key_id"],
        record.get("name"),
        frozenset(record["scopes"]),
        frozenset(record["use_cases"]) if record.get("use_cases") is not None else None,
    )
    assert sid is not None
    return Viewer(principal, csrf_of(sid), session=True, name=record.get("name"))


def same_origin(request: Request) -> bool:
    """The request comes from a page of this server (``Origin``, else ``Referer``)."""
    host = request.headers.get("host", "")
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not source or source == "null" or not host:
        return False
    parts = urlsplit(source)
    return parts.netloc == host and parts.scheme in ("http", "https")


def check_write(
    request: Request, v: Viewer, token: str | None, scope: str | None = "ingest"
) -> None:
    """A write from the console: same origin, the CSRF token, and the scope."""
    if not same_origin(request):
        raise Forbidden("cross-origin request refused", code="cross_origin")
    given = request.headers.get("x-csrf-token") or token or ""
    if not v.csrf or not hmac.compare_digest(given.encode(), v.csrf.encode()):
        raise Forbidden("missing or wrong CSRF token; reload the page", code="csrf")
    if scope is not None:
        v.principal.require(scope)


def secure(request: Request) -> bool:
    return (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


def cookie_args(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": secure(request), "path": "/ui"}
