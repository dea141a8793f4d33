"""The public Python surface is small and deliberate (httpx's test of the same name)."""

import store


def test_store_exports() -> None:
    exported = {name for name in dir(store) if not name.startswith("_")}
    expected = set(store.__all__)
    modules = {
        "ack", "delta", "duck", "engine", "errors", "export", "files", "filters", "guard", "ids",
        "index", "indexing", "jsonutil", "lifecycle", "location", "metrics", "maintenance",
        "output", "reader", "rows", "sandbox", "schema", "sql_functions", "state", "stats",
        "tail", "version", "wal",
    }  # fmt: skip
    assert exported - modules == expected
    assert expected == {
        "InvalidQuery", "InvalidRequest", "NotFound", "PayloadTooLarge", "Reader", "Store",
        "StoreError", "StoreOptions", "Unavailable", "ValidationFailed", "WriteResult", "open",
    }  # fmt: skip
