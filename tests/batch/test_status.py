"""``read_status``: where the run of an output folder stands, from its journal and results alone,
in each state a folder can be in, and safely while a run holds it."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import anyio
import anyio.to_thread

from novita_async import NovitaClient
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    JobError,
    JobOutcome,
    JobStatus,
    RunStatus,
    read_status,
    repair_journal,
)
from novita_async.batch._journal import JOURNAL_NAME, Journal
from novita_async.batch._outputs import OutputLock
from novita_async.emulator import Emulator

from .conftest import make_job
from .test_resume import submitted_then_cancel

UNKNOWN = JobError("SubmitOutcomeUnknownError", "SUBMIT_OUTCOME_UNKNOWN", "no answer")
EXHAUSTED = JobError("RetriesExhaustedError", "RETRIES_EXHAUSTED", "gave up")
TASK_FAILED = JobError("TaskFailedError", "TASK_FAILED", "the task failed")


def folder_state(out: Path) -> dict[str, bytes]:
    """Every file of ``out`` and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_a_folder_where_nothing_ran_has_no_journal_and_no_jobs(tmp_path: Path) -> None:
    for out in (tmp_path / "never-made", tmp_path):
        status = read_status(out)
        assert status == RunStatus(
            out_dir=out, journal_path=out / JOURNAL_NAME, journal_found=False, in_use=False
        )
        assert (status.jobs, status.last_run, status.results_listed) == (0, None, None)
    assert list(tmp_path.iterdir()) == []  # nothing created: no journal, no reserve, no lock


async def test_a_finished_run_with_failures_by_reason(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [
        make_job("two", images(1), images(2), image_num=2),
        make_job("one", images(1), images(3)),
        make_job("bad", images(2), images(3), "[[fail]]"),  # its task fails
        make_job("../up", images(1), images(2)),  # refused before anything is sent
        make_job("also", images(2), images(2)),
    ]
    # The journal stamps its records in milliseconds: the bounds are rounded outwards to match.
    before = math.floor(time.time() * 1000) / 1000
    summary = await BatchRunner(client, out).run_all(jobs)
    after = math.ceil(time.time() * 1000) / 1000

    status = read_status(out, job_ids=[job.id for job in jobs] + ["never"])
    assert (status.jobs, status.succeeded, status.failed) == (5, 3, 2)
    assert status.failures_by_reason == summary.failures_by_reason
    assert status.failures_by_reason == {"INVALID_JOB_ID": 1, "TASK_FAILED": 1}
    assert (status.unfinished, status.unanswered, status.unknown_outcome, status.retryable) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert status.never_submitted == 1  # "never" only: every job of the run is known
    assert (status.images, status.images_missing) == (4, 0) == (summary.images, 0)
    assert status.results_listed == 5
    assert status.journal_found and not status.in_use and status.damaged_lines == ()
    assert status.last_run is not None and status.last_run.tzinfo is UTC
    assert before <= status.last_run.timestamp() <= after

    (out / "two_1.png").unlink()
    assert (read_status(out).images, read_status(out).images_missing) == (3, 1)


async def test_a_run_left_early_has_jobs_submitted_and_not_ended(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(n), images(9)) for n in range(6)]
    emu.faults.hold("result")  # no task can end: the run is left with four in flight
    await submitted_then_cancel(BatchRunner(client, out, BatchOptions(concurrency=4)), jobs, 4, [])
    emu.faults.release("result")

    status = read_status(out, job_ids=(job.id for job in jobs))
    assert (status.jobs, status.unfinished, status.succeeded, status.failed) == (4, 4, 0, 0)
    assert (status.never_submitted, status.unknown_outcome, status.images) == (2, 0, 0)
    assert not status.in_use

    await BatchRunner(client, out).run_all(jobs)
    finished = read_status(out, job_ids=(job.id for job in jobs))
    assert (finished.jobs, finished.succeeded, finished.unfinished) == (6, 6, 0)
    assert (finished.never_submitted, finished.images) == (0, 6)


