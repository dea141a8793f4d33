"""The plain-Python fast path accepts only what the pydantic model accepts, and
produces the same canonical row."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.fastpath import canonical
from ingest.models import InteractionIn
from sample_data.generate import generate


def slow(d: Any) -> dict[str, Any] | None:
    try:
        return InteractionIn.model_validate(d).canonical()
    except Exception:
        return None


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, with bool, int and float kept apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_sample_rows_agree() -> None:
    fast_count = 0
    for row in generate(600, seed=3):
        fast = canonical(row)
        if fast is not None:
            fast_count += 1
            assert same(fast, slow(row)), row.get("id")
    assert fast_count == 600  # the sample shapes all take the fast path


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values most of the time, anything now and then."""
    return st.one_of(*[valid] * 15, junk)


text = st.text(max_size=10)
opt_text = st.one_of(st.none(), text)
part = st.fixed_dictionaries(
    {"type": mostly(st.sampled_from(["text", "image_url"]))},
    optional={"text": mostly(text), "image_url": junk},
)
content = st.one_of(text, st.none(), st.lists(mostly(part), max_size=2))
tool_call = st.fixed_dictionaries(
    {
        "id": text,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": text, "arguments": text}),
    }  # fmt: skip
)
message = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["system", "user", "assistant", "tool", "developer"]))},
    optional={
        "content": mostly(content),
        "name": mostly(opt_text),
        "tool_calls": mostly(st.one_of(st.none(), st.lists(mostly(tool_call), max_size=2))),
        "tool_call_id": mostly(opt_text),
        "extra": junk,
    },
)
completion_message = st.fixed_dictionaries(
    {},
    optional={
        "role": mostly(st.just("assistant")),
        "content": mostly(content),
        "tool_calls": mostly(st.lists(tool_call, max_size=2)),
        "refusal": mostly(opt_text),
        "extra": junk,
    },
)
times = st.one_of(
    st.sampled_from(
        [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01 10:00:00.123+02:00",
            "1850-01-01T00:00:00Z",
            "9999-12-31T23:00:00-05:00",
            "2024-05-01",
            "20240501T100000",
        ]
    ),  # fmt: skip
    st.floats(min_value=-3e10, max_value=3e10),
    st.integers(min_value=-(10**13), max_value=10**13),
)
feedback = st.fixed_dictionaries(
    {"metric": mostly(st.text(min_size=1, max_size=5)),
     "value": mostly(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False)))},
    optional={"reason": mostly(opt_text), "user_id": mostly(opt_text),
              "created_at": mostly(times), "bogus": junk},
)  # fmt: skip
labels = st.dictionaries(st.text(min_size=1, max_size=3), st.text(max_size=3), max_size=3)
base = st.fixed_dictionaries(
    {
        "messages": mostly(st.lists(mostly(message), min_size=1, max_size=3)),
        "use_case": mostly(st.sampled_from(["support", "a.b-c_d", "9", "../x", ""])),
    },
    optional={
        "model": mostly(opt_text),
        "id": mostly(st.sampled_from(["abc", "a:b.c-1", "a b", "x" * 129])),
        "completion": mostly(st.one_of(opt_text, completion_message)),
        "labels": mostly(labels),
        "user": mostly(opt_text),
        "created_at": mostly(times),
        "usage": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": mostly(st.integers(min_value=-1, max_value=2**64)),
                    "total_tokens": mostly(st.integers(min_value=0, max_value=10**6)),
                    "details": junk,
                },
            )
        ),
        "latency_ms": mostly(st.one_of(st.floats(min_value=-1, max_value=2e12), st.integers())),
        "params": mostly(st.dictionaries(st.text(max_size=4), junk, max_size=2)),
        "status": mostly(st.sampled_from(["ok", "error"])),
        "error": mostly(opt_text),
        "feedbacks": mostly(st.lists(feedback, max_size=2)),
    },
)
# Now and then: aliases (agreeing or not) and unknown keys.
extras = st.fixed_dictionaries(
    {},
    optional={
        "project": st.sampled_from(["support", "other"]),
        "model_service": st.sampled_from(["m", None]),
        "metadata": labels,
        "surprise": junk,
    },
)
interactions = st.one_of(base, base, base, st.tuples(base, extras).map(lambda t: {**t[0], **t[1]}))


@pytest.mark.slow  # a live server or a long property run: `make test` only
@settings(max_examples=int(os.environ.get("FASTPATH_EXAMPLES", "400")), deadline=None)
@given(interactions)
def test_fast_path_never_accepts_more_or_differently(d: dict[str, Any]) -> None:
    fast = canonical(d)
    if fast is not None:
        assert same(fast, slow(d))
