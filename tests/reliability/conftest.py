"""The emulator process the crash tests share (its own process, so kills cannot touch it), and the
CLI runs over one job file they drive against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .crashes import CrashRun, EmulatorProcess, write_job_file
from .test_crash_resume import CONCURRENCY, EMULATOR_OPTIONS, JOBS

# A test module may set its own EMULATOR_OPTIONS, JOBS and CONCURRENCY; else test_crash_resume's.


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    # Leaving the block checks that it shuts down cleanly (status 0), parked requests and all.
    options = getattr(request.module, "EMULATOR_OPTIONS", EMULATOR_OPTIONS)
    with EmulatorProcess(*options) as process:
        yield process


@pytest.fixture
def crash_run(
    emulator: EmulatorProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> CrashRun:
    jobs = getattr(request.module, "JOBS", JOBS)
    concurrency = getattr(request.module, "CONCURRENCY", CONCURRENCY)
    jobs_file = write_job_file(tmp_path / "jobs", jobs)
    return CrashRun(emulator, jobs_file, tmp_path / "out", tmp_path / "logs", jobs, concurrency)
