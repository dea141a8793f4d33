"""``POST /api/v1/sql``: one read-only SELECT over the views."""

from __future__ import annotations

import pyarrow as pa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Read
from api.body import JSONResponse
from store.errors import InvalidQuery
from store.reader import Reader

router = APIRouter(tags=["sql"])


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(..., min_length=1, max_length=100_000, description="One SELECT or WITH.")


@router.post("/sql", summary="Run one read-only SELECT over the store's views")
def run_sql(request: Request, principal: Read, body: SqlRequest) -> JSONResponse:
    settings = request.app.state.settings
    reader: Reader = request.app.state.reader
    table, truncated = reader.run_sql(
        body.sql,
        timeout_s=settings.sql_timeout_s,
        max_rows=settings.sql_max_rows,
        use_cases=principal.visible(None),
    )
    try:
        rows = table.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException) as exc:
        raise InvalidQuery(
            f"a value in the result cannot be returned as JSON ({exc}); cast it to VARCHAR",
            param="sql",
        ) from exc
    return JSONResponse(
        {
            "object": "list",
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "data": rows,
            "truncated": truncated,
        }
    )
