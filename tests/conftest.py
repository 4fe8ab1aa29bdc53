"""Shared test configuration: anyio on asyncio (aiohttp is asyncio-only), shared fixtures.

``emu`` is the emulator on loopback every in-process test uses. Its configuration is the
``emulator_config`` fixture (a test folder's or module's conftest overrides it), plus the fields a
test names with ``@pytest.mark.emulator(task_base_seconds=3600, ...)``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import attrs
import pytest

from novita_async.emulator import Emulator, EmulatorConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator(**fields): EmulatorConfig fields of this test's `emu`"
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, task_base_seconds=0)


@pytest.fixture
async def emu(
    request: pytest.FixtureRequest, emulator_config: EmulatorConfig
) -> AsyncIterator[Emulator]:
    marker = request.node.get_closest_marker("emulator")
    config = emulator_config if marker is None else attrs.evolve(emulator_config, **marker.kwargs)
    async with Emulator(config) as emulator:
        yield emulator


@pytest.fixture
def exited_pid() -> int:
    """The pid of a process that has exited (so no process has it, barring reuse): what a run
    killed mid-download leaves in its temporary file names."""
    code = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return int(child.stdout)
