"""Input models: what clients may send. Validation errors name the field path.

The stored shape is ``store.schema``; ``tests/test_schema.py`` checks that every
stored column is reachable from these models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from store.schema import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, check_use_case

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}\Z")

MAX_INT = 2**63 - 1  # Arrow int64
MAX_MS = 1e12  # latencies beyond ~30 years are mistakes
MAX_VALUE = 1e300  # feedback values: finite float64

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    """One part of a multi-part content (``text``, ``image_url``, ``input_audio`` …)."""

    model_config = ConfigDict(extra="allow")
    type: str


class ChatMessage(BaseModel):
    """An OpenAI/Adaptive chat message. Unknown keys are kept as sent."""

    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class AssistantCompletion(BaseModel):
    """A completion given as an assistant message (content and/or tool calls)."""

    model_config = ConfigDict(extra="allow")
    role: Literal["assistant"] = "assistant"
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: Annotated[int, Field(ge=0, le=MAX_INT, strict=True)] | None = None
    completion_tokens: Annotated[int, Field(ge=0, le=MAX_INT, strict=True)] | None = None
    total_tokens: Annotated[int, Field(ge=0, le=MAX_INT, strict=True)] | None = None


class FeedbackItem(BaseModel):
    """Adaptive's inline feedback on an interaction."""

    model_config = ConfigDict(extra="forbid")
    metric: Annotated[str, Field(min_length=1, max_length=128)]
    value: Annotated[float, Field(ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False)] | bool
    reason: str | None = None
    details: str | None = None
    user_id: str | None = None
    created_at: datetime | None = None

    @field_validator("created_at")
    @classmethod
    def _time(cls, v: datetime | None) -> datetime | None:
        return check_time(v)


Labels = dict[str, str]

# Times we store: wide enough for any log, narrow enough for every engine's timestamp.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)


def check_time(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    try:
        utc = v.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not MIN_TIME <= utc < MAX_TIME:
        raise ValueError("must be between 1900-01-01 and 9999-12-30 (UTC)")
    return utc


def check_id(v: str | None, what: str = "id") -> str | None:
    if v is not None and not ID_RE.match(v):
        raise ValueError(
            f"{what} must be 1 to 128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return v


def str_or(model: type[BaseModel]) -> Any:
    """A string or a ``model`` object, as a tagged union: a value's errors come from the
    branch it looks like (the tags are names ``ingest.parse.loc_path`` leaves out of
    error paths), not from both."""

    def kind(v: Any) -> str:
        return model.__name__ if isinstance(v, dict | model) else "str"

    return Annotated[
        Annotated[str, Tag("str")] | Annotated[model, Tag(model.__name__)], Discriminator(kind)
    ]


# A string or an assistant message.
if TYPE_CHECKING:
    Completion = str | AssistantCompletion
else:
    Completion = str_or(AssistantCompletion)


def check_labels(labels: Labels | None) -> Labels | None:
    if labels is None:
        return None
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}")
    for k, v in labels.items():
        if not k or len(k) > MAX_LABEL_KEY:
            raise ValueError(f"label key {k[:80]!r} must be 1 to {MAX_LABEL_KEY} characters")
        if len(v) > MAX_LABEL_VALUE:
            raise ValueError(
                f"label {k!r}: value has {len(v)} characters, at most {MAX_LABEL_VALUE} allowed"
            )
    return labels


class InteractionIn(BaseModel):
    """One interaction, Adaptive ``AddInteractionsRequest`` plus the store's fields."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, description="Idempotency key; a second ingest of the same id is a no-op."
    )
    use_case: str | None = Field(None, description="Use case key (alias: project). Required.")
    project: str | None = Field(None, description="Alias of use_case (newer Adaptive).")
    model: str | None = None
    model_service: str | None = Field(None, description="Alias of model (Adaptive).")
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    completion: Completion | None = None
    labels: Labels | None = None
    metadata: Labels | None = Field(None, description="Alias of labels (OpenAI).")
    user: str | None = None
    session_id: str | None = None
    ab_campaign: str | None = None
    created_at: datetime | None = Field(
        None,
        description="ISO-8601, unix seconds, or unix milliseconds (numbers past 2e10); "
        "default: the time of receipt.",
    )
    usage: Usage | None = None
    latency_ms: Annotated[float, Field(ge=0, le=MAX_MS, strict=True)] | None = None
    ttft_ms: Annotated[float, Field(ge=0, le=MAX_MS, strict=True)] | None = None
    params: dict[str, Any] | None = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    feedbacks: list[FeedbackItem] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return check_id(v)

    @field_validator("created_at")
    @classmethod
    def _created(cls, v: datetime | None) -> datetime | None:
        return check_time(v)

    @field_validator("use_case", "project")
    @classmethod
    def _use_case(cls, v: str | None) -> str | None:
        return check_use_case(v)

    @field_validator("labels", "metadata")
    @classmethod
    def _labels(cls, v: Labels | None) -> Labels | None:
        return check_labels(v)

    @model_validator(mode="after")
    def _aliases(self) -> InteractionIn:
        if self.use_case is None and self.project is None:
            raise ValueError("use_case: required (or its alias project)")
        if self.use_case is not None and self.project is not None and self.use_case != self.project:
            raise ValueError("project: differs from use_case, its alias")
        if (
            self.model is not None
            and self.model_service is not None
            and self.model != self.model_service
        ):
            raise ValueError("model_service: differs from model, its alias")
        if self.labels is not None and self.metadata is not None:
            clash = [
                k for k in self.labels if k in self.metadata and self.labels[k] != self.metadata[k]
            ]
            if clash:
                raise ValueError(f"metadata: disagrees with labels on {clash[:5]}")
            try:
                check_labels({**self.metadata, **self.labels})
            except ValueError as exc:
                raise ValueError(f"metadata: together with labels, {exc}") from None
        return self

    @property
    def use_case_key(self) -> str:
        return self.use_case if self.use_case is not None else (self.project or "")

    @property
    def model_key(self) -> str | None:
        return self.model if self.model is not None else self.model_service

    def canonical(self) -> dict[str, Any]:
        """The shape ``ingest.normalize`` builds rows from (see ``ingest.fastpath``)."""
        completion: str | dict[str, Any] | None
        if isinstance(self.completion, AssistantCompletion):
            completion = self.completion.model_dump(mode="json", exclude_unset=True)
        else:
            completion = self.completion
        return {
            "id": self.id,
            "use_case": self.use_case_key,
            "model": self.model_key,
            "messages": [m.model_dump(mode="json", exclude_unset=True) for m in self.messages],
            "completion": completion,
            "labels": self.all_labels,
            "user": self.user,
            "session_id": self.session_id,
            "ab_campaign": self.ab_campaign,
            "created_at": self.created_at,
            "usage": self.usage.model_dump() if self.usage is not None else None,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "params": self.params,
            "status": self.status,
            "error": self.error,
            "feedbacks": [f.model_dump() for f in self.feedbacks or ()],
        }

    @property
    def all_labels(self) -> Labels | None:
        if self.labels is None:
            return self.metadata
        if self.metadata is None:
            return self.labels
        return {**self.metadata, **self.labels}


class IngestAck(BaseModel):
    completion_id: str
    session_id: str | None
    feedback_ids: list[str]


class BatchAck(BaseModel):
    accepted: int = Field(description="Interactions in the body (new + repeats).")
    new: int = Field(description="Stored by this request.")
    repeats: int = Field(
        description="Already stored (their id was sent before, or twice in this body): "
        "nothing new was stored for them."
    )
    completion_ids: list[str]
