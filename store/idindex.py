"""Which interaction ids are already stored, for idempotent ingest.

Committed ids are kept as a sorted array of 64-bit hashes (8 bytes an id), ids still
in the write-ahead log as exact strings. A hash hit on a committed id is only a
"maybe": the store confirms it against the table before treating the write as a
duplicate, so a hash collision can never drop a record. The hash is Python's own
string hash: the index is rebuilt when a process opens the store, so it only has to
agree with itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    return np.fromiter((hash(x) for x in ids), dtype=np.int64, count=len(ids))


class IdIndex:
    def __init__(self) -> None:
        self._committed = np.empty(0, dtype=np.int64)
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
        if not ids or not (len(self._committed) or self._recent):
            return []
        out = [x for x in ids if hash(x) in self._recent]
        if len(self._committed):
            hashes = hash_ids(ids)
            pos = np.searchsorted(self._committed, hashes)
            pos[pos >= len(self._committed)] = 0
            hit = self._committed[pos] == hashes
            out.extend(x for x, h in zip(ids, hit, strict=True) if h)
        return out

    def add_pending(self, ids: Iterable[str]) -> None:
        self._pending.update(ids)

    def drop_pending(self, ids: Iterable[str]) -> None:
        self._pending.difference_update(ids)

    def commit(self, ids: Sequence[str]) -> None:
        """Ids that moved from the log into the table."""
        self._pending.difference_update(ids)
        self._recent.update(hash(x) for x in ids)
        if len(self._recent) > 200_000:
            self.load_committed(np.fromiter(self._recent, dtype=np.int64))
            self._recent.clear()
