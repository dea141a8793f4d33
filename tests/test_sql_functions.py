"""The function allow-list of user SQL is complete, current and consistent: every
function the installed DuckDB offers has been reviewed (allowed or refused), no listed
name is stale, and every allowed built-in macro expands only into allowed functions."""

from __future__ import annotations

import duckdb
import pytest

from store import sql_functions as sf
from store.errors import InvalidQuery
from store.sandbox import check_tables

EXPRESSION_KINDS = ("scalar", "aggregate", "window", "macro")


@pytest.fixture(scope="module")
def db() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()  # a fresh database: DuckDB's functions only, not our macros


def _names(db: duckdb.DuckDBPyConnection, *kinds: str) -> set[str]:
    marks = ", ".join("?" for _ in kinds)
    sql = f"SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN ({marks})"
    return {r[0].lower() for r in db.execute(sql, list(kinds)).fetchall()}


def _reviewed(name: str) -> bool:
    return sf.allowed_function(name) or name in sf.REFUSED or name.startswith(sf.INTERNAL_PREFIX)


def test_every_duckdb_function_was_reviewed(db: duckdb.DuckDBPyConnection) -> None:
    """Fails after a DuckDB upgrade that adds functions: read them, then add each to
    SCALAR/AGGREGATE/WINDOW/MACRO (computes on its arguments only) or to REFUSED."""
    unreviewed = sorted(n for n in _names(db, *EXPRESSION_KINDS) if not _reviewed(n))
    assert not unreviewed, (
        f"DuckDB {duckdb.__version__} has functions store/sql_functions.py does not list "
        f"(reviewed against {sf.REVIEWED_DUCKDB}): {unreviewed}"
    )


def test_no_listed_name_is_stale(db: duckdb.DuckDBPyConnection) -> None:
    known = _names(db, *EXPRESSION_KINDS)
    listed = sf.SCALAR | sf.AGGREGATE | sf.WINDOW | sf.MACRO | set(sf.REFUSED)
    assert sorted(listed - known) == []
    assert sf.TABLE <= _names(db, "table")


def test_allowed_and_refused_do_not_overlap() -> None:
    assert sorted(sf.FUNCTIONS & set(sf.REFUSED)) == []
    for name in sf.REFUSED:
        assert not sf.allowed_function(name), name


def test_allowed_macros_expand_into_allowed_functions(db: duckdb.DuckDBPyConnection) -> None:
    """A macro is text DuckDB pastes in at bind time, out of the checker's sight: an
    allowed one must call nothing the checker would refuse (``pg_get_viewdef`` expands
    into ``duckdb_views()``, so it is refused)."""
    rows = db.execute(
        "SELECT function_name, macro_definition FROM duckdb_functions() "
        "WHERE function_type = 'macro' AND macro_definition IS NOT NULL"
    ).fetchall()
    checked = 0
    for name, definition in rows:
        if name.lower() not in sf.MACRO:
            continue
        check_tables(db, f"SELECT {definition}", [])  # raises on a refused call or table
        checked += 1
    assert checked >= len(sf.MACRO)  # some macros have several overloads


@pytest.mark.parametrize("name", ["pg_get_viewdef", "get_block_size", "format_type",
                                  "current_database", "pg_get_constraintdef"])  # fmt: skip
def test_refused_macros_do_reach_outside(db: duckdb.DuckDBPyConnection, name: str) -> None:
    """The refusals are not arbitrary: these macros' definitions are refused too."""
    (definition,) = db.execute(
        "SELECT any_value(macro_definition) FROM duckdb_functions() WHERE function_name = ?",
        [name],
    ).fetchone() or (None,)
    assert definition
    with pytest.raises(InvalidQuery):
        check_tables(db, f"SELECT {definition}", [])


def test_allowed_functions_have_no_side_effects_beyond_randomness(
    db: duckdb.DuckDBPyConnection,
) -> None:
    rows = db.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE has_side_effects"
    ).fetchall()
    effects = {r[0].lower() for r in rows if sf.allowed_function(r[0])}
    assert effects <= {"random", "setseed", "uuid", "uuidv4", "uuidv7", "gen_random_uuid",
                       "error"}  # fmt: skip
