"""Who may call what: every ``/api/v1`` route names the scope it needs.

``ingest``: write interactions, feedback, comparisons, outcomes, chat.
``read``: list, get, stats, SQL, export.  ``admin``: everything, plus deletes and keys.
With no key ever created (no ``keys.json``) every request acts with
full rights; ``istore serve`` then refuses non-loopback addresses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from api.guard import principal_of
from service.keys import Principal

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `istore keys create` (not needed while no key exists).",
)


def _needs(scope: str) -> Callable[..., Principal]:
    def dependency(request: Request, _: Annotated[object, Security(_bearer)] = None) -> Principal:
        # The gate (api.guard) authenticated the caller before the body was read.
        principal = principal_of(request.scope)
        if principal is None:
            principal = request.app.state.keys.authenticate(request.headers.get("authorization"))
        principal.require(scope)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"needs_{scope}"
    return dependency


Ingest = Annotated[Principal, Depends(_needs("ingest"))]
Read = Annotated[Principal, Depends(_needs("read"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
