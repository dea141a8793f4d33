"""Synthetic interactions as Arrow tables, vectorised and seeded, for stores too large
to build through the write-ahead log (``bench/query.py``, ``bench/maintenance.py``, the
shutdown test): 10 use cases, 6 models, 30 days, labels ``project`` (5 values),
``topic`` (500) and ``customer_id`` (100,000)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from store.schema import INTERACTIONS, USAGE

USE_CASES = [f"uc-{i}" for i in range(10)]
MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "gpt-4o-mini", "mistral-small", "phi-4"]
PROJECTS = ["helpdesk", "knowledge", "growth", "ops", "legal"]
WORDS = (
    "drill battery invoice refund order shipping warranty torque blade charger "
    "voltage account login password delivery return policy safety glove ladder"
).split()
DAY_US = 86_400_000_000
START_US = 1_790_000_000_000_000 // DAY_US * DAY_US


def _texts(rng: np.random.Generator, n: int, words: int) -> np.ndarray:
    """n short texts from a vocabulary (distinct enough to compress realistically)."""
    pool = np.array([" ".join(rng.choice(WORDS, size=words)) for _ in range(4096)])
    return pool[rng.integers(0, len(pool), n)]


def _arr(x: np.ndarray) -> pa.Array:
    a = pa.array(x.tolist(), pa.string())
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def chunk(rng: np.random.Generator, start: int, n: int) -> pa.Table:
    ids = np.char.add("bq-", np.arange(start, start + n).astype(str))
    created = START_US + rng.integers(0, 30 * DAY_US, n)
    user_text = _texts(rng, n, 12)
    messages = np.char.add(np.char.add('[{"role":"user","content":"', user_text), '"}]')
    projects = np.array(PROJECTS)[rng.integers(0, 5, n)]
    topics = np.char.add("topic-", rng.zipf(1.3, n).clip(1, 500).astype(str))
    customers = np.char.add("cust-", rng.integers(0, 100_000, n).astype(str))
    keys = _arr(np.tile(["project", "topic", "customer_id"], n))
    values = _arr(np.stack([projects, topics, customers], axis=1).reshape(-1))
    labels = pa.MapArray.from_arrays(pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32)),
                                     keys, values)  # fmt: skip
    prompt = rng.integers(20, 2000, n)
    comp = rng.integers(5, 500, n)
    usage = pa.StructArray.from_arrays(
        [pa.array(prompt), pa.array(comp), pa.array(prompt + comp)],
        fields=list(USAGE),
    )
    cols = {
        "id": pa.array(ids),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "use_case": pa.array(np.array(USE_CASES)[rng.integers(0, 10, n)]),
        "model": pa.array(np.array(MODELS)[rng.integers(0, 6, n)]),
        "messages": pa.array(messages),
        "completion": pa.array(_texts(rng, n, 20)),
        "completion_message": pa.nulls(n, pa.string()),
        "labels": labels,
        "session_id": pa.array(np.char.add("s-", rng.integers(0, n // 3 + 1, n).astype(str))),
        "user": pa.array(np.char.add("u-", rng.integers(0, 5000, n).astype(str))),
        "ab_campaign": pa.nulls(n, pa.string()),
        "source": pa.array(np.full(n, "api")),
        "usage": usage,
        "latency_ms": pa.array(rng.lognormal(6.5, 0.6, n)),
        "ttft_ms": pa.array(rng.lognormal(5, 0.5, n)),
        "params": pa.nulls(n, pa.string()),
        "status": pa.array(np.where(rng.random(n) < 0.02, "error", "ok")),
        "error": pa.nulls(n, pa.string()),
        "day": pa.array((created // DAY_US).astype(np.int32), pa.date32()),
    }
    return pa.table(cols).cast(INTERACTIONS)
