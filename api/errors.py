"""One error shape for every endpoint: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import difflib
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.errors import UpstreamError
from ingest.parse import loc_path
from store.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QueryTimeout,
    StoreError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger("istore.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def error_body(
    status: int, message: str, type_: str | None, param: str | None, code: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type_ or _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = error_body(status, message, type_, param, code)
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


# The HTTP status of each domain error: the one table (the most specific class wins).
STATUS: dict[type[StoreError], int] = {
    StoreError: 500,
    InvalidRequest: 400,
    ValidationFailed: 422,
    UnsupportedMediaType: 415,
    NotFound: 404,
    PayloadTooLarge: 413,
    QueryTimeout: 400,
    Unavailable: 503,
    TooManyRequests: 429,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
}


def status_of(exc: StoreError) -> int:
    if isinstance(exc, UpstreamError):
        return exc.status  # what the upstream did decides (its 4xx, 502, 504)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def render(exc: StoreError, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The one translation of a domain error into an HTTP answer (status, body,
    headers), for the exception handler, the fast lane, the gateway and the gate.
    Server-side failures (5xx other than 503) are logged here, once."""
    status = status_of(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500 and not isinstance(exc, Unavailable | UpstreamError):
        log.error("%s %s failed: %s", method, path, exc.message)
    return status, exc.body(), headers


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    status, body, headers = render(exc, request.method, request.url.path)
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(
            400,
            f"the body is not valid JSON: {first.get('msg')}",
            param="body",
            code="invalid_request",
        )
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] in ("query", "path", "header"):
        loc = loc[1:]
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and field.isidentifier():  # a model-level check names its own field
        loc, msg = (*loc, field), rest
    given = first.get("input")
    if first.get("type") in _SAYS_WHAT_WAS_GIVEN and isinstance(given, str) and len(given) < 80:
        msg += f", got {given!r}"
    param = loc_path(loc) or None
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return error_response(
        422, f"{param}: {msg}{more}" if param else msg + more, param=param, code="validation_error"
    )


# Errors whose message lists what is allowed: adding what was sent makes the fix obvious.
_SAYS_WHAT_WAS_GIVEN = frozenset({"literal_error", "enum", "string_pattern_mismatch"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}" + _route_hint(request)
    return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))


# Plural paths people guess for reading what this API stores in its SQL views.
_VIEWS = {"feedback": "feedback", "feedbacks": "feedback", "comparison": "comparisons",
          "comparisons": "comparisons", "outcome": "outcomes", "outcomes": "outcomes"}  # fmt: skip


def _route_hint(request: Request) -> str:
    """``; did you mean POST /api/v1/feedback?`` for a near miss of a documented route
    (a plural, a typo), from the OpenAPI document; "" when nothing is close."""
    path, method = request.url.path.rstrip("/") or "/", request.method
    try:
        paths: dict[str, Any] = request.app.openapi().get("paths", {})
    except Exception:  # a hint is never worth an error of its own
        return ""
    ops = [(m.upper(), p) for p, item in paths.items() for m in item]
    same = [p for m, p in ops if m == method]
    last = path.rsplit("/", 1)[-1]
    stem = path[: len(path) - len(last)]
    for guess in (stem + last.removesuffix("s"), stem + last + "s"):
        if guess != path and guess in same:
            return f"; did you mean {method} {guess}?"
    if method == "GET" and last in _VIEWS and path.startswith("/api/v1/"):
        view = _VIEWS[last]
        return (f'; to read {view}, use POST /api/v1/sql with {{"sql": "SELECT * FROM {view}"}}'
                ", or GET /api/v1/interactions/{id}, which includes an interaction's feedback "
                "and comparisons")  # fmt: skip
    close = difflib.get_close_matches(path, same, n=1, cutoff=0.85)
    if close:
        return f"; did you mean {method} {close[0]}?"
    other = [f"{m} {p}" for m, p in ops if p == path or p in (stem + last.removesuffix("s"),)]
    return f"; this path answers {', '.join(sorted(other))}" if other else ""


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s: unexpected error", request.method, request.url.path)
    return error_response(500, "internal error; see the server log", code="internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
