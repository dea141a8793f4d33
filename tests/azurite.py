"""Azurite (Microsoft's Azure Storage emulator, from npm) on loopback, when it is
installed: ``make test-azure`` installs it into ``.azurite/``; elsewhere the Azure
tests skip. CI machines have Python and make only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def azurite_bin() -> str | None:
    for candidate in (
        os.environ.get("AZURITE_BIN"),
        str(ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def start_azurite(folder: Path, *containers: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start azurite-blob on a free 127.0.0.1 port with ``containers`` created. Returns
    the process (terminate it) and the environment the store and clients need."""
    binary = azurite_bin()
    assert binary is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [
            binary,
            "--silent",
            "--loose",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(folder),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    env = {
        "AZURE_STORAGE_USE_EMULATOR": "true",
        "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{port}",
    }
    fs = filesystem(env)
    for c in containers:
        fs.create_dir(c)
    return proc, env


def filesystem(env: dict[str, str]) -> Any:
    import pyarrow.fs as pafs

    from store.location import AZURITE_ACCOUNT, AZURITE_KEY

    authority = env["AZURITE_BLOB_STORAGE_URL"].split("://", 1)[1]
    return pafs.AzureFileSystem(
        account_name=AZURITE_ACCOUNT,
        account_key=AZURITE_KEY,
        blob_storage_authority=authority,
        blob_storage_scheme="http",
        dfs_storage_authority=authority,
        dfs_storage_scheme="http",
    )


def storage_options() -> dict[str, str]:
    """What a deltalake or Polars reader passes (with AZURITE_BLOB_STORAGE_URL set)."""
    return {"azure_storage_use_emulator": "true", "azure_storage_allow_http": "true"}
