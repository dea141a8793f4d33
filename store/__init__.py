"""The storage engine: Delta tables, write-ahead log, snapshots, DuckDB views."""

from store.engine import Store, StoreOptions, WriteResult
from store.errors import (
    InvalidQuery,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StoreError,
    Unavailable,
    ValidationFailed,
)
from store.reader import Reader, open

__all__ = [
    "InvalidQuery",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "Reader",
    "Store",
    "StoreError",
    "StoreOptions",
    "Unavailable",
    "ValidationFailed",
    "WriteResult",
    "open",
]