def test_each_state_a_job_can_be_in_is_counted_once(tmp_path: Path) -> None:
    out = tmp_path
    (out / "ok_0.png").write_bytes(b"an image")
    with Journal(out / JOURNAL_NAME) as journal:
        journal.record_submitting("ok", "f1")
        journal.record_submitted("ok", "t-ok", "f1")
        journal.record_outcome(
            JobOutcome("ok", JobStatus.SUCCEEDED, "t-ok", files=("ok_0.png", "ok_1.png")), "f1"
        )
        journal.record_submitting("intent", "f2")  # the POST's answer was never recorded
        journal.record_submitting("following", "f3")
        journal.record_submitted("following", "t-following", "f3")
        journal.record_outcome(JobOutcome("lost", JobStatus.FAILED, error=UNKNOWN), None)
        journal.record_outcome(JobOutcome("flaky", JobStatus.FAILED, error=EXHAUSTED), None)
        journal.record_outcome(JobOutcome("own", JobStatus.FAILED, error=TASK_FAILED), None)
        journal.record_submitting("refused", "f4")
        journal.record_not_submitted("refused")  # no task: as if never tried
        # Failed before and sent again: where it stands is its intent, not its old failure.
        journal.record_outcome(JobOutcome("again", JobStatus.FAILED, error=TASK_FAILED), None)
        journal.record_submitting("again", "f5")
    (out / JOURNAL_NAME).with_name(JOURNAL_NAME + ".reserve").unlink()

    status = read_status(out, job_ids=["ok", "refused", "new"])
    # "ok" was recorded succeeded, but one of its images is gone: not counted succeeded.
    assert (status.jobs, status.succeeded, status.outputs_missing, status.failed) == (7, 0, 1, 3)
    assert status.failures_by_reason == {
        "RETRIES_EXHAUSTED": 1, "SUBMIT_OUTCOME_UNKNOWN": 1, "TASK_FAILED": 1,
    }  # fmt: skip
    assert (status.unfinished, status.unanswered) == (1, 2)
    assert status.jobs == (
        status.succeeded
        + status.outputs_missing
        + status.failed
        + status.unfinished
        + status.unanswered
    )
    assert (status.unknown_outcome, status.retryable) == (3, 1)
    assert status.never_submitted == 2  # "refused" and "new"
    assert (status.images, status.images_missing) == (1, 1)
    assert status.results_listed is None


async def test_a_run_holding_the_folder_is_seen_and_left_undisturbed(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(n), images(9)) for n in range(3)]
    emu.faults.hold("result")
    submitted: list[str] = []
    all_submitted = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUBMITTED:
            submitted.append(event.job_id)
            if len(submitted) == len(jobs):
                all_submitted.set()

    async with anyio.create_task_group() as tg:
        runner = BatchRunner(client, out, BatchOptions(concurrency=3), on_event=on_event)
        tg.start_soon(runner.run_all, jobs)
        # Every answer recorded (the emulator counting a POST comes before the run records
        # its answer): the run writes nothing more until a poll is answered.
        await all_submitted.wait()
        # The first polls held: two scouts' (the third task waits for their answers).
        await emu.wait_in_flight("result", 2)
        files = folder_state(out)
        status = await anyio.to_thread.run_sync(read_status, out)
        assert status.in_use and (status.jobs, status.unfinished) == (3, 3)
        assert folder_state(out) == files  # nothing written, no reserve or lock file made
        emu.faults.release("result")
    assert not read_status(out).in_use
    assert read_status(out).succeeded == 3


def test_a_lock_on_the_folder_or_on_the_journal_means_a_run_holds_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "journals" / "run.jsonl"
    lock = OutputLock(tmp_path)
    lock.acquire()
    try:
        assert read_status(tmp_path, elsewhere).in_use
    finally:
        lock.release()
    assert not read_status(tmp_path, elsewhere).in_use
    with Journal(elsewhere):  # an older run locks only its journal
        assert read_status(tmp_path, elsewhere).in_use
    status = read_status(tmp_path, elsewhere)
    assert not status.in_use and status.journal_found and status.journal_path == elsewhere
    # Asking took no lock that stays: a run can take the folder right after.
    lock.acquire()
    lock.release()


def test_a_damaged_journal_is_reported_with_what_its_good_lines_say(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        for job_id in ("a", "b", "c", "d"):
            journal.record_outcome(JobOutcome(job_id, JobStatus.FAILED, error=TASK_FAILED), None)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"garbage\n"
    lines[2] = bytes(len(lines[2]) - 1) + b"\n"  # zero bytes, as a crashed file system leaves
    path.write_bytes(b"".join(lines))

    status = read_status(tmp_path)
    assert status.damaged_lines == (2, 3)
    assert (status.jobs, status.failed) == (2, 2)
    assert path.read_bytes() == b"".join(lines)  # reported, not repaired

    repair_journal(path)
    assert read_status(tmp_path).damaged_lines == ()


def test_a_torn_last_line_is_a_crash_not_damage(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        journal.record_submitting("a", None)
    with path.open("ab") as torn:
        torn.write(b'{"type":"submitted","id":"a","task')  # what a run writing right now leaves
    status = read_status(tmp_path)
    assert (status.damaged_lines, status.unanswered) == ((), 1)
    assert os.path.getsize(path) > 0
