"""The store's error family. Each error carries the HTTP status it maps to, so the
API renders it without knowing where it came from, and the CLI prints `Error: …`."""

from __future__ import annotations


class StoreError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(StoreError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    status = 422
    code = "validation_error"


class InvalidQuery(InvalidRequest):
    status = 400
    code = "invalid_query"


class NotFound(StoreError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class PayloadTooLarge(StoreError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class QueryTimeout(StoreError):
    status = 400
    type = "invalid_request_error"
    code = "query_timeout"


class Unavailable(StoreError):
    """The store cannot persist or serve right now (disk full, read-only, backlog).
    Nothing was acknowledged; the client may retry after `retry_after` seconds."""

    status = 503
    type = "service_unavailable"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: str | None):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Conflict(StoreError):
    """Someone else changed what this request meant to change; try again."""

    status = 409
    type = "conflict"
    code = "conflict"


class StoreLocked(StoreError):
    status = 409
    type = "conflict"
    code = "store_locked"


class Unauthorized(StoreError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(StoreError):
    """A valid key without the scope or the use case the request needs."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class UpstreamError(StoreError):
    """The gateway's upstream model server failed, timed out, or refused the call.
    ``status`` is per instance: the upstream's own 4xx, or 502/504."""

    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, param=param, code=code)
        self.status = status
        if type_ is not None:
            self.type = type_
