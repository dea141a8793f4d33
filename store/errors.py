"""The domain's error family. An error says what went wrong (``message``), its kind
(``type``, ``code``) and the request field it concerns (``param``); it knows nothing of
HTTP: the web layer maps each class to a status in one table (``api.errors``), the CLI
prints ``Error: …``. ``body()`` is the contract's error object, for whoever renders one
(the gateway inside a stream, the API)."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}  # fmt: skip


class InvalidRequest(StoreError):
    """The request cannot be read (malformed JSON, wrong encoding, bad shape)."""

    type = "invalid_request_error"
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """The request reads, but a field's value is not acceptable."""

    code = "validation_error"


class InvalidQuery(InvalidRequest):
    code = "invalid_query"


class NotFound(StoreError):
    type = "not_found_error"
    code = "not_found"


class PayloadTooLarge(StoreError):
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class QueryTimeout(StoreError):
    type = "invalid_request_error"
    code = "query_timeout"


class Unavailable(StoreError):
    """The store cannot persist or serve right now (disk full, read-only, backlog).
    Nothing was acknowledged; the client may retry after `retry_after` seconds."""

    type = "service_unavailable"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: str | None):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TooManyRequests(StoreError):
    """The caller must slow down (e.g. failed key attempts); retry after ``retry_after``."""

    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: str | None):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Conflict(StoreError):
    """The request contradicts what is stored (e.g. an id already used elsewhere)."""

    type = "conflict"
    code = "conflict"


class StoreLocked(Conflict):
    code = "store_locked"


class Unauthorized(StoreError):
    """No API key, or one that is unknown or revoked."""

    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(StoreError):
    """A valid key without the scope or the use case the request needs."""

    type = "permission_error"
    code = "forbidden"


def require_use_case(
    allowed: frozenset[str] | None, use_case: str, param: str = "use_case", hint: str = ""
) -> None:
    """Forbidden unless ``use_case`` is among ``allowed`` (None: every use case)."""
    if allowed is not None and use_case not in allowed:
        raise Forbidden(
            f"{param}: this API key may not use use case {use_case!r}{hint}",
            param=param,
            code="use_case_forbidden",
        )
