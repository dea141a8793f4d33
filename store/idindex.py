"""Which interaction ids are already stored, for idempotent ingest.

Committed ids are kept as a sorted array of 64-bit hashes (8 bytes an id), ids still
in the write-ahead log as exact strings. A hash hit on a committed id is only a
"maybe": the store confirms it against the table before treating the write as a
duplicate, so a hash collision can never drop a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    if not ids:
        return np.empty(0, dtype=np.uint64)
    return pl.Series(ids, dtype=pl.String).hash(seed=0x15704E).to_numpy()


class IdIndex:
    def __init__(self) -> None:
        self._committed = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._committed) + len(self._recent) + len(self._pending)

    def load_committed(self, hashes: np.ndarray) -> None:
        self._committed = np.unique(np.concatenate([self._committed, hashes]))

    def pending(self, id_: str) -> bool:
        return id_ in self._pending

    def maybe_committed(self, ids: Sequence[str]) -> list[str]:
        """The ids whose hash is among the committed ones (to be confirmed)."""
        if not ids:
            return []
        hashes = hash_ids(ids)
        out: list[str] = []
        if len(self._committed):
            pos = np.searchsorted(self._committed, hashes)
            pos[pos >= len(self._committed)] = 0
            hit = self._committed[pos] == hashes
        else:
            hit = np.zeros(len(ids), dtype=bool)
        for i, id_ in enumerate(ids):
            if hit[i] or int(hashes[i]) in self._recent:
                out.append(id_)
        return out

    def add_pending(self, ids: Iterable[str]) -> None:
        self._pending.update(ids)

    def drop_pending(self, ids: Iterable[str]) -> None:
        self._pending.difference_update(ids)

    def commit(self, ids: Sequence[str]) -> None:
        """Ids that moved from the log into the table."""
        self._pending.difference_update(ids)
        self._recent.update(int(h) for h in hash_ids(ids))
        if len(self._recent) > 200_000:
            self.load_committed(np.fromiter(self._recent, dtype=np.uint64))
            self._recent.clear()
