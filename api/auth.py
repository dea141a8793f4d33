"""Who may call what: every ``/api/v1`` route names the scope it needs.

``ingest``: write interactions, feedback, comparisons, outcomes, chat.
``read``: list, get, stats, SQL, export.  ``admin``: everything, plus deletes and keys.
With no key ever created (no ``keys.json``) every request acts with
full rights; ``istore serve`` then refuses non-loopback addresses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from api.keys import KeyRing, Principal

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `istore keys create` (not needed while no key exists).",
)


def authorize(keys: KeyRing, headers: Mapping[str, str], scope: str) -> Principal:
    """The caller's principal, or Unauthorized / Forbidden."""
    principal = keys.authenticate(headers.get("authorization"))
    principal.require(scope)
    return principal


def _needs(scope: str) -> Callable[..., Principal]:
    def dependency(request: Request, _: Annotated[object, Security(_bearer)] = None) -> Principal:
        principal = authorize(request.app.state.keys, request.headers, scope)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"needs_{scope}"
    return dependency


Ingest = Annotated[Principal, Depends(_needs("ingest"))]
Read = Annotated[Principal, Depends(_needs("read"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
