"""The in-memory tail: acknowledged rows of one table that are not in Delta yet.

Every acknowledged write is appended here (in log order) the moment the write-ahead log
has it on disk, so reads see it at once; the flusher takes entries from the front once
they are committed. Rows stay in the JSON-native column form the log carries
(``store.rows``); their Arrow form is built lazily, in bulk, by whoever needs it first
(a read, the flush). Callers hold the store lock around every change of a ``Tail``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from store.rows import Columns, num_rows, to_arrow
from store.schema import TableSpec

# What a conversion to Arrow raises for rows it cannot store (validation should make
# that impossible; such an entry is quarantined instead of blocking every read).
CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError, KeyError)


@dataclass(eq=False)
class Entry:
    """One acknowledged write: its log sequence number and rows."""

    lsn: int
    cols: Columns
    nrows: int
    nbytes: int
    table: pa.Table | None = None  # the Arrow form, once made
    quarantined: bool = False


@dataclass
class Tail:
    """Acknowledged rows of one table that are not yet in Delta, in LSN order."""

    entries: list[Entry] = field(default_factory=list)
    nbytes: int = 0
    nrows: int = 0
    cached: pa.Table | None = None  # all entries as one Arrow table, once made

    def append(self, lsn: int, cols: Columns, nbytes: int) -> Entry:
        entry = Entry(lsn, cols, num_rows(cols), nbytes)
        self.entries.append(entry)
        self.nbytes += nbytes
        self.nrows += entry.nrows
        self.cached = None
        return entry

    def remove(self, entry: Entry) -> bool:
        if entry not in self.entries:
            return False
        self.entries.remove(entry)
        self.nbytes -= entry.nbytes
        self.nrows -= entry.nrows
        self.cached = None
        return True

    def trim(self, upto: int) -> list[Entry]:
        """Take the entries up to log position ``upto`` (committed) off the front."""
        k = 0
        while k < len(self.entries) and self.entries[k].lsn <= upto:
            k += 1
        taken, self.entries = self.entries[:k], self.entries[k:]
        for e in taken:
            self.nbytes -= e.nbytes
            self.nrows -= e.nrows
        self.cached = None
        return taken


def convert(spec: TableSpec, todo: list[Entry]) -> None:
    """Give each entry of ``todo`` its Arrow form (one conversion for all of them)."""
    table = to_arrow(spec.schema, [e.cols for e in todo])
    offset = 0
    for e in todo:
        e.table = table.slice(offset, e.nrows)
        offset += e.nrows
