"""Fixtures of the emulator tests: a fast emulator and a client session over real loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from novita_async.emulator import Emulator, EmulatorConfig


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=7, task_base_seconds=0)) as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
