"""Events, timeouts, cancellation during a submission, and jobs that failed before they ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from novita_async import ConfigurationError, NovitaClient, PollPolicy, ValidationError
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    InvalidJob,
    Job,
    JobInputError,
)
from novita_async.emulator import Emulator

from .conftest import make_job
from .test_runner import read_results

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

FAST_POLLS = PollPolicy(min_delay=0.02, margin=0.02, initial_delay=0.02, max_delay=0.05)


async def test_events_follow_a_job_through_its_life(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    events: list[BatchEvent] = []
    runner = BatchRunner(client, tmp_path / "out", on_event=events.append)
    jobs = [make_job("long", images(1), images(2), "[[seconds:600]]")]
    with anyio.fail_after(10):
        async with runner.run(jobs):
            # The task takes ten minutes: its first poll must report it running.
            while not any(e.kind is BatchEventKind.RUNNING for e in events):
                await anyio.wait_all_tasks_blocked()
    kinds = [e.kind for e in events]
    assert kinds[:4] == [
        BatchEventKind.QUEUED,
        BatchEventKind.UPLOADED,
        BatchEventKind.SUBMITTED,
        BatchEventKind.RUNNING,
    ]
    submitted, running_event = events[2], events[3]
    assert submitted.task_id is not None and running_event.task_id == submitted.task_id
    assert running_event.eta is not None and running_event.eta > 0
    assert all(emu.api_key not in repr(e) for e in events)


async def test_a_task_timeout_fails_the_job_and_retry_failed_follows_the_same_task(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job("long", images(1), images(2), "[[seconds:600]]")]
    runner = BatchRunner(client, out, BatchOptions(task_timeout=0.1, poll=FAST_POLLS))
    summary = await runner.run_all(jobs)
    assert summary.failures_by_reason == {"TASK_TIMEOUT": 1}
    (row,) = read_results(out)
    assert row["task_id"] is not None

    again = await BatchRunner(
        client, out, BatchOptions(task_timeout=0.1, poll=FAST_POLLS, retry_failed=True)
    ).run_all(jobs)
    assert (again.resumed, again.submitted) == (1, 0)
    assert again.failures_by_reason == {"TASK_TIMEOUT": 1}
    assert emu.stats().submissions == 1
    assert len(read_results(out)) == 1


async def test_cancelling_during_a_submission_still_records_its_task(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job("a", images(1), images(2))]
    emu.faults.hold("submit")
    runner = BatchRunner(client, out)
    run_scope = anyio.CancelScope()

    async def run() -> None:
        with run_scope:
            await runner.run_all(jobs)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while emu.stats().in_flight.get("submit", 0) == 0:
                await anyio.wait_all_tasks_blocked()
            run_scope.cancel()  # the POST has been sent: the task will exist
            await anyio.wait_all_tasks_blocked()
            emu.faults.release("submit")
    assert runner.summary.interrupted
    assert emu.stats().submissions == 1
    journal = (out / ".novita-journal.jsonl").read_text()
    assert '"type":"submitted"' in journal

    summary = await BatchRunner(client, out).run_all(jobs)
    assert (summary.succeeded, summary.resumed, summary.submitted) == (1, 1, 0)
    assert emu.stats().submissions == 1


async def test_at_most_submit_concurrency_posts_are_in_flight(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # What one hard kill can cost in duplicate tasks is bounded by the POSTs in flight.
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(12)]
    emu.faults.hold("submit")
    runner = BatchRunner(
        client, tmp_path / "out", BatchOptions(concurrency=12, submit_concurrency=3)
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run_all, jobs)
            await emu.wait_in_flight("submit", 3)
            await anyio.wait_all_tasks_blocked()
            held = emu.stats().in_flight["submit"]
            emu.faults.release("submit")
    assert held == 3
    assert runner.summary.succeeded == 12 and emu.stats().submissions == 12


async def test_jobs_that_failed_before_running_get_their_result_line(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs: list[Job | InvalidJob] = [
        InvalidJob("line-3", ValidationError("steps", 500, "must be in [1, 100]")),
        make_job("ok", images(1), images(2)),
    ]
    summary = await BatchRunner(client, out).run_all(jobs)
    assert summary.failures_by_reason == {"VALIDATION_ERROR": 1}
    rows = {r["id"]: r for r in read_results(out)}
    assert rows["line-3"]["error"] == {
        "type": "ValidationError",
        "reason": "VALIDATION_ERROR",
        "message": "steps=500 is not allowed: must be in [1, 100]",
    }
    assert rows["ok"]["status"] == "succeeded"


async def test_an_invalid_job_is_journaled_and_a_rerun_replays_it(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    invalid = InvalidJob("bad", JobInputError("INVALID_JOB_LINE", "line 2: not valid JSON"))
    first = await BatchRunner(client, out).run_all([invalid, make_job("ok", images(1), images(2))])
    assert (first.failed, first.succeeded) == (1, 1)
    second = await BatchRunner(client, out).run_all([invalid])
    assert (second.failed, second.replayed) == (1, 1)
    assert emu.stats().submissions == 1  # only the good job ever reached the service
    rows = {r["id"]: r for r in read_results(out)}
    assert rows["bad"]["status"] == "failed" and rows["bad"]["task_id"] is None
    assert rows["bad"]["error"] == {
        "type": "JobInputError",
        "reason": "INVALID_JOB_LINE",
        "message": "line 2: not valid JSON",
    }
    with pytest.RaisesGroup(
        pytest.RaisesExc(TypeError, match="InvalidJob"), flatten_subgroups=True
    ):
        await BatchRunner(client, out).run_all(["not a job"])  # type: ignore[list-item]


async def test_two_runs_cannot_share_an_output_folder(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    emu.faults.hold("result")
    first = BatchRunner(client, out)
    async with first.run([make_job("a", images(1), images(2))]):
        with pytest.raises(ConfigurationError, match="in use"):
            await BatchRunner(client, out).run_all([])
        with pytest.raises(RuntimeError, match="already running"):
            await first.run_all([])
    emu.faults.release("result")
    summary = await first.run_all([make_job("a", images(1), images(2))])  # reusable after
    assert summary.succeeded == 1
