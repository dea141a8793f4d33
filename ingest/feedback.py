"""Feedback, comparisons and outcomes: input models and their rows.

- ``POST /feedback``: a metric on one stored interaction (``completion_id``).
- ``POST /comparison``: Adaptive ``AddComparisonRequest``, a preference between two
  completions of one prompt, each a stored interaction's id or ``{text, model}``.
- ``POST /outcome``: a metric on a whole session.

The routes check that referenced interactions exist; these models check shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ingest.models import (
    ChatMessage,
    FeedbackItem,
    check_id,
    check_time,
    check_use_case,
    str_or,
)
from store.ids import uuid7_many
from store.jsonutil import dumps
from store.rows import Columns
from store.schema import COMPARISONS, FEEDBACK, OUTCOMES

Metric = Annotated[str, Field(min_length=1, max_length=128, description="Metric (feedback key).")]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000


class _UseCase(BaseModel):
    use_case: str | None = Field(None, description="Use case key (alias: project).")
    project: str | None = Field(None, description="Alias of use_case (Adaptive).")

    @field_validator("use_case", "project")
    @classmethod
    def _uc(cls, v: str | None) -> str | None:
        return check_use_case(v)

    @model_validator(mode="after")
    def _same(self) -> Any:
        if self.use_case is not None and self.project is not None and self.use_case != self.project:
            raise ValueError("project: differs from use_case, its alias")
        return self

    @property
    def use_case_key(self) -> str | None:
        return self.use_case if self.use_case is not None else self.project


class FeedbackIn(FeedbackItem):
    """A metric on one stored interaction (bool values are stored as 1.0 / 0.0)."""

    completion_id: str = Field(description="The interaction's id (alias: interaction_id).")

    @model_validator(mode="before")
    @classmethod
    def _interaction_id(cls, data: Any) -> Any:
        """``interaction_id`` is what many callers call it: an alias."""
        if isinstance(data, dict) and "interaction_id" in data:
            data = dict(data)
            given = data.pop("interaction_id")
            if "completion_id" in data and data["completion_id"] != given:
                raise ValueError("interaction_id: differs from completion_id, its alias")
            data["completion_id"] = given
        return data

    @field_validator("completion_id")
    @classmethod
    def _cid(cls, v: str) -> str:
        return check_id(v, "completion_id") or v


class CompletionText(BaseModel):
    """A completion given inline rather than by id."""

    model_config = ConfigDict(extra="forbid")
    text: str
    model: str | None = None


# An interaction id, or {text, model}.
if TYPE_CHECKING:
    CompletionRef = str | CompletionText
else:
    CompletionRef = str_or(CompletionText)


class ComparisonIn(_UseCase):
    """Adaptive ``AddComparisonRequest``: which of two completions is preferred."""

    model_config = ConfigDict(extra="forbid")
    metric: Metric
    preferred_completion: CompletionRef = Field(description="An interaction id, or {text, model}.")
    other_completion: CompletionRef = Field(description="An interaction id, or {text, model}.")
    messages: list[ChatMessage] | None = Field(
        None, description="The prompt; required when a completion is given as text."
    )
    tied: Literal["good", "bad"] | None = Field(
        None, description="Both equally good or equally bad."
    )
    user_id: str | None = None
    created_at: datetime | None = None

    @field_validator("preferred_completion", "other_completion")
    @classmethod
    def _ids(cls, v: str | CompletionText) -> str | CompletionText:
        if isinstance(v, str):
            check_id(v, "a completion id")
        return v

    @field_validator("created_at")
    @classmethod
    def _time(cls, v: datetime | None) -> datetime | None:
        return check_time(v)

    @model_validator(mode="after")
    def _prompt(self) -> ComparisonIn:
        inline = [
            f
            for f in ("preferred_completion", "other_completion")
            if isinstance(getattr(self, f), CompletionText)
        ]
        if inline and not self.messages:
            raise ValueError(f"messages: required when {inline[0]} is given as text")
        if len(inline) == 2 and self.use_case_key is None:
            raise ValueError("project: required when both completions are given as text")
        a, b = self.preferred_completion, self.other_completion
        if isinstance(a, str) and a == b:
            raise ValueError("other_completion: the same completion as preferred_completion")
        return self

    @property
    def ids(self) -> list[str]:
        return [c for c in (self.preferred_completion, self.other_completion) if isinstance(c, str)]


class OutcomeIn(_UseCase, FeedbackItem):
    """A metric on a whole session (e.g. the ticket was resolved): feedback's fields
    with a ``session_id`` instead of a completion id."""

    model_config = ConfigDict(extra="forbid")
    session_id: Annotated[str, Field(min_length=1, max_length=256)]


# -- rows -------------------------------------------------------------------------------
def _micros(ts: datetime | None) -> int:
    return ((ts or datetime.now(UTC)) - _EPOCH) // timedelta(microseconds=1)


def _columns(names: list[str], rows: list[dict[str, Any]]) -> Columns:
    return {n: [r[n] for r in rows] for n in names}


def feedback_rows(items: list[tuple[FeedbackIn, str]]) -> tuple[Columns, list[str]]:
    """Rows for (feedback, use case of its interaction) pairs, and their new ids."""
    ids = uuid7_many(len(items))
    rows = []
    for (f, use_case), id_ in zip(items, ids, strict=True):
        created = _micros(f.created_at)
        rows.append(
            {
                "id": id_,
                "created_at": created,
                "completion_id": f.completion_id,
                "use_case": use_case,
                "metric": f.metric,
                "value": float(f.value),
                "reason": f.reason,
                "details": f.details,
                "user_id": f.user_id,
                "day": created // _DAY_US,
            }
        )
    return _columns(FEEDBACK.names, rows), ids


def comparison_rows(c: ComparisonIn, use_case: str) -> tuple[Columns, str]:
    (id_,) = uuid7_many(1)
    created = _micros(c.created_at)
    row: dict[str, Any] = {
        "id": id_,
        "created_at": created,
        "use_case": use_case,
        "metric": c.metric,
        "messages": dumps([m.model_dump(mode="json", exclude_unset=True) for m in c.messages])
        if c.messages
        else None,
        "tied": c.tied,
        "user_id": c.user_id,
        "day": created // _DAY_US,
    }
    for side, value in (("preferred", c.preferred_completion), ("other", c.other_completion)):
        text = value if isinstance(value, CompletionText) else None
        row[f"{side}_id"] = value if isinstance(value, str) else None
        row[f"{side}_text"] = text.text if text else None
        row[f"{side}_model"] = text.model if text else None
    return _columns(COMPARISONS.names, [row]), id_


def outcome_rows(o: OutcomeIn) -> tuple[Columns, str]:
    (id_,) = uuid7_many(1)
    created = _micros(o.created_at)
    row = {
        "id": id_,
        "created_at": created,
        "session_id": o.session_id,
        "use_case": o.use_case_key,
        "metric": o.metric,
        "value": float(o.value),
        "reason": o.reason,
        "details": o.details,
        "user_id": o.user_id,
        "day": created // _DAY_US,
    }
    return _columns(OUTCOMES.names, [row]), id_
