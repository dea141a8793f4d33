"""The sustained mixed load of `make soak` (bench/soak.py), bounded for CI: ingest,
feedback, lists, stats, SQL and exports together for 20 seconds, without an error."""

from __future__ import annotations

import pytest

from bench.soak import run, table

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only


def test_mixed_load_without_errors() -> None:
    s = run(minutes=20 / 60, rate=100)
    print("\n" + table(s))
    assert s["errors"] == 0, s["first_errors"]
    kinds = {k for row in s["per_minute"] for k in row}
    assert {"ingest_one", "ingest_batch50", "list", "stats", "sql", "export"} <= kinds
    assert s["requests"] > 500
