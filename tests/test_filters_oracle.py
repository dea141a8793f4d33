"""Filters and stats against an independent oracle: the same questions answered with
polars over the sample data as the sample file holds it (not through our store)."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.importer import import_files
from sample_data.generate import dumps, generate
from store.engine import Store, StoreOptions
from store.filters import parse_expr
from store.reader import Reader
from tests.conftest import in_process

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

ROOT = Path(__file__).resolve().parent.parent
# The generator's 3,000 (seed 7, its fixed dates), as an NDJSON file would hold them.
LINES = [dumps(x) + "\n" for x in generate(3000, seed=7)]
ROWS = [json.loads(line) for line in LINES]
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
       "=": operator.eq, "!=": operator.ne}  # fmt: skip


def _texts(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out.extend(p["text"] for p in c if isinstance(p, dict) and "text" in p)
    return "\n".join(out)


def _completion_text(c: Any) -> str:
    if isinstance(c, dict):
        c = c.get("content")
    return c if isinstance(c, str) else ""


FRAME = pl.DataFrame(
    {
        "id": [r["id"] for r in ROWS],
        "use_case": [r["use_case"] for r in ROWS],
        "model": [r.get("model") for r in ROWS],
        "labels": [json.dumps(r.get("labels") or {}) for r in ROWS],
        "created_at": [
            datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) for r in ROWS
        ],
        "session_id": [r.get("session_id") for r in ROWS],
        "user": [r.get("user") for r in ROWS],
        "status": [r.get("status", "ok") for r in ROWS],
        "text": [_texts(r["messages"]).lower() for r in ROWS],
        "completion": [_completion_text(r.get("completion")).lower() for r in ROWS],
        "latency_ms": [r.get("latency_ms") for r in ROWS],
        "prompt_tokens": [(r.get("usage") or {}).get("prompt_tokens") for r in ROWS],
    }
)
FEEDBACK = pl.DataFrame(
    [
        {"completion_id": r["id"], "metric": f["metric"], "value": float(f["value"])}
        for r in ROWS
        for f in r.get("feedbacks") or []
    ]
)
LABELS = {r["id"]: r.get("labels") or {} for r in ROWS}


def oracle(flt: dict[str, Any]) -> set[str]:
    """The ids matching one filter object (query-string semantics), in polars."""
    df = FRAME
    for col in ("use_case", "model", "session_id", "user", "status"):
        if col in flt:
            df = df.filter(pl.col(col).is_in(flt[col]))
    if "from" in flt:
        df = df.filter(pl.col("created_at") >= flt["from"])
    if "to" in flt:
        df = df.filter(pl.col("created_at") < flt["to"])
    for text in flt.get("search", []):
        t = text.lower()
        df = df.filter(
            pl.col("text").str.contains(t, literal=True)
            | pl.col("completion").str.contains(t, literal=True)
        )
    ids = set(df["id"].to_list())
    for expr in flt.get("label", []):
        key, _, values = expr.partition(":")
        ids = {i for i in ids if LABELS[i].get(key) in values.split("|")}
    for key in flt.get("has_label", []):
        ids = {i for i in ids if key in LABELS[i]}
    for key in flt.get("no_label", []):
        ids = {i for i in ids if key not in LABELS[i]}
    for expr in flt.get("feedback", []):
        for op in (">=", "<=", "!=", ">", "<", "="):  # two-character operators first
            metric, sep, value = expr.partition(op)
            if sep:
                break
        hits = FEEDBACK.filter(
            (pl.col("metric") == metric) & OPS[op](pl.col("value"), float(value))
        )
        ids &= set(hits["completion_id"].to_list())
    return ids


def oracle_expr(expr: dict[str, Any]) -> set[str]:
    if "and" in expr:
        out = set(FRAME["id"].to_list())
        for e in expr["and"]:
            out &= oracle_expr(e)
        return out
    if "or" in expr:
        return set().union(*(oracle_expr(e) for e in expr["or"])) if expr["or"] else set()
    if "not" in expr:
        return set(FRAME["id"].to_list()) - oracle_expr(expr["not"])
    return oracle(expr)


def _values(col: str) -> list[str]:
    return sorted({v for v in FRAME[col].to_list() if v is not None})


LABEL_KEYS = sorted({k for labels in LABELS.values() for k in labels})
LABEL_VALUES = {k: sorted({lab[k] for lab in LABELS.values() if k in lab})[:6] for k in LABEL_KEYS}
DAYS = sorted({t.replace(hour=0, minute=0, second=0, microsecond=0) for t in FRAME["created_at"]})


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    pick = st.lists
    if draw(st.booleans()):
        flt["use_case"] = draw(pick(st.sampled_from(_values("use_case")), min_size=1, max_size=3))
    if draw(st.booleans()):
        flt["model"] = draw(pick(st.sampled_from(_values("model")), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        flt["status"] = [draw(st.sampled_from(["ok", "error"]))]
    if draw(st.booleans()):
        labels = []
        for key in draw(pick(st.sampled_from(LABEL_KEYS), min_size=1, max_size=2, unique=True)):
            values = draw(pick(st.sampled_from(LABEL_VALUES[key]), min_size=1, max_size=2))
            labels.append(f"{key}:{'|'.join(values)}")
        flt["label"] = labels
    if draw(st.integers(0, 3)) == 0:
        flt["has_label"] = [draw(st.sampled_from(LABEL_KEYS))]
    if draw(st.integers(0, 3)) == 0:
        flt["no_label"] = [draw(st.sampled_from(LABEL_KEYS))]
    if draw(st.integers(0, 2)) == 0:
        flt["from"] = draw(st.sampled_from(DAYS))
    if draw(st.integers(0, 2)) == 0:
        flt["to"] = draw(st.sampled_from(DAYS))
        if "from" in flt and flt["to"] <= flt["from"]:  # an empty range is a 422
            if flt["to"] == flt["from"]:
                del flt["to"]
            else:
                flt["from"], flt["to"] = flt["to"], flt["from"]
    if draw(st.integers(0, 3)) == 0:
        metric = draw(st.sampled_from(["rating", "thumbs_up", "accuracy"]))
        op = draw(st.sampled_from(sorted(OPS)))
        flt["feedback"] = [f"{metric}{op}{draw(st.sampled_from([0, 0.5, 1, 3, 4, 5]))}"]
    if draw(st.integers(0, 3)) == 0:
        flt["search"] = [draw(st.sampled_from(["refund", "INVOICE", "the", "battery", "ü",
                                               "drill", "zzzz-none"]))]  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        flt["user"] = [draw(st.sampled_from(_values("user")[:20]))]
    return flt


def _api(flt: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in flt.items()}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    root = tmp_path_factory.mktemp("oracle")
    lines = LINES
    first, rest = root / "first.jsonl", root / "rest.jsonl"
    first.write_text("".join(lines[:-200]))
    rest.write_text("".join(lines[-200:]))
    store = Store(root / "data", options=StoreOptions(flush_interval_s=3600))
    import_files(store, [first])
    store.flush()  # most rows in Delta files …
    import_files(store, [rest])  # … and some only in the log, as in a live server
    assert store.status()["pending_rows"] >= 200
    yield Reader(store)
    store.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flt=filters())
def test_filters_match_the_oracle(loaded: Reader, flt: dict[str, Any]) -> None:
    got = set(loaded.interactions(**_api(flt)).select("id").collect()["id"].to_list())
    assert got == oracle(flt), flt


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(filters(), min_size=1, max_size=3), shape=st.sampled_from(["and", "or", "not"])
)
def test_filter_expressions_match_the_oracle(
    loaded: Reader, parts: list[dict[str, Any]], shape: str
) -> None:
    expr: dict[str, Any]
    if shape == "not":
        expr = {"and": [_api(parts[0]), {"not": _api(parts[-1])}]}
        want = oracle(parts[0]) - oracle(parts[-1])
    else:
        expr = {shape: [_api(p) for p in parts]}
        want = oracle_expr({shape: parts})
    got: list[str] = []
    after = None
    while True:  # page through all of it (cursors combine with OR/NOT correctly)
        page = loaded.page(parse_expr(expr), limit=997, after=after)
        got += [r["id"] for r in page.data]
        if not page.has_more:
            break
        after = page.next_cursor
    assert len(got) == len(set(got)) and set(got) == want, expr


async def test_list_pages_equal_the_oracle(loaded: Reader) -> None:
    flt = {"use_case": ["support", "sales-email"], "label": ["env:prod"], "has_label": ["topic"]}
    want = oracle(flt)
    async with in_process(loaded.store) as c:
        got: list[str] = []
        after = None
        while True:
            params: list[tuple[str, str]] = [(k, v) for k, vs in flt.items() for v in vs]
            params.append(("limit", "37"))
            if after:
                params.append(("after", after))
            r = (await c.get("/api/v1/interactions", params=params)).json()
            got += [x["id"] for x in r["data"]]
            after = r["next_cursor"]
            if not r["has_more"]:
                break
    assert len(got) == len(set(got)) and set(got) == want


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flt=filters(), group=st.sampled_from(["use_case", "model", "label:project", "day", "status"])
)
def test_stats_match_the_oracle(loaded: Reader, flt: dict[str, Any], group: str) -> None:
    from store.filters import filter_from_kwargs
    from store.stats import stats

    result = stats(
        loaded.store,
        filter_from_kwargs(_api(flt)),
        [group],
        ["count", "sum_prompt_tokens", "p95_latency_ms", "avg_feedback:rating",
         "count_feedback:rating"],
    )  # fmt: skip
    ids = oracle(flt)
    df = FRAME.filter(pl.col("id").is_in(list(ids)))
    if group == "label:project":
        df = df.with_columns(pl.Series("g", [LABELS[i].get("project") for i in df["id"].to_list()]))
    elif group == "day":
        df = df.with_columns(
            pl.col("created_at").dt.truncate("1d").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("g")
        )
    else:
        df = df.with_columns(pl.col(group).alias("g"))
    rating = FEEDBACK.filter(pl.col("metric") == "rating")
    want = {}
    for g, part in df.group_by("g"):
        fb = rating.filter(pl.col("completion_id").is_in(part["id"].to_list()))
        lat = part["latency_ms"].drop_nulls()
        want[g[0]] = {
            "count": part.height,
            "sum_prompt_tokens": part["prompt_tokens"].sum()
            if part["prompt_tokens"].drop_nulls().len()
            else None,
            "p95_latency_ms": lat.quantile(0.95, interpolation="linear") if lat.len() else None,
            "avg_feedback:rating": fb["value"].mean() if fb.height else None,
            "count_feedback:rating": fb.height,
        }
    got = {row[group]: {k: v for k, v in row.items() if k != group} for row in result["data"]}
    assert set(got) == set(want)
    for g, w in want.items():
        for k, v in w.items():
            if v is None or isinstance(v, int):
                assert got[g][k] == v, (g, k)
            else:
                assert got[g][k] == pytest.approx(v, rel=1e-9), (g, k)


async def test_http_filters_and_aggregates_without_a_use_case(loaded: Reader) -> None:
    """Regression (review): feedback filters and feedback metrics with no use_case."""
    async with in_process(loaded.store) as c:
        r = await c.get("/api/v1/interactions", params={"feedback": "rating>=4", "limit": 1000})
        assert {x["id"] for x in r.json()["data"]} == oracle({"feedback": ["rating>=4"]})
        r = await c.get("/api/v1/interactions/stats", params={"metrics": "count_feedback:rating"})
        assert r.json()["data"] == [{"count_feedback:rating": FEEDBACK.filter(
            pl.col("metric") == "rating").height}]  # fmt: skip
        r = await c.get("/api/v1/labels", params={"key": "project"})
        (item,) = r.json()["data"]
        assert item["count"] == sum(1 for x in LABELS.values() if "project" in x)
        r = await c.post("/api/v1/interactions/query",
                         json={"filter": {"or": [{"use_case": "support"}, {"model": "phi"}]},
                               "limit": 7})  # fmt: skip
        pages = 1
        while r.json()["has_more"]:
            after = r.json()["next_cursor"]
            r = await c.post("/api/v1/interactions/query",
                             json={"filter": {"or": [{"use_case": "support"},
                                                     {"model": "phi"}]},
                                   "limit": 7, "after": after})  # fmt: skip
            pages += 1
            assert pages < 1000
        lone_surrogate = b'{"filter": {"search": "\\ud800"}}'
        r = await c.post("/api/v1/interactions/query", content=lone_surrogate,
                         headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 422 and r.json()["error"]["param"] == "filter.search", r.text
        bad_params = [
            ("from", "0001-01-01T00:00:00+01:00"),
            ("to", "9999-12-31T23:59:59-01:00"),
            ("feedback", "x=>1"),
        ]
        for name, value in bad_params:
            r = await c.get("/api/v1/interactions", params={name: value})
            assert r.status_code == 422 and r.json()["error"]["param"] == name, r.text
