"""``/api/v1/feedback``, ``/comparison`` (Adaptive), ``/outcome``: judgements on
stored interactions, each its own Delta table, durable through the same log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, TypeAdapter

from api.auth import Ingest
from api.body import JSONResponse, read_body
from ingest.feedback import (
    ComparisonIn,
    CompletionText,
    FeedbackIn,
    OutcomeIn,
    comparison_rows,
    feedback_rows,
    outcome_rows,
)
from ingest.parse import content_chars, split_body, validate_model
from store.ack import wait
from store.errors import NotFound, PayloadTooLarge, ValidationFailed
from store.reader import Reader
from store.schema import COMPARISONS_TABLE, FEEDBACK_TABLE, OUTCOMES_TABLE

router = APIRouter(tags=["feedback"])

_FEEDBACK = TypeAdapter(FeedbackIn)
_COMPARISON = TypeAdapter(ComparisonIn)
_OUTCOME = TypeAdapter(OutcomeIn)


def body_schema(model: type[BaseModel], many: bool = False) -> dict[str, Any]:
    """OpenAPI for a body the route reads itself (see ``api.app._add_body_schemas``)."""
    one = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema = {"anyOf": [one, {"type": "array", "items": one}]} if many else one
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class FeedbackAck(BaseModel):
    feedback_id: str


class FeedbackBatchAck(BaseModel):
    feedback_ids: list[str]


class ComparisonAck(BaseModel):
    comparison_id: str


class OutcomeAck(BaseModel):
    outcome_id: str


async def _body(request: Request) -> bytes:
    return await read_body(request, request.app.state.settings.max_body_bytes)


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackAck | FeedbackBatchAck,
    openapi_extra=body_schema(FeedbackIn, many=True),
    summary="Log feedback (a metric) on stored interactions: one object or an array",
)
async def add_feedback(request: Request, principal: Ingest) -> JSONResponse:
    state = request.app.state
    numbered, single = split_body(
        await _body(request), request.headers.get("content-type", ""), "feedback"
    )
    items = [
        (validate_model(_FEEDBACK, raw, "" if single else f"body[{n}]"), n) for n, raw in numbered
    ]
    reader: Reader = state.reader
    limits = state.settings.limits()
    if len(items) > limits.max_items:
        raise PayloadTooLarge(
            f"the body holds {len(items)} feedback items; at most {limits.max_items} are "
            "accepted per request",
            param="body",
        )
    visible = principal.visible(None)
    found = await run_in_threadpool(reader.locate, [f.completion_id for f, _ in items], visible)
    rows = []
    for f, n in items:
        where = "completion_id" if single else f"body[{n}].completion_id"
        use_case = found.get(f.completion_id)
        if use_case is None:
            raise NotFound(f"{where}: no interaction with id {f.completion_id!r}", param=where)
        principal.check_use_case(use_case, where)
        rows.append((f, use_case))
    cols, ids = feedback_rows(rows)
    await wait(state.store.write(FEEDBACK_TABLE, cols))
    body = {"feedback_id": ids[0]} if single else {"feedback_ids": ids}
    return JSONResponse(body, status_code=201)


@router.post(
    "/comparison",
    status_code=201,
    response_model=ComparisonAck,
    openapi_extra=body_schema(ComparisonIn),
    summary="Log a preference between two completions (Adaptive AddComparisonRequest)",
)
async def add_comparison(request: Request, principal: Ingest) -> JSONResponse:
    state = request.app.state
    c = validate_model(_COMPARISON, _one(await _body(request), request, "comparison"))
    reader: Reader = state.reader
    _check_sizes(c, state.settings.limits().max_content_chars)
    visible = principal.visible(None)
    found = await run_in_threadpool(reader.locate, c.ids, visible) if c.ids else {}
    use_case = c.use_case_key
    named = "project" if c.project is not None else "use_case"
    for field in ("preferred_completion", "other_completion"):
        ref = getattr(c, field)
        if not isinstance(ref, str):
            continue
        if ref not in found:
            raise NotFound(f"{field}: no interaction with id {ref!r}", param=field)
        if use_case is None:
            use_case, named = found[ref], field
        elif found[ref] != use_case:
            raise ValidationFailed(
                f"{field}: belongs to use case {found[ref]!r}, not {use_case!r} ({named})",
                param=field,
            )
    assert use_case is not None  # ComparisonIn requires a use case when no id is given
    principal.check_use_case(use_case, named)
    if c.ids:
        await run_in_threadpool(_one_prompt, reader, c, visible)
    cols, id_ = comparison_rows(c, use_case)
    await wait(state.store.write(COMPARISONS_TABLE, cols))
    return JSONResponse({"comparison_id": id_}, status_code=201)


@router.post(
    "/outcome",
    status_code=201,
    response_model=OutcomeAck,
    openapi_extra=body_schema(OutcomeIn),
    summary="Log a metric on a whole session",
)
async def add_outcome(request: Request, principal: Ingest) -> JSONResponse:
    state = request.app.state
    o = validate_model(_OUTCOME, _one(await _body(request), request, "outcome"))
    reader: Reader = state.reader
    use_case = await run_in_threadpool(
        reader.session_use_case, o.session_id, o.use_case_key, principal.visible(None)
    )
    if use_case is None:
        within = f" in use case {o.use_case_key!r}" if o.use_case_key else ""
        raise NotFound(
            f"session_id: no interaction with session_id {o.session_id!r}{within}",
            param="session_id",
        )
    principal.check_use_case(use_case, "session_id")
    o.use_case = use_case
    cols, id_ = outcome_rows(o)
    await wait(state.store.write(OUTCOMES_TABLE, cols))
    return JSONResponse({"outcome_id": id_}, status_code=201)


def _one_prompt(reader: Reader, c: ComparisonIn, visible: tuple[str, ...] | None) -> None:
    """A preference is between two answers to one prompt: the compared interactions
    (and the comparison's own ``messages``, when given) must have the same messages,
    else a preference-pair export would pair an answer with another prompt's."""
    prompts: dict[str, Any] = {}
    for field in ("preferred_completion", "other_completion"):
        ref = getattr(c, field)
        if isinstance(ref, str):
            prompts[field] = reader.get(ref, use_cases=visible)["messages"]
    if c.messages:
        given = [m.model_dump(mode="json", exclude_unset=True) for m in c.messages]
        for field, messages in prompts.items():
            if messages != given:
                raise ValidationFailed(
                    f"{field}: that interaction answers another prompt than this "
                    "comparison's messages; compare two answers to the same messages",
                    param=field,
                )
    elif len(prompts) == 2 and prompts["preferred_completion"] != prompts["other_completion"]:
        raise ValidationFailed(
            "other_completion: answers another prompt than preferred_completion (their "
            "messages differ); a comparison is between two answers to the same messages",
            param="other_completion",
        )


def _check_sizes(c: ComparisonIn, limit: int) -> None:
    """The content limit of interactions applies to a comparison's texts too."""
    texts: list[tuple[str, int]] = []
    for field in ("preferred_completion", "other_completion"):
        ref = getattr(c, field)
        if isinstance(ref, CompletionText):
            texts.append((f"{field}.text", len(ref.text)))
    for j, m in enumerate(c.messages or ()):
        texts.append((f"messages[{j}].content", content_chars(m.content)))
    for where, n in texts:
        if n > limit:
            raise ValidationFailed(
                f"{where}: {n} characters, at most {limit} are accepted", param=where
            )


def _one(body: bytes, request: Request, what: str) -> Any:
    numbered, single = split_body(body, request.headers.get("content-type", ""), what)
    if not single:
        raise ValidationFailed(f"the body must be one {what} object", param="body")
    return numbered[0][1]
