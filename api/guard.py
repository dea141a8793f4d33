"""The gate every HTTP request passes before any route: who is calling, from where,
and with how big a body.

- **Open mode** (no API key exists; the server is on loopback): the ``Host`` header
  must name this server (a loopback name, the listen address or ``allowed_hosts``), so
  a web page that rebinds its DNS name to 127.0.0.1 reads nothing; a write must come
  from this origin (a browser's ``Origin``/``Sec-Fetch-Site`` say so) and, under
  ``/api/`` and ``/v1/``, carry a JSON, NDJSON or protobuf content type, so no page
  can send the "simple" cross-site requests (``text/plain``, forms) that skip CORS.
- **API routes** (``/api/…``, ``/v1/…``): exactly one ``Authorization`` header; the key
  is authenticated (scrypt off the event loop) *before* a byte of the body is read,
  so a caller without a valid key cannot make the server read or parse anything; then
  the body is read up to ``max_body_bytes`` (413 beyond, announced or not) and handed
  to the route. The principal travels in the ASGI scope's ``state`` for the routes'
  scope checks (``api.auth``)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.keys import KeyRing, Principal
from store.errors import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

API_PREFIXES = ("/api/", "/v1/")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Content types a browser cannot send cross-site without a CORS preflight.
BODY_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "application/x-protobuf",
    "application/protobuf",
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# OTLP paths (api.routes.otlp): the Langfuse SDK authenticates with HTTP Basic
# ``public_key:secret_key``; there the secret is the istore key.
BASIC_PATHS = frozenset({"/v1/traces", "/v1/logs", "/api/public/otel/v1/traces"})


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def header_values(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k == name]


def one_header(scope: Scope, name: bytes) -> str | None:
    values = header_values(scope, name)
    if len(values) > 1:
        raise InvalidRequest(
            f"send one {name.decode()} header, not {len(values)}", param=name.decode()
        )
    return values[0] if values else None


def basic_as_bearer(authorization: str | None) -> str | None:
    """``Basic base64(public:secret)`` → ``Bearer secret``; anything else unchanged."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        user_pass = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Basic credentials are not base64 of 'public:secret'") from None
    secret = user_pass.partition(":")[2]
    if not secret:
        raise Unauthorized("the Basic credentials carry no secret: send 'public:<API key>'")
    return f"Bearer {secret}"


def _host_name(host: str) -> str:
    """``Host`` without its port, brackets removed from an IPv6 address."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Gate:
    """The checks above, for one app (its settings and its key ring)."""

    def __init__(self, keys: KeyRing, listen_host: str, allowed_hosts: str,
                 max_body_bytes: int) -> None:  # fmt: skip
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        extra = {h.strip().lower() for h in allowed_hosts.split(",") if h.strip()}
        names = set(LOOPBACK_NAMES) | extra
        try:
            unspecified = ipaddress.ip_address(listen_host).is_unspecified
        except ValueError:
            unspecified = False
        if not unspecified:
            names.add(listen_host.lower())
        self.hosts = frozenset(names)

    def check_origin(self, scope: Scope) -> None:
        """Open mode only: the request names this server and, if it writes, comes from
        this origin with a content type no page can send cross-site."""
        host = one_header(scope, b"host") or ""
        if _host_name(host) not in self.hosts:
            raise Forbidden(
                f"Host {host!r} is not this server's name; without API keys the server "
                "answers only requests addressed to its own name (add others with "
                "ISTORE_ALLOWED_HOSTS)",
                code="host_not_allowed",
            )
        if scope["method"] not in WRITE_METHODS:
            return
        origin = one_header(scope, b"origin")
        scheme = scope.get("scheme", "http")
        if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
            raise Forbidden(
                f"a write from origin {origin!r} is refused: without API keys only this "
                "server's own pages and non-browser clients may write",
                code="cross_origin",
            )
        site = one_header(scope, b"sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Forbidden(f"a {site} write is refused without API keys", code="cross_origin")
        if is_api(scope["path"]):
            ctype = (one_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            declared = one_header(scope, b"content-length")
            chunked = "chunked" in (one_header(scope, b"transfer-encoding") or "").lower()
            has_body = chunked or (declared is not None and declared.strip() not in ("", "0"))
            if has_body and ctype not in BODY_TYPES:
                raise UnsupportedMediaType(
                    f"Content-Type {ctype or '(none)'!r} is not accepted; send "
                    "application/json (or application/x-ndjson for many interactions)",
                    param="content-type",
                )

    async def admit(self, scope: Scope, receive: Receive) -> tuple[Principal, Receive]:
        """For an API request: the caller (authenticated before the body is read) and
        a ``receive`` that hands the route the body, read whole within the limit."""
        authorization = one_header(scope, b"authorization")
        if scope["path"] in BASIC_PATHS:
            authorization = basic_as_bearer(authorization)
        principal = await self.keys.authenticate_async(authorization)
        if scope["method"] not in WRITE_METHODS:
            return principal, receive
        body = await read_limited(scope, receive, self.max_body_bytes)
        return principal, replay(body, receive)


async def read_limited(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes (before reading
    them when ``Content-Length`` announces them)."""
    declared = one_header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {int(declared)} bytes; at most {limit} are accepted")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then defers to the real one (which
    reports the client's disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class ClientGone(InvalidRequest):
    """The client disconnected before its request was read (nothing to answer)."""

    code = "client_disconnected"


def principal_of(scope: Scope) -> Principal | None:
    state = scope.get("state")
    return state.get("principal") if isinstance(state, dict) else None


__all__ = ["Gate", "Unauthorized", "is_api", "principal_of"]
