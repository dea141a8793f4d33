"""`make bench` at a tiny scale, so the benchmark cannot rot: every contender that is
installed runs every scenario, and the table and the goals come out."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import markdown, run

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only


def test_bench_smoke(tmp_path: Path) -> None:
    res = run("smoke", 2, tmp_path)
    s = res["scenarios"]
    for name in ("batched_ingest_per_s", "freshness_ms", "bytes_per_interaction",
                 "selective_lookup_ms", "group_by_label_p95_ms", "aggregate_day_model_ms",
                 "export_openai_per_s", "server_peak_rss_mb"):  # fmt: skip
        assert name in s, name
    assert s["batched_ingest_per_s"]["us"] > 0 and s["batched_ingest_per_s"]["limit"] > 0
    for q in ("selective_lookup_ms", "group_by_label_p95_ms", "aggregate_day_model_ms"):
        assert s[q]["us"] > 0 and s[q]["duckdb_same_files"] > 0 and s[q]["chdb_same_files"] > 0
    assert res["goals"] and "| goal |" in markdown(res)
