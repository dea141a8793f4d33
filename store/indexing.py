"""Keeping the on-disk index (``store.index``) in step with the store's views.

The store calls ``follow(fv, new)`` before a new interactions view becomes current (a
flush, a delete's rewrite, a refresh), ``settle()`` once it is, and ``amended(...)`` for
flushed label changes. Files nobody indexed yet (a first start on an existing table, a
failure) are picked up by a builder thread, a few at a time, while reads scan them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from store.duck import Duck, FilesView, Snapshot
from store.index import FILE, Index
from store.schema import AMENDMENTS_TABLE, INTERACTIONS_TABLE, TableSpec

log = logging.getLogger("istore.index")


def open_index(folder: Path, table_uri: str, *, writable: bool) -> Index | None:
    """The node's index: a writer makes it; a read-only handle uses one a writer made,
    else scans."""
    if writable:
        return Index(folder, table_uri)
    if not (folder / FILE).exists():
        return None
    try:
        return Index(folder, table_uri, readonly=True)
    except Exception as exc:  # an index being made, or none usable: scan instead
        log.info("reading without the index (%s)", exc)
        return None


class IndexKeeper:
    def __init__(
        self,
        index: Index,
        duck: Duck,
        current: Callable[[TableSpec], FilesView],
        stop: threading.Event,
    ) -> None:
        self.index = index
        self.duck = duck
        self._views = current  # the view of a table the store reads now
        self.stop = stop
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None

    def current(self) -> FilesView:
        return self._views(INTERACTIONS_TABLE)

    def read(self, sql: str, paths: list[str]) -> pa.Table:
        """Run one of the index's queries over some interactions data files."""
        scan = self.duck.scan_sql(INTERACTIONS_TABLE, paths, filename=True, row_number=True)
        return self.duck.query(Snapshot({}), sql.format(scan=scan))

    def follow(self, fv: FilesView, new: list[str], *, rewritten: bool = True) -> None:
        """Before ``fv`` becomes the current view: retire what left the table, index
        ``new`` files (a flush's, a compaction's, another writer's). Rows that moved
        (``rewritten``: a compaction, a purge) keep the labels amendments gave them."""
        try:
            self.index.retire(f.path for f in fv.files)
            if new:
                self._add(new, rewritten)
        except Exception as exc:  # the files stay unindexed: reads scan them meanwhile
            log.error("could not index %d new data files (will retry): %s", len(new), exc)

    def ahead(self, paths: list[str]) -> None:
        """Index ``paths`` (a maintenance rewrite's files) before the view naming them
        is installed, so that ``follow`` then finds them indexed and the flush lock
        it runs under is held for a moment only. Nothing is retired here: that needs
        the view, which only ``follow`` knows."""
        if not paths:
            return
        try:
            self._add(paths, True)
        except Exception as exc:  # ``follow`` and the builder try again
            log.warning("could not index %d rewritten data files ahead: %s", len(paths), exc)

    def _add(self, paths: list[str], rewritten: bool) -> None:
        fresh = self.index.unindexed(paths)  # those indexed ahead are relabelled already
        if not fresh:
            return
        self.index.add(fresh, self.read)
        if rewritten:
            self._relabel(fresh)

    def _relabel(self, paths: list[str]) -> None:
        """Postings for the amended labels of the rows in ``paths``."""
        amendments = self._views(AMENDMENTS_TABLE)
        if amendments.view is None:
            return
        scan = self.duck.scan_sql(INTERACTIONS_TABLE, paths)
        rows = self.duck.query(
            Snapshot({}),
            f"SELECT completion_id, labels FROM \"{amendments.view}\" WHERE action = 'labels' "
            f"AND completion_id IN (SELECT id FROM {scan})",
        ).to_pylist()
        if rows:
            self.index.add_labels(
                [(r["completion_id"], dict(r["labels"]) if r["labels"] else None) for r in rows]
            )

    def settle(self) -> None:
        """After a view became current: record that the index covers it, or start the
        builder for the files it does not cover."""
        fv = self.current()
        if self.index.unindexed(f.path for f in fv.files):
            self._start_builder()
        elif self.index.version() != fv.version:
            self.index.mark(fv.version)

    def amended(self, amendments: FilesView) -> None:
        """New labels of amended interactions become postings too (see ``Index``): those
        of the amendments files not read yet, once every interaction is indexed (a label
        change names a row the index must know; until then lookups scan)."""
        fv = self.current()
        if self.index.unindexed(f.path for f in fv.files):
            return  # the builder comes back here when it is done
        try:
            done = self.index.amended_files()
            new = [f.path for f in amendments.files if f.path not in done]
            if not new:
                return
            scan = self.duck.scan_sql(AMENDMENTS_TABLE, new)
            rows = self.duck.query(
                Snapshot({}),
                f"SELECT completion_id, labels FROM {scan} WHERE action = 'labels'",
            ).to_pylist()
            self.index.add_labels(
                [(r["completion_id"], dict(r["labels"]) if r["labels"] else None) for r in rows]
            )
            self.index.mark_amended(new)
        except Exception as exc:  # lookups of those labels fall back to scans
            log.error("could not index label amendments: %s", exc)

    def _start_builder(self) -> None:
        with self._lock:
            if self._builder is not None and self._builder.is_alive():
                return
            self._builder = threading.Thread(target=self._build, name="istore-index", daemon=True)
            self._builder.start()

    def _build(self) -> None:
        """Index every data file of the current version, a few at a time (each its own
        transaction), until none is left."""
        while not self.stop.is_set():
            fv = self.current()
            todo = self.index.unindexed(f.path for f in fv.files)
            if not todo:
                if self.current().version == fv.version:
                    self.index.mark(fv.version)
                    log.info("the index covers interactions version %d", fv.version)
                    self.amended(self._views(AMENDMENTS_TABLE))
                    return
                continue
            try:
                self.index.add(todo[:16], self.read, newer=False)
                self._relabel(todo[:16])
            except Exception as exc:  # a file vacuumed meanwhile, a full disk …
                log.warning("index builder: %s (retrying)", exc)
                if self.stop.wait(5):
                    return

    def join(self) -> None:
        if self._builder is not None:
            self._builder.join()

    def status(self) -> dict[str, Any]:
        files = [f.path for f in self.current().files]
        return {**self.index.status(), "waiting": len(self.index.unindexed(files))}
