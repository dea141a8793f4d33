"""Where the tables live: a local folder, or object storage (``s3://``, ``gs://``,
``az://``) through the storage layers of ``deltalake`` (writes, the Delta log) and
``pyarrow`` (reads by DuckDB, which has no object-store extension offline).

Credentials and endpoints come from the usual environment variables of each cloud
(see ``docs/scaling.md``); nothing here is ever logged.

Commits to S3 are made safe for many writers by conditional writes
(``If-None-Match``, ``conditional_put = etag``), which AWS S3, MinIO, Cloudflare R2
and the S3 emulators support; GCS and Azure have their own put-if-absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from deltalake import DeltaTable

from store.errors import StoreError

REMOTE_SCHEMES = ("s3", "gs", "az")
# Azurite's public development account (documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}


@dataclass(frozen=True)
class Location:
    """The data root: ``uri`` is an absolute local path, or ``scheme://bucket/prefix``."""

    uri: str
    scheme: str = "file"
    storage_options: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: str | Path) -> Location:
        text = str(data)
        scheme, sep, rest = text.partition("://")
        if not sep:
            return cls(str(Path(text).absolute()))
        scheme = _ALIASES.get(scheme.lower(), scheme.lower())
        if scheme == "file":
            return cls(str(Path(rest).absolute()))
        if scheme not in REMOTE_SCHEMES:
            raise StoreError(
                f"data root {text!r}: unsupported scheme {scheme!r}; use a local path, "
                "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )
        rest = rest.strip("/")
        if not rest or rest.startswith("."):
            raise StoreError(f"data root {text!r}: name a bucket (and optionally a prefix)")
        return cls(f"{scheme}://{rest}", scheme, _storage_options(scheme))

    @property
    def remote(self) -> bool:
        return self.scheme != "file"

    @property
    def path(self) -> Path:
        """The local folder (local data roots only)."""
        if self.remote:
            raise StoreError(f"{self.uri} is not a local folder")
        return Path(self.uri)

    def table(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def file(self, table: str, relative: str) -> str:
        """The full path of a data file named by a Delta add action (URL-encoded)."""
        return f"{self.uri}/{table}/{unquote(relative)}"

    def read(self, table: str, relative: str) -> bytes:
        """The bytes of a file under a table (e.g. ``_delta_log/<version>.json``)."""
        if not self.remote:
            return (Path(self.uri) / table / relative).read_bytes()
        fs = _arrow_filesystem(self.scheme, self.storage_options)
        with fs.open_input_stream(f"{self.uri.split('://', 1)[1]}/{table}/{relative}") as f:
            return bytes(f.read())

    def exists(self) -> bool:
        if self.remote:
            return True  # a bucket without tables is an empty store
        return Path(self.uri).exists()

    def is_table(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.table(name), storage_options=self.options())

    def open(self, name: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.table(name), version=version, storage_options=self.options())

    def open_if_exists(self, name: str) -> DeltaTable | None:
        return self.open(name) if self.is_table(name) else None

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.remote else None

    def duckdb_filesystem(self) -> Any:
        """An fsspec file system DuckDB can register, reading this bucket through
        pyarrow (None for local roots)."""
        if not self.remote:
            return None
        from fsspec.implementations.arrow import ArrowFSWrapper

        wrapper = type(f"Istore{self.scheme.upper()}FS", (ArrowFSWrapper,), {
            "protocol": self.scheme,
            "_strip_protocol": classmethod(_strip_scheme),
        })  # fmt: skip
        return wrapper(_arrow_filesystem(self.scheme, self.storage_options))


def _strip_scheme(_cls: type, path: Any) -> Any:
    """``scheme://bucket/key`` → ``bucket/key``, what pyarrow's file systems take
    (fsspec's default would take an ``az://`` container for a host name)."""
    if isinstance(path, list):
        return [_strip_scheme(_cls, p) for p in path]
    text = str(path)
    return (text.split("://", 1)[1] if "://" in text else text).rstrip("/")


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


def _storage_options(scheme: str) -> dict[str, str]:
    """deltalake storage options from the environment (the same variables the
    official cloud SDKs read)."""
    opts: dict[str, str] = {}
    if scheme == "s3":
        for key, names in {
            "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID",),
            "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY",),
            "AWS_SESSION_TOKEN": ("AWS_SESSION_TOKEN",),
            "AWS_REGION": ("AWS_REGION", "AWS_DEFAULT_REGION"),
            "AWS_ENDPOINT_URL": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        }.items():
            v = _env(*names)
            if v:
                opts[key] = v
        opts.setdefault("AWS_REGION", "us-east-1")
        if opts.get("AWS_ENDPOINT_URL", "").startswith("http://") or _env("AWS_ALLOW_HTTP"):
            opts["AWS_ALLOW_HTTP"] = "true"
        # Many writers commit safely only with put-if-absent on the commit files.
        opts["conditional_put"] = os.environ.get("ISTORE_S3_CONDITIONAL_PUT", "etag")
    elif scheme == "gs":
        v = _env("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT")
        if v:
            opts["google_service_account"] = v
    elif scheme == "az":
        if _env("AZURE_STORAGE_USE_EMULATOR") in ("1", "true", "True"):
            # Azurite (its URL in AZURITE_BLOB_STORAGE_URL, default 127.0.0.1:10000),
            # with its well-known development account unless others are given.
            opts["azure_storage_use_emulator"] = "true"
            opts["azure_storage_allow_http"] = "true"
        for key, names in {
            "azure_storage_account_name": ("AZURE_STORAGE_ACCOUNT_NAME",),
            "azure_storage_account_key": ("AZURE_STORAGE_ACCOUNT_KEY",),
            "azure_storage_sas_token": ("AZURE_STORAGE_SAS_TOKEN",),
        }.items():
            v = _env(*names)
            if v:
                opts[key] = v
    return opts


def _arrow_filesystem(scheme: str, opts: dict[str, str]) -> Any:
    import pyarrow.fs as pafs

    if scheme == "s3":
        endpoint = opts.get("AWS_ENDPOINT_URL")
        kw: dict[str, Any] = {"region": opts.get("AWS_REGION")}
        if endpoint:
            proto, _, host = endpoint.partition("://")
            kw["endpoint_override"] = host.rstrip("/") if host else endpoint
            kw["scheme"] = proto if host else "https"
        if opts.get("AWS_ACCESS_KEY_ID"):
            kw["access_key"] = opts["AWS_ACCESS_KEY_ID"]
            kw["secret_key"] = opts.get("AWS_SECRET_ACCESS_KEY")
            kw["session_token"] = opts.get("AWS_SESSION_TOKEN")
        return pafs.S3FileSystem(**kw)
    if scheme == "gs":
        return pafs.GcsFileSystem()
    if opts.get("azure_storage_use_emulator") == "true":
        url = os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000")
        scheme_, _, authority = url.rstrip("/").partition("://")
        return pafs.AzureFileSystem(
            account_name=opts.get("azure_storage_account_name", AZURITE_ACCOUNT),
            account_key=opts.get("azure_storage_account_key", AZURITE_KEY),
            blob_storage_authority=authority,
            blob_storage_scheme=scheme_,
            dfs_storage_authority=authority,
            dfs_storage_scheme=scheme_,
        )
    return pafs.AzureFileSystem(
        account_name=opts.get("azure_storage_account_name", ""),
        account_key=opts.get("azure_storage_account_key"),
        sas_token=opts.get("azure_storage_sas_token"),
    )
