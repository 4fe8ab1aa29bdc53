"""SIGINT while submissions go unanswered: the graceful stop waits for them, but not for ever.

A stopping run shields each POST in flight so that it reads the answer and journals the task id.
When no answer comes (a stalled API, a gateway answering 5xx slowly), the stop must still end: it
gives up after a bounded grace and records each abandoned job as ``SUBMIT_OUTCOME_UNKNOWN``, so a
rerun does not submit it again unless told to (``--retry-failed``).
"""

from __future__ import annotations

import signal
from pathlib import Path

from .crashes import (
    SUBMIT_SLOTS,
    CrashRun,
    EmulatorProcess,
    Freeze,
    journal_records,
    watch,
    write_job_file,
)
from .test_crash_resume import JOBS, assert_complete

# Words of the error the stop records for a POST it abandoned (the proposed patch's wording);
# the client's read timeout says "timed out waiting for the answer" instead.
ABANDONED = "the run stopped before"


def test_sigint_with_posts_parked_stops_after_a_bounded_grace(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    run = CrashRun(
        emulator,
        write_job_file(tmp_path / "jobs", JOBS),
        tmp_path / "out",
        tmp_path / "logs",
        JOBS,
        10,
    )
    freeze = Freeze(emulator, ("submit", "result", "image"))
    freeze.start(JOBS)  # before the run: every POST it sends is parked, never answered
    process = run.start("--stop-grace", "1")  # a short grace: the test waits it out
    try:
        # Every permit to POST is taken by a parked submission: the stop has to deal with them.
        assert watch(process, lambda: freeze.parked()["submit"] == SUBMIT_SLOTS, 30, "8 POSTs")
        process.send_signal(signal.SIGINT)
    finally:
        code = run.finish(process)
        emulator.clear_faults()
    assert code == 130

    failed = [r for r in journal_records(run.out) if r.get("type") == "failed"]
    assert len(failed) == SUBMIT_SLOTS
    for record in failed:
        assert record["error"]["reason"] == "SUBMIT_OUTCOME_UNKNOWN"
        assert ABANDONED in record["error"]["message"]
        assert record["task_id"] is None
    assert emulator.stats()["submissions"] == 0  # a parked POST never creates a task

    # They are not submitted again unasked; with --retry-failed, each exactly once.
    assert run.run_to_end() == 1
    assert emulator.stats()["submissions"] == JOBS - SUBMIT_SLOTS
    assert run.run_to_end("--retry-failed") == 0
    assert_complete(run)
