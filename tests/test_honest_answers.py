"""Answers that do not hide what happened: an export that cannot yield anything says
why, deletes and retention show their count first and can be dry-run, a maintenance
pass can be asked for now, `istore retention apply` beside a server says it did
nothing, `istore stats` leaves deleted rows out, `istore compact` says what it did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from click.testing import CliRunner
from deltalake import DeltaTable

from istore.cli import main
from store.engine import Store
from store.lifecycle import Retention
from tests.conftest import assert_error, in_process, interaction

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()


async def _seed(c: httpx.AsyncClient) -> list[str]:
    ids = []
    for i in range(6):
        body = interaction(i, user=("alice", "bob")[i % 2],
                           feedbacks=[{"metric": "rating", "value": i}])  # fmt: skip
        r = await c.post("/api/v1/interactions", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["completion_id"])
    for i in range(3):
        r = await c.post("/api/v1/interactions",
                         json=interaction(100 + i, use_case="old", created_at=OLD,
                                          feedbacks=[{"metric": "m", "value": 1}]))  # fmt: skip
        assert r.status_code == 201, r.text
    return ids


# -- exports ---------------------------------------------------------------------------------
async def test_an_export_that_cannot_yield_anything_says_why(client: httpx.AsyncClient) -> None:
    await _seed(client)
    r = await client.get("/api/v1/export", params={"part": "train"})
    assert_error(r, 422, "split")
    assert "split=0.9" in r.json()["error"]["message"]
    r = await client.get("/api/v1/export", params={"from": "2026-11-01", "to": "2026-10-01"})
    assert_error(r, 422, "to")
    r = await client.get("/api/v1/interactions", params={"from": "2026-11-02", "to": "2026-11-02"})
    assert_error(r, 422, "to")  # the list too: an empty range is a mistake
    r = await client.get("/api/v1/export", params={"format": "dpo", "comparisons": "false"})
    assert_error(r, 422, "metric")

    r = await client.get("/api/v1/export", params={"use_case": "suport"})
    assert r.status_code == 200 and r.text == ""
    warning = r.headers["x-istore-warning"]
    assert "'suport'" in warning and "old, support" in warning
    r = await client.get("/api/v1/export", params={"format": "dpo", "metric": "ratng"})
    assert r.status_code == 200 and r.text == ""
    assert "metric 'ratng': no feedback" in r.headers["x-istore-warning"]
    r = await client.get("/api/v1/export", params={"format": "dpo"})
    assert "no comparisons to pair" in r.headers["x-istore-warning"]

    # Nothing to say when the export has what it needs.
    r = await client.get("/api/v1/export", params={"use_case": "support"})
    assert r.status_code == 200 and len(r.text.splitlines()) == 6
    assert "x-istore-warning" not in r.headers
    r = await client.get("/api/v1/export", params={"format": "dpo", "metric": "rating"})
    assert r.status_code == 200 and "x-istore-warning" not in r.headers


def test_cli_export_prints_the_same_warnings(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "in.ndjson"
    src.write_bytes(orjson.dumps(interaction(0)) + b"\n")
    assert CliRunner().invoke(main, ["import", "--data", str(data), str(src)]).exit_code == 0
    out = tmp_path / "x.jsonl"
    r = CliRunner().invoke(main, ["export", "--data", str(data), "--filter", "use_case=nope",
                                  "-o", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: no interaction in use case 'nope' (use cases with data: support)" in r.stderr


# -- deletes ---------------------------------------------------------------------------------
async def test_bulk_delete_takes_the_query_body_and_can_be_dry_run(
    client: httpx.AsyncClient,
) -> None:
    await _seed(client)
    url = "/api/v1/interactions/delete"
    body = {"filter": {"and": [{"use_case": "support"}, {"user": "alice"}]}}
    r = await client.post(url, params={"dry_run": "true"}, json=body)
    assert r.status_code == 200 and r.json() == {"dry_run": True, "would_delete": 3}
    r = await client.post("/api/v1/interactions/query", json=body)  # the same body lists them
    assert len(r.json()["data"]) == 3
    r = await client.post(url, json=body)
    assert r.json() == {"deleted": 3}
    r = await client.post(url, params={"dry_run": "true"}, json=body)
    assert r.json() == {"dry_run": True, "would_delete": 0}
    # The first form (filters at the top) still works.
    assert (await client.post(url, json={"user": "bob"})).json() == {"deleted": 3}
    assert_error(await client.post(url, json={"filter": {}}), 422, "filter")
    assert_error(await client.post(url, json={"filter": {"user": None}}), 422, "filter.user")
    err = assert_error(await client.post(url, json={"filter": {"user": "x"}, "dry_run": True}),
                       422, "dry_run")  # fmt: skip
    assert "?dry_run=true" in err["message"]
    assert_error(await client.post(url, params={"dryrun": "1"}, json=body), 422, "dryrun")
    r = await client.post(url, params={"dry_run": "true"}, json={"filter": {"all": True}})
    assert r.json() == {"dry_run": True, "would_delete": 3}  # the old use case is left


# -- maintenance now -------------------------------------------------------------------------
async def test_maintenance_now_dry_run_then_for_real(store: Store) -> None:
    async with in_process(store, maintenance_interval_s=0) as c:  # no schedule: a one-off
        await _seed(c)
        Retention(use_cases={"old": 30}).save(store.root)
        r = await c.post("/api/v1/interactions/delete", json={"filter": {"user": "alice"}})
        assert r.json() == {"deleted": 3}
        r = await c.post("/api/v1/maintenance", params={"dry_run": "true"})
        assert r.status_code == 200, r.text
        plan = r.json()
        assert plan["dry_run"] is True and plan["steps"] == ["retention", "purge", "compact",
                                                              "vacuum"]  # fmt: skip
        assert plan["retention"]["interactions"] == 3 and plan["retention"]["feedback"] == 3
        assert plan["purged"]["interactions"] == 3 and plan["purged"]["feedback"] == 3
        store.flush()
        rows = DeltaTable(str(store.root / "interactions")).to_pyarrow_table().num_rows
        assert rows == 9  # nothing deleted by the dry run
        r = await c.post("/api/v1/maintenance", params={"steps": "retention,purge"})
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["steps"] == ["retention", "purge"] and "compacted" not in done
        assert done["retention"]["interactions"] == 3 and done["purged"]["interactions"] == 3
        rows = DeltaTable(str(store.root / "interactions")).to_pyarrow_table().num_rows
        assert rows == 3
        r = await c.post("/api/v1/maintenance", params={"dry_run": "true", "steps": "retention"})
        assert r.json()["retention"] == {} or not any(r.json()["retention"].values())
        assert_error(await c.post("/api/v1/maintenance", params={"steps": "defrag"}), 422,
                     "steps")  # fmt: skip


# -- the command line ------------------------------------------------------------------------
def _import(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    data, src = tmp_path / "data", tmp_path / "in.ndjson"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(src)])
    assert r.exit_code == 0, r.output
    return data


def test_retention_apply_shows_the_count_and_can_be_dry_run(tmp_path: Path) -> None:
    rows = [interaction(i, use_case="old", created_at=OLD, feedbacks=[{"metric": "m", "value": 1}])
            for i in range(4)] + [interaction(9)]  # fmt: skip
    data = _import(tmp_path, rows)
    r = CliRunner().invoke(main, ["retention", "apply", "--data", str(data)])
    assert r.exit_code == 0 and r.stdout.strip() == "no retention rules: nothing to delete " \
        "(istore retention set …)"  # fmt: skip
    CliRunner().invoke(main, ["retention", "set", "--data", str(data), "old", "30"])
    r = CliRunner().invoke(main, ["retention", "apply", "--data", str(data), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "would delete: interactions 4, feedback 4"
    r = CliRunner().invoke(main, ["retention", "apply", "--data", str(data)], input="n\n")
    assert r.exit_code == 1 and "past the window: interactions 4, feedback 4" in r.stdout
    assert DeltaTable(str(data / "interactions")).to_pyarrow_table().num_rows == 5
    r = CliRunner().invoke(main, ["retention", "apply", "--data", str(data), "--yes"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == "deleted rows: interactions 4, feedback 4"
    assert DeltaTable(str(data / "interactions")).to_pyarrow_table().num_rows == 1


def test_retention_apply_beside_a_server_says_it_did_nothing(tmp_path: Path) -> None:
    data = _import(tmp_path, [interaction(0, use_case="old", created_at=OLD)])
    CliRunner().invoke(main, ["retention", "set", "--data", str(data), "old", "30"])
    server = Store(data)  # holds the data root's lock, as `istore serve` does
    try:
        r = CliRunner().invoke(main, ["retention", "apply", "--data", str(data), "--yes"])
    finally:
        server.close()
    assert r.exit_code == 1
    assert "a server is running" in r.stderr and "nothing was done" in r.stderr
    assert "POST" in r.stderr and "/api/v1/maintenance?steps=retention" in r.stderr
    assert DeltaTable(str(data / "interactions")).to_pyarrow_table().num_rows == 1


def test_delete_dry_run_stats_and_compact_say_what_is_true(tmp_path: Path) -> None:
    rows = [interaction(i, id=f"d{i}", user=("alice", "bob")[i % 2],
                        feedbacks=[{"metric": "m", "value": 1}]) for i in range(10)]  # fmt: skip
    data = _import(tmp_path, rows)
    r = CliRunner().invoke(main, ["delete", "--data", str(data), "--filter", "user=alice",
                                  "--dry-run"])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.strip() == "would delete 5 interactions"
    r = CliRunner().invoke(main, ["delete", "--data", str(data), "--filter", "user=alice",
                                  "--yes"])  # fmt: skip
    assert r.exit_code == 0, r.output

    stats = orjson.loads(CliRunner().invoke(main, ["stats", "--data", str(data), "--json"]).stdout)
    row = next(x for x in stats if x["table"] == "interactions" and x["use_case"] == "support")
    assert (row["rows"], row["deleted"]) == (5, 5)  # deleted rows are not counted as rows
    fb = next(x for x in stats if x["table"] == "feedback")
    assert (fb["rows"], fb["deleted"]) == (5, 5)
    text = CliRunner().invoke(main, ["stats", "--data", str(data)]).stdout
    assert "still in the files until `istore compact`" in text

    r = CliRunner().invoke(main, ["compact", "--data", str(data)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "deleted rows removed from the files: interactions 5, feedback 5"
    assert "comparisons: nothing to compact (0 files)" in lines
    stats = orjson.loads(CliRunner().invoke(main, ["stats", "--data", str(data), "--json"]).stdout)
    row = next(x for x in stats if x["table"] == "interactions" and x["use_case"] == "support")
    assert (row["rows"], row["deleted"]) == (5, 0)
    r = CliRunner().invoke(main, ["compact", "--data", str(data)])
    assert r.stdout.splitlines()[0] == "deleted rows removed from the files: none"
    assert "interactions: nothing to compact (1 file)" in r.stdout.splitlines()
