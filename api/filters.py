"""The filter query parameters, declared once for every route that takes them (list,
stats, labels, use cases, export), so they are documented and checked the same way."""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Annotated, Any

from fastapi import Query, Request

from store.errors import ValidationFailed
from store.filters import FILTER_NAMES, Filter, filter_from_kwargs

_Many = Annotated[list[str] | None, Query(description="Repeatable: any of")]


def check_params(request: Request, allowed: Set[str]) -> None:
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise ValidationFailed(
            f"{unknown[0]}: unknown query parameter. Valid parameters are: "
            + ", ".join(sorted(allowed)),
            param=unknown[0],
        )


def filters_from_query(request: Request) -> dict[str, Any]:
    q = request.query_params
    out: dict[str, Any] = {}
    for key in sorted(FILTER_NAMES - {"from", "to"}):
        values = q.getlist(key)
        if values:
            out[key] = values
    for key in ("from", "to"):
        values = q.getlist(key)
        if len(values) > 1:
            raise ValidationFailed(f"{key}: give it once", param=key)
        if values:
            out[key] = values[0]
    return out


def query_filter(*route_params: str) -> Callable[..., Filter]:
    """A dependency: the request's filter; any query parameter that is neither a
    filter nor one of ``route_params`` is a 422."""
    allowed = FILTER_NAMES | set(route_params)

    def dependency(
        request: Request,
        use_case: _Many = None,
        model: _Many = None,
        label: Annotated[
            list[str] | None, Query(description="key:value (or key:v1|v2); repeatable: all of")
        ] = None,
        has_label: Annotated[list[str] | None, Query(description="Has this label key")] = None,
        no_label: Annotated[list[str] | None, Query(description="Lacks this label key")] = None,
        from_: Annotated[
            str | None, Query(alias="from", description="ISO-8601 or unix, inclusive")
        ] = None,
        to: Annotated[str | None, Query(description="ISO-8601 or unix, exclusive")] = None,
        session_id: _Many = None,
        user: _Many = None,
        source: _Many = None,
        status: _Many = None,
        feedback: Annotated[
            list[str] | None,
            Query(description="metric>=x (also >, <, <=, =, !=): has such feedback; all of"),
        ] = None,
        search: Annotated[
            list[str] | None,
            Query(description="Case-insensitive text in messages or completion; all of"),
        ] = None,
    ) -> Filter:
        check_params(request, allowed)
        return filter_from_kwargs(filters_from_query(request))

    return dependency
