"""The emulator process the crash tests share (its own process, so kills cannot touch it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .crashes import EmulatorProcess
from .test_crash_resume import EMULATOR_OPTIONS


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(*EMULATOR_OPTIONS)
    try:
        yield process
    finally:
        assert process.close() == 0  # it shuts down cleanly, parked requests and all
