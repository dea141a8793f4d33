"""``istore sql`` results as text for a terminal: a table when it fits the terminal's
width, else one block per row (``--format vertical`` asks for that), like psql's
expanded mode. Values read as in the API's JSON (labels as an object, timestamps in
UTC with ``Z``), one line each, cut with "…" where they would not fit.

Written here rather than with polars' table printer: that one prints maps as lists of
pairs, types under every header, and drops the columns that do not fit."""

from __future__ import annotations

import shutil
from typing import Any

import orjson
import pyarrow as pa

from store.output import JSON_OPTIONS, iso_z, rows

MIN_COLUMN = 8  # characters a column keeps in a table before it goes vertical
MAX_CELL = 60  # characters of one value in a table


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = str(value).lower() if isinstance(value, bool) else str(value)
    else:
        text = orjson.dumps(value, default=str, option=JSON_OPTIONS).decode()
        if text.startswith('"'):  # a date or a time: no quotes
            text = text[1:-1]
    return text.replace("\r", "").replace("\n", "⏎")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def cells(table: pa.Table) -> tuple[list[str], list[list[str]]]:
    """Column names and each row's values as text."""
    cols = []
    for col, field in zip(table.columns, table.schema, strict=True):
        cols.append(iso_z(col) if pa.types.is_timestamp(field.type) else col)
    shown = pa.Table.from_arrays(cols, names=table.column_names)
    names = table.column_names
    return names, [[_text(r[n]) for n in names] for r in rows(shown)]


def render(table: pa.Table, *, vertical: bool | None = None, width: int | None = None) -> str:
    """The result as text: a table, or (``vertical``, or when a table would be wider
    than ``width``) a block per row; then the row count."""
    width = width or terminal_width()
    names, data = cells(table)
    n = table.num_rows
    footer = f"{n} row{'s' if n != 1 else ''}\n"
    widths = [
        min(max([len(name)] + [len(r[i]) for r in data]), MAX_CELL) for i, name in enumerate(names)
    ]
    total = sum(widths) + 3 * max(len(names) - 1, 0)
    if vertical is None:
        vertical = total > width and len(names) > 1
    if not vertical:
        fit = widths
        if total > width:  # one column: cut it to the terminal
            fit = [max(MIN_COLUMN, width)]
        head = " | ".join(_cut(name, w).ljust(w) for name, w in zip(names, fit, strict=True))
        lines = [head.rstrip()]
        lines.append("-+-".join("-" * w for w in fit))
        for r in data:
            lines.append(
                " | ".join(_cut(v, w).ljust(w) for v, w in zip(r, fit, strict=True)).rstrip()
            )
        return "\n".join(lines) + "\n" + footer
    label = max((len(x) for x in names), default=0)
    room = max(width - label - 3, MIN_COLUMN)
    out = []
    for i, r in enumerate(data, 1):
        out.append((f"-[ row {i} ]" + "-" * width)[:width])
        for name, value in zip(names, r, strict=True):
            out.append(f"{name.ljust(label)} | {_cut(value, room)}".rstrip())
    return "\n".join(out) + ("\n" if out else "") + footer
