"""The emulator process the crash tests share (its own process, so kills cannot touch it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .crashes import EmulatorProcess
from .test_crash_resume import EMULATOR_OPTIONS


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    # Leaving the block checks that it shuts down cleanly (status 0), parked requests and all.
    with EmulatorProcess(*EMULATOR_OPTIONS) as process:
        yield process
