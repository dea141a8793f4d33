"""``POST /api/v1/sql``: one read-only SELECT over the views, in several formats.

The query, the encoding of its rows and the collection of the encoded bytes all run in
the thread pool (a sync route) under the query's time limit, memory ceiling and
``ISTORE_SQL_MAX_RESULT_BYTES``; only a whole result is sent, so every failure is a 4xx
in the error shape, never a cut-off 200.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Read
from store.output import MEDIA_TYPES, encode, spool
from store.reader import Reader

router = APIRouter(tags=["sql"])


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(..., min_length=1, max_length=100_000, description="One SELECT or WITH.")

    @model_validator(mode="before")
    @classmethod
    def _misnamed(cls, data: Any) -> Any:
        """Other SQL APIs call the statement ``query`` or ``q``: say what ours is called."""
        if isinstance(data, dict) and "sql" not in data:
            for name in ("query", "q", "statement"):
                if name in data:
                    raise ValueError(
                        f'{name}: not a field here; the statement goes in "sql": '
                        '{"sql": "SELECT …"}'
                    )
        return data


@router.post(
    "/sql",
    summary="Run one read-only SELECT over the views",
    description="Views: interactions, feedback, comparisons, outcomes. Helper macros: "
    "label(labels, key), message_text(messages), last_user_message(messages).",
)
def run_sql(
    request: Request,
    principal: Read,
    body: SqlRequest,
    format: Annotated[  # noqa: A002 - the API's name
        Literal["json", "ndjson", "csv", "parquet", "arrow"], Query(description="Output format")
    ] = "json",
) -> Response:
    settings = request.app.state.settings
    reader: Reader = request.app.state.reader
    with reader.sql_result(
        body.sql,
        timeout_s=settings.sql_timeout_s,
        max_rows=settings.sql_max_rows,
        use_cases=principal.visible(None),
    ) as result:
        chunks = encode(result.schema, result.batches, format,
                        truncated=lambda: result.truncated, check=result.check)  # fmt: skip
        out = spool(chunks, max_bytes=settings.sql_max_result_bytes, check=result.check,
                    directory=reader.store.duck.temp_dir)  # fmt: skip
    headers = {"X-Istore-Truncated": "true" if result.truncated else "false"}
    if format == "parquet":
        headers["Content-Disposition"] = 'attachment; filename="result.parquet"'
    whole = out.in_memory()
    if whole is not None:
        out.close()
        return Response(whole, media_type=MEDIA_TYPES[format], headers=headers)
    headers["Content-Length"] = str(out.size)
    return StreamingResponse(out.chunks(), media_type=MEDIA_TYPES[format], headers=headers)
