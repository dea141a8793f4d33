"""``GET /api/v1/export``: fine-tuning datasets, streamed (``store.export``)."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from api.auth import Read
from api.filters import filters_from_query, query_filter
from store.errors import ValidationFailed
from store.export import Exporter, ExportOptions, jsonl
from store.filters import Filter

router = APIRouter(tags=["export"])

OPTIONS = ("format", "include_errors", "include_feedback", "metric", "min_margin",
           "comparisons", "dedupe", "max_examples", "split", "part", "min_turns", "max_chars",
           "as_of")  # fmt: skip


def parse_as_of(value: str | None) -> dict[str, int] | None:
    """``as_of``: the JSON object of table versions an export names (X-Istore-Versions)."""
    if value is None:
        return None
    try:
        versions = orjson.loads(value)
    except orjson.JSONDecodeError:
        versions = None
    if not isinstance(versions, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in versions.items()
    ):
        raise ValidationFailed(
            "as_of: a JSON object of table versions, as in X-Istore-Versions, e.g. "
            '{"interactions": 12, "feedback": 3}',
            param="as_of",
        )
    return versions


@router.get("/export", summary="Export a fine-tuning dataset (JSONL or Parquet), streamed")
async def export(
    request: Request,
    principal: Read,
    flt: Annotated[Filter, Depends(query_filter(*OPTIONS))],
    format: Annotated[  # noqa: A002 - the API's name
        str, Query(description="openai, adaptive, parquet, dpo, openai-dpo, adaptive-preference")
    ] = "openai",
    include_errors: bool = False,
    include_feedback: bool = False,
    metric: Annotated[
        str | None, Query(description="Feedback metric that scores interactions (pairs, dedupe)")
    ] = None,
    min_margin: Annotated[float, Query(ge=0)] = 0.0,
    comparisons: bool = True,
    dedupe: bool = False,
    max_examples: Annotated[int | None, Query(ge=1)] = None,
    split: Annotated[float | None, Query(gt=0, lt=1)] = None,
    part: Literal["train", "validation"] | None = None,
    min_turns: Annotated[int | None, Query(ge=0)] = None,
    max_chars: Annotated[int | None, Query(ge=1)] = None,
    as_of: Annotated[
        str | None, Query(description="Table versions (JSON), to repeat an export")
    ] = None,
) -> Response:
    store = request.app.state.store
    options = ExportOptions(
        format=format, include_errors=include_errors, include_feedback=include_feedback,
        metric=metric, min_margin=min_margin, comparisons=comparisons, dedupe=dedupe,
        max_examples=max_examples, split=split, min_turns=min_turns, max_chars=max_chars,
        filters=filters_from_query(request),
    )  # fmt: skip
    if split is not None and part is None:
        raise ValidationFailed("part: give train or validation with split", param="part")
    if part is not None and split is None:
        raise ValidationFailed(
            f"split: part={part} needs split too (the train share, e.g. split=0.9&part={part})",
            param="split",
        )

    versions = parse_as_of(as_of)
    if versions is None and store.writable:
        await run_in_threadpool(store.flush)  # everything acknowledged so far is in
    snap = await run_in_threadpool(store.snapshot_at, versions)
    exporter = Exporter(store, snap, flt, options, principal.visible(flt.use_case))
    headers = {"X-Istore-Versions": orjson.dumps(exporter.versions).decode()}
    warnings = await run_in_threadpool(exporter.warnings, flt.use_case, principal.visible(None))
    if warnings:  # header values are latin-1: anything else is escaped
        text = "; ".join(warnings).encode("latin-1", "backslashreplace").decode("latin-1")
        headers["X-Istore-Warning"] = text
    if options.format == "parquet":
        headers["Content-Disposition"] = 'attachment; filename="export.parquet"'
        return StreamingResponse(exporter.parquet(), media_type="application/vnd.apache.parquet",
                                 headers=headers)  # fmt: skip
    examples = (
        exporter.pairs(part)
        if options.format in ("dpo", "openai-dpo", "adaptive-preference")
        else exporter.sft(part)
    )
    return StreamingResponse(
        jsonl(examples, part or "all"), media_type="application/x-ndjson", headers=headers
    )  # fmt: skip
