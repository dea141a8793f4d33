"""``POST /api/v1/sql``: one read-only SELECT over the views, in several formats."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Read
from store.output import MEDIA_TYPES, encode
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
    table, truncated = reader.run_sql(
        body.sql,
        timeout_s=settings.sql_timeout_s,
        max_rows=settings.sql_max_rows,
        use_cases=principal.visible(None),
    )
    headers = {"X-Istore-Truncated": "true" if truncated else "false"}
    if format == "json":  # one document: errors (e.g. a value with no JSON form) stay 400s
        return Response(b"".join(encode(table, "json", truncated=truncated)),
                        media_type=MEDIA_TYPES["json"], headers=headers)  # fmt: skip
    if format == "ndjson":
        from store.output import rows

        rows(table)  # fail before the first byte is sent if a value has no JSON form
    if format == "parquet":
        headers["Content-Disposition"] = 'attachment; filename="result.parquet"'
    return StreamingResponse(encode(table, format), media_type=MEDIA_TYPES[format], headers=headers)
