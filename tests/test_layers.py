"""The layers hold (ARCHITECTURE.md): each package imports only those below it.

    istore (CLI) → api (HTTP) → service (settings, keys, maintenance) → gateway → ingest → store

Checked by import-linter's contract in pyproject.toml, on the real import graph."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_layering_contract_holds() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout, r.stdout
