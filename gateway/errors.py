"""The gateway's own error: an upstream model server that failed, timed out or refused
the call. ``status`` is the HTTP status the client gets, decided by what the upstream
did (its own 4xx passed through, else 502, or 504 on a time-out): the one error whose
status is data, not kind."""

from __future__ import annotations

from store.errors import StoreError


class UpstreamError(StoreError):
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
