"""Which row groups of a data file hold a label value: the index behind fast lookups.

Parquet statistics cannot prune on a map's values, so a lookup such as
``use_case=support&label=customer_id:c-4242`` would read the labels of every row of
the use case. For each (immutable) data file this keeps, in memory, the sorted
64-bit hashes of its ``key=value`` pairs with the row group each occurs in. A lookup
then reads only the row groups that can match (``file_row_number`` ranges, which
DuckDB turns into row-group skips), or skips the file. Hash collisions only add row
groups; the query's own WHERE still decides, so answers are exact.

Files are indexed in a background thread (new files after each commit); a file not
indexed yet is simply scanned. About 12 bytes per distinct pair per row group."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("istore.index")

_PAIRS_SQL = (
    "SELECT hash(e.key || chr(31) || e.value) AS h, file_row_number AS n FROM ("
    "SELECT unnest(map_entries(labels)) AS e, file_row_number "
    "FROM read_parquet(?, file_row_number = true))"
)

_GROUPS_SQL = (
    "SELECT row_group_id, any_value(row_group_num_rows) FROM parquet_metadata(?) "
    "GROUP BY 1 ORDER BY 1"
)


@dataclass(frozen=True)
class FileIndex:
    hashes: np.ndarray  # uint64, sorted
    groups: np.ndarray  # uint32, the row group of each hash entry
    bounds: np.ndarray  # int64: first row of each row group, then the row count

    def groups_of(self, h: int) -> np.ndarray:
        lo = np.searchsorted(self.hashes, np.uint64(h), "left")
        hi = np.searchsorted(self.hashes, np.uint64(h), "right")
        return self.groups[lo:hi]

    def ranges(self, groups: Iterable[int]) -> list[tuple[int, int]]:
        """Row ranges (first, last) of ``groups``, adjacent groups merged."""
        out: list[tuple[int, int]] = []
        for g in sorted(groups):
            first, last = int(self.bounds[g]), int(self.bounds[g + 1]) - 1
            if out and out[-1][1] + 1 == first:
                out[-1] = (out[-1][0], last)
            else:
                out.append((first, last))
        return out

    @property
    def rows(self) -> int:
        return int(self.bounds[-1])


class LabelIndex:
    def __init__(self, duck: object) -> None:
        self._duck = duck
        self._files: dict[str, FileIndex] = {}
        self._mu = threading.Lock()
        self._todo: list[str] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- building -----------------------------------------------------------------------
    def track(self, paths: Sequence[str]) -> None:
        """The current data files: index the new ones (in the background), forget the
        ones no longer in the table."""
        keep = set(paths)
        with self._mu:
            for p in [p for p in self._files if p not in keep]:
                del self._files[p]
            self._todo = [p for p in paths if p not in self._files]
        if self._todo:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="istore-index", daemon=True)
                self._thread.start()
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(5)
            self._wake.clear()
            while not self._stop.is_set():
                with self._mu:
                    if not self._todo:
                        break
                    path = self._todo.pop()
                try:
                    idx = self.build(path)
                except Exception as exc:  # a vanished (vacuumed) file, or a bad one
                    log.debug("label index: skipping %s: %s", path, exc)
                    continue
                with self._mu:
                    self._files[path] = idx

    def build(self, path: str) -> FileIndex:
        cur = self._duck.raw_cursor()  # type: ignore[attr-defined]
        try:
            # Through DuckDB, which reads local files and object storage alike.
            groups = cur.sql(_GROUPS_SQL, params=[path]).fetchall()
            t = cur.sql(_PAIRS_SQL, params=[[path]]).to_arrow_table()
        finally:
            cur.close()
        sizes = [int(n) for _, n in groups]
        bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        h = t.column("h").to_numpy().astype(np.uint64)
        n = t.column("n").to_numpy().astype(np.int64)
        g = (np.searchsorted(bounds, n, "right") - 1).astype(np.uint32)
        key = np.unique(np.stack([h, g.astype(np.uint64)], axis=1), axis=0)
        return FileIndex(key[:, 0].copy(), key[:, 1].astype(np.uint32), bounds)

    def status(self) -> dict[str, int]:
        with self._mu:
            return {"files_indexed": len(self._files), "files_waiting": len(self._todo)}

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- lookups ------------------------------------------------------------------------
    def get(self, path: str) -> FileIndex | None:
        with self._mu:
            return self._files.get(path)

    def hashes(self, conds: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
        """Per condition (key, any of values): the hashes of its key=value pairs."""
        flat = [f"{k}\x1f{v}" for k, vs in conds for v in vs]
        cur = self._duck.raw_cursor()  # type: ignore[attr-defined]
        try:
            t = cur.sql("SELECT hash(unnest(?)) AS h", params=[flat]).to_arrow_table()
        finally:
            cur.close()
        hs = [int(x) for x in t.column("h").to_pylist()]
        out, i = [], 0
        for _, vs in conds:
            out.append(hs[i : i + len(vs)])
            i += len(vs)
        return out

    def candidates(self, path: str, hashes: list[list[int]]) -> list[tuple[int, int]] | None:
        """Row ranges of ``path`` that may match every condition; [] when none can;
        None when the file is not indexed (scan it all)."""
        idx = self.get(path)
        if idx is None:
            return None
        groups: set[int] | None = None
        for cond in hashes:
            hit: set[int] = set()
            for h in cond:
                hit.update(int(x) for x in idx.groups_of(h))
            groups = hit if groups is None else groups & hit
            if not groups:
                return []
        if groups is None or len(groups) == len(idx.bounds) - 1:
            return None  # every row group: no restriction
        return idx.ranges(groups)
