"""Fine-tuning exports: OpenAI's data checks, round trips, pairs, splits, reproducibility."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner

from istore.cli import main
from store.engine import Store, StoreOptions
from store.export import in_train
from tests.conftest import assert_error, in_process, interaction

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"sku": "DR-18V"}'}}  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def openai_format_errors(ex: Any) -> list[str]:
    """The checks of OpenAI's chat fine-tuning data-preparation recipe (cookbook
    "Data preparation and analysis for chat model fine-tuning"), per example."""
    errors = []
    if not isinstance(ex, dict) or not isinstance(ex.get("messages"), list) or not ex["messages"]:
        return ["data_type" if not isinstance(ex, dict) else "missing_messages_list"]
    for m in ex["messages"]:
        if "role" not in m or ("content" not in m and "tool_calls" not in m):
            errors.append("message_missing_key")
        if any(k not in ("role", "content", "name", "function_call", "weight", "tool_calls",
                         "tool_call_id", "refusal") for k in m):  # fmt: skip
            errors.append("message_unrecognized_key")
        if m.get("role") not in ("system", "user", "assistant", "function", "tool"):
            errors.append("unrecognized_role")
        content = m.get("content")
        if content is None and not (m.get("role") == "assistant" and m.get("tool_calls")):
            errors.append("missing_content")
        elif content is not None and not isinstance(content, str):
            errors.append("content_not_string")
    if not any(m.get("role") == "assistant" for m in ex["messages"]):
        errors.append("example_missing_assistant_message")
    return errors


def _export(client: httpx.AsyncClient, query: str) -> Any:
    return client.get(f"/api/v1/export?{query}")


def _lines(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [orjson.loads(x) for x in r.content.splitlines()]


async def test_openai_lines_pass_the_data_checks(client: httpx.AsyncClient) -> None:
    body = [
        interaction(0, params={"tools": TOOLS, "parallel_tool_calls": False},
                    completion={"role": "assistant", "content": None, "tool_calls": [CALL]}),
        interaction(1, messages=[{"role": "system", "content": "s"},
                                 {"role": "user", "content": "q"},
                                 {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                 {"role": "tool", "tool_call_id": "call_1", "content": "3"}]),
        interaction(2, status="error", error="upstream 500", completion=None),
    ]  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    lines = _lines(await _export(client, "format=openai"))
    assert len(lines) == 2  # the failed call is left out
    for ex in lines:
        assert openai_format_errors(ex) == [], ex
    assert lines[0]["tools"] == TOOLS and lines[0]["parallel_tool_calls"] is False
    assert lines[0]["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert len(_lines(await _export(client, "format=openai&include_errors=true"))) == 3


def test_openai_finetune_file_round_trips(tmp_path: Path) -> None:
    examples = [
        {"messages": [{"role": "system", "content": "You sell tools."},
                      {"role": "user", "content": f"Is item {i} in stock? ✓"},
                      {"role": "assistant", "content": None, "tool_calls": [CALL]},
                      {"role": "tool", "tool_call_id": "call_1", "content": '{"stock": 3}'},
                      {"role": "assistant", "content": f"Yes, {i} left."}],
         "tools": TOOLS, "parallel_tool_calls": False}
        for i in range(5)
    ] + [{"messages": [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": None, "tool_calls": [CALL]}]}]  # fmt: skip
    src = tmp_path / "ft.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in examples))
    data = tmp_path / "data"
    runner = CliRunner()
    r = runner.invoke(main, ["import", "--data", str(data), "--use-case", "ft", str(src)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.jsonl"
    r = runner.invoke(main, ["export", "--data", str(data), "--format", "openai", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert [json.loads(x) for x in out.read_text().splitlines()] == examples


async def test_feedback_pairs_follow_the_rule(client: httpx.AsyncClient) -> None:
    """Per prompt: the best (newest on a tie) against each strictly lower one with a
    margin of at least min_margin; ties and lone completions give no pair."""
    scored = {  # prompt → [(completion, score)] in ingest order
        "p1": [("a", 5), ("b", 3), ("c", 4.5)],
        "p2": [("d", 2), ("e", 2)],  # a tie: no pair
        "p3": [("f", 1)],  # alone: no pair
        "p4": [("g", 1), ("h", 4), ("i", 4)],  # best tied: the newest (i) is "the best"
    }
    body = []
    for prompt, items in scored.items():
        for text, score in items:
            body.append(interaction(0, id=f"{prompt}-{text}", completion=text,
                                    messages=[{"role": "user", "content": prompt}],
                                    feedbacks=[{"metric": "stars", "value": score}]))  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    pairs = _lines(await _export(client, "format=dpo&metric=stars"))
    got = {(p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"])
           for p in pairs}  # fmt: skip
    assert got == {("p1", "a", "b"), ("p1", "a", "c"), ("p4", "i", "g")}
    assert len(pairs) == 3
    pairs = _lines(await _export(client, "format=dpo&metric=stars&min_margin=1"))
    got = {(p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"])
           for p in pairs}  # fmt: skip
    assert got == {("p1", "a", "b"), ("p4", "i", "g")}


async def test_comparisons_appear_in_every_preference_format(client: httpx.AsyncClient) -> None:
    a = interaction(0, id="cmp-a", completion="good", messages=[{"role": "user", "content": "q"}])
    b = interaction(1, id="cmp-b", completion="bad", messages=[{"role": "user", "content": "q"}])
    assert (await client.post("/api/v1/interactions", json=[a, b])).status_code == 201
    for body in (
        {"metric": "helpful", "preferred_completion": "cmp-a", "other_completion": "cmp-b"},
        {"metric": "helpful", "project": "support", "messages": [{"role": "user", "content": "z"}],
         "preferred_completion": {"text": "yes"}, "other_completion": {"text": "no"}},
        {"metric": "helpful", "preferred_completion": "cmp-b", "other_completion": "cmp-a",
         "tied": "good"},  # a tie: no pair
    ):  # fmt: skip
        assert (await client.post("/api/v1/comparison", json=body)).status_code == 201
    dpo = _lines(await _export(client, "format=dpo"))
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in dpo] == [
        ([{"role": "user", "content": "q"}], [{"role": "assistant", "content": "good"}],
         [{"role": "assistant", "content": "bad"}]),
        ([{"role": "user", "content": "z"}], [{"role": "assistant", "content": "yes"}],
         [{"role": "assistant", "content": "no"}]),
    ]  # fmt: skip
    oai = _lines(await _export(client, "format=openai-dpo"))
    assert oai[0] == {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    ada = _lines(await _export(client, "format=adaptive-preference"))
    assert ada[1] == {"messages": [{"role": "user", "content": "z"}],
                      "preferred_completion": "yes", "other_completion": "no",
                      "feedback_key": "helpful"}  # fmt: skip
    assert _lines(await _export(client, "format=preference")) == ada


async def test_split_never_puts_a_prompt_on_both_sides(client: httpx.AsyncClient) -> None:
    body = [interaction(i, messages=[{"role": "user", "content": f"prompt {i % 40}"}])
            for i in range(200)]  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    train = _lines(await _export(client, "format=adaptive&split=0.8&part=train"))
    valid = _lines(await _export(client, "format=adaptive&split=0.8&part=validation"))
    assert len(train) + len(valid) == 200 and train and valid
    left = {json.dumps(x["messages"]) for x in train}
    right = {json.dumps(x["messages"]) for x in valid}
    assert not left & right
    assert_error(await _export(client, "format=adaptive&split=0.8"), 422, "part")
    assert in_train('[{"role":"user","content":"x"}]', 0.5) in (True, False)


async def test_curation_options(client: httpx.AsyncClient) -> None:
    q = [{"role": "user", "content": "same"}]
    body = [
        interaction(0, id="c0", messages=q, completion="old",
                    feedbacks=[{"metric": "m", "value": 9}]),
        interaction(1, id="c1", messages=q, completion="new",
                    feedbacks=[{"metric": "m", "value": 1}]),
        interaction(2, id="c2", messages=q, completion="newest"),
        interaction(3, id="c3", completion="x" * 500),
    ]  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    best = _lines(await _export(client, "format=adaptive&dedupe=true&metric=m&search=same"))
    assert [x["completion"] for x in best] == ["old"]  # best-scored
    newest = _lines(await _export(client, "format=adaptive&dedupe=true&search=same"))
    assert [x["completion"] for x in newest] == ["newest"]  # else the newest
    assert len(_lines(await _export(client, "format=adaptive&max_examples=2"))) == 2
    assert len(_lines(await _export(client, "format=adaptive&max_chars=100"))) == 3
    assert len(_lines(await _export(client, "format=adaptive&min_turns=2"))) == 0
    fb = _lines(await _export(client, "format=adaptive&include_feedback=true&feedback=m>=5"))
    assert fb == [{"messages": q, "completion": "old", "feedbacks": {"m": 9.0}}]
    table = pq.read_table(io.BytesIO((await _export(client, "format=parquet")).content))
    assert table.num_rows == 4 and "feedback" in table.column_names
    assert_error(await _export(client, "format=xml"), 422, "format")
    assert_error(await _export(client, "format=openai&as_of=nope"), 422, "as_of")
    assert_error(await _export(client, "format=openai&colour=red"), 422, "colour")


def _write(store: Store, items: list[dict[str, Any]]) -> None:
    from ingest.normalize import build_batch
    from ingest.parse import validate
    from store.schema import INTERACTIONS_TABLE

    batch = build_batch([validate(x) for x in items], source="api")
    store.write(INTERACTIONS_TABLE, batch.interactions(), feedback=batch.feedback()).result()
    store.flush()


async def test_exports_are_reproducible(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store(data, options=StoreOptions(flush_interval_s=3600)) as store:
        _write(store, [interaction(i, id=f"r{i}", feedbacks=[{"metric": "m", "value": i % 3}])
                       for i in range(30)])  # fmt: skip
    runner = CliRunner()
    out = tmp_path / "one.jsonl"
    args = ["export", "--data", str(data), "--format", "adaptive", "--include-feedback",
            "--split", "0.7", "--filter", "use_case=support", "-o", str(out)]  # fmt: skip
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    manifest_path = tmp_path / "one.jsonl.manifest.json"
    first = orjson.loads(manifest_path.read_bytes())
    assert set(first["files"]) == {"one.train.jsonl", "one.validation.jsonl"}
    for name, digest in first["files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    assert first["versions"]["interactions"] >= 1 and first["filters"] == {"use_case": ["support"]}

    # More data arrives, including feedback on old interactions …
    with Store(data, options=StoreOptions(flush_interval_s=3600)) as store:
        _write(store, [interaction(i, id=f"late{i}") for i in range(10)])
    # … the same manifest still gives the same bytes (Delta time travel).
    again = tmp_path / "again"
    again.mkdir()
    r = runner.invoke(main, ["export", "--data", str(data), "--manifest", str(manifest_path),
                             "-o", str(again / "one.jsonl")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "identical to the manifest" in r.output
    second = orjson.loads((again / "one.jsonl.manifest.json").read_bytes())
    assert second["files"] == first["files"] and second["versions"] == first["versions"]
    # And without the manifest the new rows are in.
    r = runner.invoke(main, [*args[:-1], str(tmp_path / "now.jsonl")])
    assert r.exit_code == 0, r.output
    now = orjson.loads((tmp_path / "now.jsonl.manifest.json").read_bytes())
    assert sum(now["rows"].values()) == 40


async def test_http_export_names_its_versions_and_repeats_them(store: Store) -> None:
    async with in_process(store) as c:
        await c.post("/api/v1/interactions", json=[interaction(i) for i in range(3)])
        r = await _export(c, "format=openai")
        versions = r.headers["x-istore-versions"]
        first = r.content
        await c.post("/api/v1/interactions", json=[interaction(i) for i in range(3, 5)])
        again = await c.get("/api/v1/export", params={"format": "openai", "as_of": versions})
        assert again.content == first
        assert len((await _export(c, "format=openai")).content.splitlines()) == 5


def test_manifest_check_compares_content_not_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store(data, options=StoreOptions(flush_interval_s=3600)) as store:
        _write(store, [interaction(i) for i in range(5)])
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--data", str(data), "-o", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 0, r.output
    m = tmp_path / "a.jsonl.manifest.json"
    r = runner.invoke(main, ["export", "--data", str(data), "--manifest", str(m),
                             "-o", str(tmp_path / "b.jsonl")])  # fmt: skip
    assert r.exit_code == 0 and "identical" in r.output, r.output
    tampered = orjson.loads(m.read_bytes())
    tampered["sides"]["all"] = "0" * 64
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(tampered))
    r = runner.invoke(main, ["export", "--data", str(data), "--manifest", str(bad),
                             "-o", str(tmp_path / "c.jsonl")])  # fmt: skip
    assert r.exit_code == 1 and "differ" in r.output
    r = runner.invoke(main, ["export", "--data", str(data), "--manifest", str(m),
                             "-o", str(tmp_path / "a.jsonl")])  # fmt: skip
    assert r.exit_code == 2  # would overwrite the manifest it checks


async def test_review_regressions(client: httpx.AsyncClient) -> None:
    msg = {"role": "assistant", "content": None, "tool_calls": [CALL], "annotations": [],
           "audio": None, "refusal": None}  # fmt: skip
    q = [{"role": "user", "content": "q"}]
    body = [
        interaction(0, id="t0", completion=msg, params={"tools": None}),
        interaction(1, id="f1", messages=q, completion="hi",
                    feedbacks=[{"metric": "s", "value": 0.3}]),
        interaction(2, id="f2", messages=q, completion="ho",
                    feedbacks=[{"metric": "s", "value": 0.1}]),
        interaction(3, id="nul", messages=q, completion=None),
    ]  # fmt: skip
    assert (await client.post("/api/v1/interactions", json=body)).status_code == 201
    (line,) = [x for x in _lines(await _export(client, "format=openai")) if "tool_calls" in
               x["messages"][-1]]  # fmt: skip
    assert openai_format_errors(line) == [] and "tools" not in line
    assert line["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    # 0.3 - 0.1 is a margin of 0.2
    pairs = _lines(await _export(client, "format=dpo&metric=s&min_margin=0.2"))
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("hi", "ho")
    ]
    # a comparison whose preferred side has no answer gives no pair
    cmp = {"metric": "m", "preferred_completion": "nul", "other_completion": "f1"}
    assert (await client.post("/api/v1/comparison", json=cmp)).status_code == 201
    inline = {"metric": "m", "project": "support", "messages": q,
              "preferred_completion": {"text": "a"}, "other_completion": {"text": "b"}}  # fmt: skip
    assert (await client.post("/api/v1/comparison", json=inline)).status_code == 201
    got = _lines(await _export(client, "format=dpo&comparisons=true"))
    assert [p["chosen"][0]["content"] for p in got] == ["a"]
    assert _lines(await _export(client, "format=dpo&model=nomodel")) == []
    assert _lines(await _export(client, "format=dpo&from=2100-01-01")) == []
    # max_examples counts the requested part
    many = [interaction(i, messages=[{"role": "user", "content": f"p{i}"}]) for i in range(40)]
    assert (await client.post("/api/v1/interactions", json=many)).status_code == 201
    part = _lines(await _export(client, "format=adaptive&split=0.5&part=train&max_examples=5"))
    assert len(part) == 5
    empty = await _export(client, "format=parquet&use_case=none")
    assert pq.read_table(io.BytesIO(empty.content)).num_rows == 0
    assert_error(await _export(client, "format=dpo&dedupe=true"), 422, "dedupe")
    assert_error(await _export(client, "format=parquet&split=0.5&part=train"), 422, "split")
    huge = '{"interactions": 9223372036854775807}'
    assert_error(await client.get("/api/v1/export", params={"as_of": huge}), 422, "as_of")
    assert_error(await client.get("/api/v1/export", params={"as_of": '{"bogus": 1}'}), 422,
                 "as_of")  # fmt: skip
