"""Shared test configuration: anyio on asyncio (aiohttp is asyncio-only), shared fixtures."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def exited_pid() -> int:
    """The pid of a process that has exited (so no process has it, barring reuse): what a run
    killed mid-download leaves in its temporary file names."""
    code = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return int(child.stdout)
