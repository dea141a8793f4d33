"""The one definition of what is stored: Arrow schemas of the tables.

Everything else derives from these: the Delta tables' schemas, the SQL views'
columns, the conversion of rows back to API objects. JSON-valued fields
(`messages`, `completion_message`, `params`) are stored as JSON text so they
round-trip exactly and every engine (Spark, Trino, Polars, DuckDB) can read them;
`labels` is a Parquet map so engines can index it natively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

USAGE = pa.struct(
    [
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
    ]
)

INTERACTIONS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        # JSON text of the chat messages, exactly as received (OpenAI/Adaptive shape).
        pa.field("messages", pa.string(), nullable=False),
        # The completion text. When the completion was an assistant message object
        # (tool calls, refusal …) its JSON is in `completion_message` and this column
        # holds its text content, so `completion ILIKE …` works either way.
        pa.field("completion", pa.string()),
        pa.field("completion_message", pa.string()),
        pa.field("labels", pa.map_(pa.string(), pa.string())),
        pa.field("session_id", pa.string()),
        pa.field("user", pa.string()),
        pa.field("ab_campaign", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("usage", USAGE),
        pa.field("latency_ms", pa.float64()),
        pa.field("ttft_ms", pa.float64()),
        pa.field("params", pa.string()),  # JSON text
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        # Partition column: the UTC day of created_at.
        pa.field("day", pa.date32(), nullable=False),
    ]
)

FEEDBACK = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("completion_id", pa.string(), nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("details", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("day", pa.date32(), nullable=False),
    ]
)


# A preference between two completions of one prompt (Adaptive ``AddComparisonRequest``).
# Each side names a stored interaction (``*_id``) or carries its text and model inline.
COMPARISONS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("preferred_id", pa.string()),
        pa.field("preferred_text", pa.string()),
        pa.field("preferred_model", pa.string()),
        pa.field("other_id", pa.string()),
        pa.field("other_text", pa.string()),
        pa.field("other_model", pa.string()),
        pa.field("messages", pa.string()),  # JSON text; the prompt of inline completions
        pa.field("tied", pa.string()),  # null, "good" or "bad"
        pa.field("user_id", pa.string()),
        pa.field("day", pa.date32(), nullable=False),
    ]
)

# A metric on a whole session (``POST /outcome``), e.g. "ticket resolved".
OUTCOMES = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("details", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("day", pa.date32(), nullable=False),
    ]
)


# Changes to stored interactions, appended rather than rewriting Parquet: new labels
# (OpenAI's "update metadata", which replaces them) or a deletion. Reads apply the
# latest labels and hide deleted interactions with their feedback (``store.duck``).
AMENDMENTS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("completion_id", pa.string(), nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("action", pa.string(), nullable=False),  # "labels" or "delete"
        pa.field("labels", pa.map_(pa.string(), pa.string())),
        pa.field("day", pa.date32(), nullable=False),
    ]
)


# Columns whose values are ours (ids, times, keys, enums), never the user's content.
NON_PERSONAL = frozenset(
    {"id", "created_at", "use_case", "model", "completion_id", "metric", "value", "action",
     "source", "status", "latency_ms", "ttft_ms"}
)  # fmt: skip


@dataclass(frozen=True)
class TableSpec:
    """A stored table: its name (folder under the data root and SQL view name), its
    schema and its partition columns."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """Columns Delta keeps min/max statistics for: none that can hold personal data."""
        return tuple(c for c in self.columns if c in NON_PERSONAL and c not in self.partition_by)


INTERACTIONS_TABLE = TableSpec("interactions", INTERACTIONS, ("use_case", "day"))
FEEDBACK_TABLE = TableSpec("feedback", FEEDBACK, ("day",))
COMPARISONS_TABLE = TableSpec("comparisons", COMPARISONS, ("day",))
OUTCOMES_TABLE = TableSpec("outcomes", OUTCOMES, ("day",))
AMENDMENTS_TABLE = TableSpec("amendments", AMENDMENTS, ("day",))

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        INTERACTIONS_TABLE,
        FEEDBACK_TABLE,
        COMPARISONS_TABLE,
        OUTCOMES_TABLE,
        AMENDMENTS_TABLE,
    )
}
# The tables SQL may read (amendments are applied to the others, not shown).
SQL_VIEWS = ("interactions", "feedback", "comparisons", "outcomes")

# Input limits that are part of the data model (SPEC: labels).
MAX_LABELS = 64
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 1024

# Use-case keys become partition folders: a rule of storage, checked wherever one enters.
USE_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")


def check_use_case(v: str | None) -> str | None:
    if v is not None and not USE_CASE_RE.match(v):
        raise ValueError(
            "use case keys are 1 to 128 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return v
