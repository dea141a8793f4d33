"""Reading in aggregate: the JSON filter query, stats, label keys and use cases."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Read
from api.body import JSONResponse
from api.filters import query_filter
from store import stats as agg
from store.filters import Filter, parse_expr
from store.reader import Reader

router = APIRouter(tags=["analytics"])


class QueryRequest(BaseModel):
    """``POST /interactions/query``: the list, with a filter expression."""

    model_config = ConfigDict(extra="forbid")
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description='Filters as in the query string (`{"use_case": "a", "label": ["k:v"]}`, '
        'all must hold), or `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` of them.',
        examples=[
            {
                "and": [
                    {"use_case": "support"},
                    {"or": [{"label": "topic:billing"}, {"feedback": "thumbs_up<1"}]},
                    {"not": {"status": "error"}},
                ]
            }
        ],  # fmt: skip
    )
    limit: int = Field(50, ge=1, le=1000)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = Field(None, description="Cursor from next_cursor.")


@router.post("/interactions/query", summary="List interactions matching a filter expression")
def query_interactions(request: Request, principal: Read, body: QueryRequest) -> JSONResponse:
    expr = parse_expr(body.filter)
    reader: Reader = request.app.state.reader
    page = reader.page(
        expr, limit=body.limit, order=body.order, after=body.after,
        use_cases=principal.visible(None),
    )  # fmt: skip
    return JSONResponse(
        {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        }  # fmt: skip
    )


@router.get("/interactions/stats", summary="Aggregates by use case, model, label, time …")
async def interaction_stats(
    request: Request,
    principal: Read,
    flt: Annotated[Filter, Depends(query_filter("group_by", "metrics"))],
    group_by: Annotated[
        list[str] | None,
        Query(
            description="use_case, model, source, status, user, session_id, ab_campaign, "
            "label:<key>, hour, day, week, month (repeatable or comma-separated)"
        ),
    ] = None,
    metrics: Annotated[
        list[str] | None,
        Query(
            description="count (default), sum_prompt_tokens, sum_completion_tokens, "
            "sum_tokens, avg_latency_ms, p50|p90|p95|p99_latency_ms, avg_ttft_ms, "
            "p50|p90|p95|p99_ttft_ms, error_rate, avg_feedback:<metric>, "
            "count_feedback:<metric>, std_feedback:<metric>"
        ),
    ] = None,
) -> JSONResponse:
    settings = request.app.state.settings
    result = await run_in_threadpool(
        agg.stats,
        request.app.state.store,
        flt,
        group_by or [],
        metrics or [],
        use_cases=principal.visible(flt.use_case),
        timeout_s=settings.sql_timeout_s,
    )
    return JSONResponse({"object": "list", **result})


@router.get("/labels", summary="Label keys with counts and top values")
async def label_keys(
    request: Request,
    principal: Read,
    flt: Annotated[Filter, Depends(query_filter("top", "key"))],
    top: Annotated[int, Query(ge=1, le=100, description="Top values per key")] = 10,
    key: Annotated[str | None, Query(max_length=64, description="Only this key")] = None,
) -> JSONResponse:
    data = await run_in_threadpool(
        agg.labels,
        request.app.state.store,
        flt,
        top=top,
        key=key,
        use_cases=principal.visible(flt.use_case),
        timeout_s=request.app.state.settings.sql_timeout_s,
    )
    return JSONResponse({"object": "list", "data": data})


@router.get("/use_cases", summary="Use cases with their models and counts")
async def use_case_list(
    request: Request,
    principal: Read,
    flt: Annotated[Filter, Depends(query_filter())],
) -> JSONResponse:
    data = await run_in_threadpool(
        agg.use_cases,
        request.app.state.store,
        flt,
        use_cases=principal.visible(flt.use_case),
        timeout_s=request.app.state.settings.sql_timeout_s,
    )
    return JSONResponse({"object": "list", "data": data})
