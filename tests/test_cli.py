"""The command line, through click's runner: exact user-facing output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from click.testing import CliRunner

import store
from istore.cli import main
from service.settings import Settings
from tests.conftest import interaction


def _file(tmp_path: Path, n: int = 20, prefix: str = "c") -> Path:
    path = tmp_path / "in.ndjson"
    lines = [
        orjson.dumps(interaction(i, id=f"{prefix}{i}", use_case=("support", "billing")[i % 2]))
        for i in range(n)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_import_is_idempotent_and_says_so(tmp_path: Path) -> None:
    src, data = _file(tmp_path), str(tmp_path / "data")
    r = CliRunner().invoke(main, ["import", "--data", data, str(src)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == f"Imported 20 of 20 interactions into {data}"
    r = CliRunner().invoke(main, ["import", "--data", data, str(src)])
    assert r.stdout.splitlines()[-1] == (
        f"Imported 0 of 20 interactions into {data} (20 were already stored)"
    )


def test_import_error_names_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.ndjson"
    src.write_bytes(orjson.dumps(interaction(0)) + b"\n" + b'{"use_case": "x"}\n')
    r = CliRunner().invoke(main, ["import", "--data", str(tmp_path / "d"), str(src)])
    assert r.exit_code == 1
    assert "Error:" in r.stderr and "bad.ndjson" in r.stderr and "messages" in r.stderr


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
def test_sql_formats(tmp_path: Path) -> None:
    src, data = _file(tmp_path), str(tmp_path / "data")
    CliRunner().invoke(main, ["import", "--data", data, str(src)])
    q = "SELECT use_case, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1"
    r = CliRunner().invoke(main, ["sql", "--data", data, "--format", "csv", q])
    assert r.exit_code == 0
    assert r.stdout == "use_case,n\nbilling,10\nsupport,10\n"
    r = CliRunner().invoke(main, ["sql", "--data", data, "--format", "json", q])
    assert orjson.loads(r.stdout) == [
        {"use_case": "billing", "n": 10},
        {"use_case": "support", "n": 10},
    ]
    r = CliRunner().invoke(main, ["sql", "--data", data, q])
    assert "billing" in r.stdout and r.stdout.rstrip().endswith("2 rows")
    r = CliRunner().invoke(main, ["sql", "--data", data, "DELETE FROM interactions"])
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: only SELECT (or WITH … SELECT) statements are allowed, got DELETE"
    )


def test_stats_compact_vacuum(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for k in range(3):  # three imports → three commits → several files per partition
        src = _file(tmp_path, 10, prefix=f"k{k}-")
        CliRunner().invoke(main, ["import", "--data", data, str(src)])
    r = CliRunner().invoke(main, ["stats", "--data", data, "--json"])
    rows = orjson.loads(r.stdout)
    support = next(x for x in rows if x["use_case"] == "support")
    assert (support["rows"], support["files"]) == (15, 3)
    r = CliRunner().invoke(main, ["compact", "--data", data])
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0] == "deleted rows removed from the files: none"
    line = r.stdout.splitlines()[1]
    assert line.startswith("interactions: 6 files → 2 in 2 partitions (") and " KB → " in line
    r = CliRunner().invoke(main, ["vacuum", "--data", data, "--retention-hours", "0"])
    assert r.exit_code == 1
    # It says how to go below the minimum, not only that it refuses.
    assert r.stderr.strip().endswith("add --force: istore vacuum --retention-hours 0 --force"), (
        r.stderr
    )
    assert "under the 1-hour minimum" in r.stderr
    r = CliRunner().invoke(main, ["vacuum", "--data", data, "--retention-hours", "-1"])
    assert r.exit_code == 1 and "got -1" in r.stderr
    r = CliRunner().invoke(main, ["vacuum", "--data", data, "--retention-hours", "0", "--force"])
    assert r.exit_code == 0, r.output
    assert "interactions: deleted 6 files" in r.stdout.splitlines()  # the compacted-away ones
    r = CliRunner().invoke(main, ["vacuum", "--data", data, "--dry-run"])
    assert r.stdout.splitlines()[0] == "interactions: would delete 0 files"
    with store.open(data) as s:
        assert s.sql("SELECT count(*) AS n FROM interactions")["n"][0] == 30


def test_python_api(tmp_path: Path) -> None:
    src, data = _file(tmp_path), str(tmp_path / "data")
    CliRunner().invoke(main, ["import", "--data", data, str(src)])
    with store.open(data) as s:
        df = s.sql("SELECT id FROM interactions WHERE use_case = 'billing'")
        assert isinstance(df, pl.DataFrame) and df.height == 10
        lf = s.interactions(use_case="support", label="project:RAG Bot")
        assert isinstance(lf, pl.LazyFrame)
        assert lf.collect().height == 10
        assert s.interactions(label="project:Other").collect().height == 0


def test_serve_refuses_non_loopback_without_keys(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["serve", "--data", str(tmp_path / "d"), "--host", "0.0.0.0"])
    assert r.exit_code == 2
    assert "no API key is configured" in r.stderr and "--insecure-no-auth" in r.stderr


def test_workers_auto_is_one_per_usable_core(monkeypatch: Any) -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings(workers="auto").workers == min(cores, 64)
    monkeypatch.setenv("ISTORE_WORKERS", "auto")
    assert Settings().workers == min(cores, 64)
    monkeypatch.delenv("ISTORE_WORKERS")
    assert Settings().workers == 1  # the default: one process (docs/operations.md, why)


def test_serve_workers_takes_a_count_or_auto(tmp_path: Path) -> None:
    for bad in ("0", "65", "many"):
        r = CliRunner().invoke(main, ["serve", "--data", str(tmp_path / "d"), "--workers", bad])
        assert r.exit_code == 2, (bad, r.output)
        assert "--workers" in r.stderr, r.stderr
