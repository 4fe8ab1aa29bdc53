"""Stopping and resuming: cancellation, fail_fast, reruns, changed jobs, lazy input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from novita_async import ConfigurationError, NovitaClient
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    Job,
    JobOutcome,
)
from novita_async.emulator import Emulator

from .conftest import make_job
from .test_runner import assert_images_decode, read_results


def stray_files(out: Path) -> list[Path]:
    """Temporary files left behind: partial downloads, half-written results."""
    return [
        p
        for p in out.rglob("*")
        if p.is_file() and (p.suffix in (".part", ".tmp") or p.name.startswith(".results-"))
    ]


async def submitted_then_cancel(
    runner: BatchRunner, jobs: object, wanted: int, submitted: list[str]
) -> list[JobOutcome]:
    """Run until ``wanted`` SUBMITTED events, then cancel the scope the run lives in."""
    enough = anyio.Event()
    seen: list[JobOutcome] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def canceller() -> None:
                await enough.wait()
                scope.cancel()

            tg.start_soon(canceller)
            previous = runner.on_event

            def watch(event: BatchEvent) -> None:
                if previous is not None:
                    previous(event)
                if event.kind is BatchEventKind.SUBMITTED:
                    submitted.append(event.job_id)
                    if len(submitted) >= wanted:
                        enough.set()

            runner.on_event = watch
            async with runner.run(jobs) as outcomes:  # type: ignore[arg-type]
                async for outcome in outcomes:
                    seen.append(outcome)
    assert scope.cancelled_caught
    return seen


async def test_a_rerun_removes_the_partial_files_a_killed_run_left(
    emu: Emulator,
    client: NovitaClient,
    images: Callable[[int], Path],
    tmp_path: Path,
    exited_pid: int,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # What kill -9 mid-download and mid-rewrite leaves: the client's temporary names.
    dead = exited_pid
    stale = [out / f".j0_0.png.{dead}-7.part", out / f".results.jsonl.{dead}-8.part"]
    for path in stale:
        path.write_bytes(b"half")
    summary = await BatchRunner(client, out).run_all([make_job("j0", images(1), images(2))])
    assert summary.succeeded == 1
    assert stray_files(out) == []
    assert sorted(p.name for p in out.iterdir()) == [
        ".novita-journal.jsonl",
        ".novita-journal.jsonl.reserve",  # room for the journal's last records on a full disk
        ".novita-lock",  # one run per output folder
        "j0_0.png",
        "results.jsonl",
    ]


async def test_a_cancelled_run_resumes_without_submitting_twice(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(n % 3), images(7)) for n in range(12)]
    emu.faults.hold("result")  # no task can end: the cancel finds them all in flight
    submitted: list[str] = []
    first = BatchRunner(client, out, BatchOptions(concurrency=4))
    seen = await submitted_then_cancel(first, jobs, 4, submitted)
    emu.faults.release("result")
    assert seen == [] and first.summary.interrupted
    assert emu.stats().submissions == 4
    assert stray_files(out) == []
    # An upload the cancel cut off before its answer was recorded is made again (uploads cost
    # nothing); every one the journal recorded is reused.
    journal = (out / ".novita-journal.jsonl").read_text().splitlines()
    recorded = {json.loads(line)["sha256"] for line in journal if '"type":"asset"' in line}
    uploaded_first = emu.stats().uploads

    second = BatchRunner(client, out, BatchOptions(concurrency=4))
    summary = await second.run_all(jobs)
    assert (summary.succeeded, summary.resumed, summary.submitted) == (12, 4, 8)
    stats = emu.stats()
    assert stats.submissions == 12 and stats.duplicate_submissions == 0
    # Three faces and one reference: the second run uploads only those the first did not record.
    assert stats.uploads - uploaded_first == 4 - len(recorded)
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(j.id for j in jobs)
    assert_images_decode(out, rows)
    assert stray_files(out) == []

    # A third run has nothing to do: every job is replayed, no request is made.
    before = emu.stats()
    third = await BatchRunner(client, out).run_all(jobs)
    assert (third.replayed, third.succeeded, third.http_requests) == (12, 12, {})
    assert emu.stats().requests == before.requests
    assert read_results(out) == rows


async def test_input_is_read_lazily(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    face, ref = images(1), images(2)
    consumed = 0

    closed = False

    def endless() -> Iterator[Job]:
        nonlocal consumed, closed
        try:
            for n in range(100_000):
                consumed += 1
                yield make_job(f"j{n}", face, ref)
        finally:
            closed = True

    emu.faults.hold("result")
    runner = BatchRunner(
        client, tmp_path / "out", BatchOptions(concurrency=4, upload_concurrency=2)
    )
    submitted: list[str] = []
    enough = anyio.Event()

    def watch(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUBMITTED:
            submitted.append(event.job_id)
            if len(submitted) == 4:
                enough.set()

    runner.on_event = watch
    async with runner.run(endless()):
        await enough.wait()
        await anyio.wait_all_tasks_blocked()  # let the reader go as far as it can
        in_flight_consumed = consumed
    # Leaving the block stopped the run; the reader went no further either.
    emu.faults.release("result")
    assert consumed == in_flight_consumed
    assert closed  # the generator was closed when the run stopped, its finally block ran
    # concurrency tasks in flight + upload_concurrency jobs read ahead, and no more.
    assert in_flight_consumed == 4 + 2
    assert len(submitted) == 4


async def test_fail_fast_stops_at_the_first_failure_and_a_rerun_finishes(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(3)]
    jobs.append(make_job("broken", tmp_path / "missing.png", images(2)))
    jobs += [make_job(f"k{n}", images(1), images(2)) for n in range(8)]
    emu.faults.hold("result")  # the good jobs are still in flight when "broken" fails
    runner = BatchRunner(
        client, out, BatchOptions(concurrency=3, upload_concurrency=1, fail_fast=True)
    )
    async with runner.run(jobs) as outcomes:
        seen = [outcome async for outcome in outcomes]
    emu.faults.release("result")
    assert [(o.job_id, o.error.reason if o.error else None) for o in seen] == [
        ("broken", "INPUT_NOT_FOUND")
    ]
    assert runner.summary.interrupted
    first_submissions = emu.stats().submissions
    assert first_submissions <= 3
    assert stray_files(out) == []

    summary = await BatchRunner(client, out).run_all(jobs)
    assert summary.succeeded == 11 and summary.failed == 1 and summary.replayed == 1
    assert summary.resumed == first_submissions
    stats = emu.stats()
    assert stats.submissions == 11 and stats.duplicate_submissions == 0
    rows = read_results(out)
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12


async def test_a_changed_job_under_the_same_id_is_reported_not_resubmitted(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    original = make_job("a", images(1), images(2))
    await BatchRunner(client, out).run_all([original])
    (before,) = read_results(out)
    changed = make_job("a", images(1), images(2), "with a hat")
    events: list[BatchEvent] = []
    summary = await BatchRunner(client, out, on_event=events.append).run_all([changed])
    assert summary.failures_by_reason == {"JOB_CHANGED": 1}
    assert emu.stats().submissions == 1
    # Never shown as a success of the new request: failed JOB_CHANGED, with the earlier task and
    # its images listed as that request's.
    (row,) = read_results(out)
    assert row["status"] == "failed"
    assert row["error"]["reason"] == "JOB_CHANGED"  # type: ignore[index]
    assert (row["task_id"], row["files"]) == (before["task_id"], before["files"])
    assert f"task {before['task_id']}" in row["error"]["message"]  # type: ignore[index]
    assert "the images listed are of that request" in row["error"]["message"]  # type: ignore[index]
    assert any(e.kind is BatchEventKind.FAILED and e.reason == "JOB_CHANGED" for e in events)

    # The line put back as it was: its task is followed again (nothing paid), a success again.
    back = await BatchRunner(client, out).run_all([original])
    assert (back.succeeded, back.submitted, emu.stats().submissions) == (1, 0, 1)
    assert read_results(out)[0]["status"] == "succeeded"
    # The new request, asked for (once reported changed again): submitted.
    reported = await BatchRunner(client, out).run_all([changed])
    assert reported.failures_by_reason == {"JOB_CHANGED": 1}
    again = await BatchRunner(client, out, BatchOptions(retry_failed=True)).run_all([changed])
    assert (again.succeeded, again.submitted, emu.stats().submissions) == (1, 1, 2)
    (row,) = read_results(out)
    assert row["status"] == "succeeded" and row["task_id"] != before["task_id"]


async def test_retry_failed_resubmits_a_failed_task(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(3)]
    emu.faults.fail_next_tasks(1)
    first = await BatchRunner(client, out, BatchOptions(concurrency=1)).run_all(jobs)
    assert first.failures_by_reason == {"TASK_FAILED": 1}
    summary = await BatchRunner(client, out, BatchOptions(retry_failed=True)).run_all(jobs)
    assert (summary.succeeded, summary.replayed, summary.submitted) == (3, 2, 1)
    assert emu.stats().submissions == 4
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    assert len({r["id"] for r in rows}) == 3


async def test_summary_reports_requests_per_task(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    jobs = [make_job(f"j{n}", images(n), images(9), image_num=2) for n in range(5)]
    summary = await BatchRunner(client, tmp_path / "out").run_all(jobs)
    stats = emu.stats()
    assert summary.tasks == 5 and summary.images == 10
    # The runner's tally matches the server's (no faults, so no client retries).
    assert summary.http_requests == {
        route: stats.count(route) for route in ("upload", "submit", "result", "image")
    }
    assert summary.polls_per_task <= 2  # an honest eta: about one poll per task
    assert summary.requests_per_task == (5 + stats.count("result") + 10) / 5
    assert summary.images_per_minute > 0
    journal = (tmp_path / "out" / ".novita-journal.jsonl").read_text()
    assert emu.api_key not in journal
    assert emu.api_key not in (tmp_path / "out" / "results.jsonl").read_text()
    assert json.loads(journal.splitlines()[0])["type"] in ("submitted", "asset")


async def test_a_rerun_replays_refused_jobs_without_recording_them_again(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job("../up", images(1), images(2)), make_job("ok", images(1), images(2))]
    await BatchRunner(client, out).run_all(jobs)
    journal = out / ".novita-journal.jsonl"
    recorded = journal.read_bytes()
    again = await BatchRunner(client, out).run_all(jobs)
    assert (again.replayed, again.failed, again.succeeded) == (2, 1, 1)
    assert journal.read_bytes() == recorded
    assert len(read_results(out)) == 2


async def test_a_stopping_run_waits_for_unanswered_submissions_only_its_grace(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(3)]
    emu.faults.hold("submit")  # parked before the emulator creates a task: no answer comes
    runner = BatchRunner(client, out, BatchOptions(concurrency=3, stop_grace=0))
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def stop_once_all_are_parked() -> None:
                await emu.wait_in_flight("submit", 3)
                scope.cancel()

            tg.start_soon(stop_once_all_are_parked)
            await runner.run_all(jobs)
    assert scope.cancelled_caught
    emu.faults.release("submit")
    records = [
        json.loads(line) for line in (out / ".novita-journal.jsonl").read_text().splitlines()
    ]
    failed = [r for r in records if r["type"] == "failed"]
    assert sorted(r["id"] for r in failed) == ["j0", "j1", "j2"]
    assert {r["error"]["reason"] for r in failed} == {"SUBMIT_OUTCOME_UNKNOWN"}
    assert all(r["task_id"] is None for r in failed)

    # Not resubmitted unless asked: a task may exist for each.
    again = await BatchRunner(client, out).run_all(jobs)
    assert (again.replayed, again.failed, again.submitted) == (3, 3, 0)
    retried = await BatchRunner(client, out, BatchOptions(retry_failed=True)).run_all(jobs)
    assert (retried.succeeded, retried.submitted) == (3, 3)


async def test_stop_grace_must_be_a_number_of_seconds(client: NovitaClient, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="stop_grace"):
        BatchRunner(client, tmp_path, BatchOptions(stop_grace=-1))


async def test_an_async_generator_input_is_closed_when_the_run_stops(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    face, ref = images(1), images(2)
    closed = False

    async def jobs() -> AsyncIterator[Job]:
        nonlocal closed
        try:
            for n in range(1000):
                yield make_job(f"j{n}", face, ref)
        finally:
            closed = True

    emu.faults.hold("result")
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(concurrency=2))
    async with runner.run(jobs()):
        await emu.wait_in_flight("result", 2)  # both slots taken: the run is well under way
        assert not closed
    emu.faults.release("result")
    assert closed and runner.summary.interrupted


async def test_fail_fast_pays_for_nothing_after_the_failure_even_with_the_outcomes_unread(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    """One task at a time: the job that takes the slot the failed job frees must not submit.
    The reader takes no outcome until every task is blocked after the failure, so the failed
    job's hand-over waits for room in the buffer (one place per worker, filled by the jobs
    before it): the moment in which the next job used to take the slot and pay."""
    workers = 1 + 1  # concurrency + upload_concurrency
    jobs = [make_job(f"ok{n}", images(1), images(2)) for n in range(workers)]
    jobs.append(make_job("bad", images(1), images(2), "[[fail]]"))
    jobs += [make_job(f"after{n}", images(1), images(2)) for n in range(3)]
    failed = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.FAILED:
            failed.set()

    runner = BatchRunner(
        client,
        tmp_path / "out",
        BatchOptions(concurrency=1, upload_concurrency=1, fail_fast=True),
        on_event=on_event,
    )
    async with runner.run(jobs) as outcomes:
        await failed.wait()
        await anyio.wait_all_tasks_blocked()  # a job that took the freed slot is in its POST by now
        seen = [outcome.job_id async for outcome in outcomes]
    assert seen == ["ok0", "ok1", "bad"]
    assert runner.summary.interrupted
    assert emu.stats().submissions == workers + 1  # nothing after "bad"
