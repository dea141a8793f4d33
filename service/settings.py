"""All configuration, in one place. Environment variables ``ISTORE_*``; CLI flags override."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.parse import Limits
from store.engine import Store, StoreOptions
from store.errors import StoreError
from store.location import Location
from store.state import SharedState


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISTORE_", extra="ignore")

    data: str = Field(
        "./data",
        description="Data root: a folder (the tables and the write-ahead log), or object "
        "storage: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.",
    )
    wal_dir: str | None = Field(
        None,
        description="This writer's write-ahead log, on local disk (default: <data>/wal). "
        "Required when the data root is object storage; each writer needs its own.",
    )
    state_dir: str | None = Field(
        None,
        description="Local folder for this node's copies of the shared keys.json and "
        "retention.json when the data root is object storage (default: the write-ahead "
        "log folder). The documents themselves live with the data.",
    )
    state_refresh_s: float = Field(
        2.0,
        gt=0,
        description="Object storage: how often a server re-reads the shared keys and "
        "retention rules (a revoked key stops working on every node within this).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes on this host, each with its own log; auto: one per "
        "usable core. More than one weakens idempotency by id and OTLP joins (operations.md).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    allowed_hosts: str = Field(
        "",
        description="Without API keys, the Host names requests may use besides loopback "
        "names and the listen address (a guard against DNS rebinding); comma-separated.",
    )
    gateway_config: str | None = Field(
        None, description="Path of the gateway's model routing file (TOML)."
    )
    max_body_bytes: int = Field(
        32 << 20, description="Largest accepted request body, in bytes (larger: 413)."
    )
    max_batch_items: int = Field(
        10_000, description="Most records in one ingest request (more: 413)."
    )
    max_messages: int = Field(
        2_000, description="Most chat messages in one interaction (more: 422)."
    )
    max_content_chars: int = Field(
        1 << 20,
        description="Most characters in one message's content or one completion (more: 422).",
    )
    flush_interval_s: float = Field(
        1.0, description="How often the write-ahead log is appended to the Delta tables."
    )
    flush_rows: int = Field(
        50_000, description="Flush sooner once this many acknowledged rows are waiting."
    )
    max_pending_bytes: int = Field(
        1 << 30,
        description="Acknowledged-but-unflushed bytes held in memory before ingest answers 503.",
    )
    sql_timeout_s: float = Field(30.0, description="Per-query time limit for SQL.")
    sql_max_rows: int = Field(100_000, description="Most rows one SQL query returns.")
    query_memory_limit: str = Field("2GB", description="DuckDB memory cap for queries.")
    query_temp_limit: str = Field(
        "4GB",
        description="Most disk DuckDB may spill to, in <data>/tmp (or the state folder).",
    )
    sql_max_result_bytes: int = Field(
        256 << 20, description="Largest SQL result, encoded, in bytes (larger: 400)."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: str = Field(
        "json", pattern="^(json|text)$", description="Log lines as JSON objects, or text."
    )
    access_log: bool = Field(
        False, description="Log every HTTP request (method, route, path, status, ms; no query)."
    )
    maintenance_interval_s: float = Field(
        3600.0,
        description="Seconds between maintenance runs (retention, purge of deleted "
        "interactions, compaction, checkpoint, vacuum); 0 turns them off.",
    )
    compaction_interval_s: float = Field(
        60.0,
        description="Seconds between passes of the tiered compaction of small files alone, "
        "between maintenance runs (so reads never meet an hour of one-second files); 0: "
        "compaction only with the maintenance runs.",
    )
    vacuum_retention_hours: float = Field(
        168.0,
        description="Maintenance vacuum keeps replaced files this long (older snapshots, "
        "as_of exports).",
    )
    otlp_join_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="OTLP ingest: how long a call's span and its log records may arrive "
        "apart; a call still missing pieces is written with what came.",
    )
    shutdown_timeout_s: float = Field(
        20.0, description="On SIGTERM, how long in-flight requests may take before exit."
    )

    def limits(self) -> Limits:
        return Limits(self.max_batch_items, self.max_messages, self.max_content_chars)

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        """``auto``: the cores this process may run on (its CPU affinity, which a
        container's cpuset narrows), at most 64."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return usable_cores()
        return value

    def log_folder(self) -> Path:
        """This writer's write-ahead log folder (``--workers``: the workers' parent)."""
        if self.wal_dir:
            return Path(self.wal_dir).absolute()
        location = Location.parse(self.data)
        if location.remote:
            raise StoreError(
                f"the data root {location.uri} is object storage: give the write-ahead log "
                "a local folder (ISTORE_WAL_DIR or --wal-dir)"
            )
        return location.path / "wal"

    def state_folder(self) -> Path:
        """The folder of this node's keys and retention rules."""
        if self.state_dir:
            return Path(self.state_dir).absolute()
        location = Location.parse(self.data)
        return self.log_folder() if location.remote else location.path

    def shared_state(self) -> SharedState:
        """The keys and retention rules of the data root, as this node reaches them
        (its copies in the state folder, when it has one)."""
        try:
            local: Path | None = self.state_folder()
        except StoreError:  # object storage and no log folder: no local copies
            local = None
        return SharedState(Location.parse(self.data), local, refresh_s=self.state_refresh_s)

    def open_store(self, *, writable: bool = True) -> Store:
        return Store(
            self.data,
            writable=writable,
            options=self.store_options(),
            wal_dir=self.wal_dir,
            state_dir=self.state_dir,
        )

    def store_options(self) -> StoreOptions:
        return StoreOptions(
            flush_interval_s=self.flush_interval_s,
            flush_rows=self.flush_rows,
            max_pending_bytes=self.max_pending_bytes,
            query_memory_limit=self.query_memory_limit,
            query_temp_limit=self.query_temp_limit,
            state_refresh_s=self.state_refresh_s,
        )


def usable_cores() -> int:
    return max(1, min(64, len(os.sched_getaffinity(0))))
