"""A job fails only for its own reason: what belongs to the run stops or pauses it, and a plain
rerun continues (issue "Batch failures"). Each category against the emulator: what is recorded,
what is raised, and that a plain rerun finishes with zero duplicate submissions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from support import SmallFileSystem

from novita_async import NovitaClient, RetryPolicy, RunStoppedError
from novita_async.batch import BatchEvent, BatchEventKind, BatchOptions, BatchRunner, Job
from novita_async.emulator import Emulator

from .conftest import make_job

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

FAST = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05, retry_after_cap=0.2)


def jobs_for(images: Callable[[int], Path], count: int, prompt: str = "") -> list[Job]:
    return [make_job(f"j{n}", images(1), images(2), prompt) for n in range(count)]


def records(out: Path) -> list[dict[str, object]]:
    lines = (out / ".novita-journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def results(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def client_for(emu: Emulator, **overrides: object) -> NovitaClient:
    options: dict[str, object] = {
        "base_url": emu.base_url,
        "assets_url": emu.assets_url,
        "retry": FAST,
    }
    options.update(overrides)
    key = str(options.pop("api_key", emu.api_key))
    return NovitaClient(key, **options)  # type: ignore[arg-type]


@pytest.mark.emulator(api_keys=frozenset({"sk-right"}))
async def test_a_wrong_key_stops_the_run_records_nothing_and_a_rerun_with_the_key_finishes(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = jobs_for(images, 40)
    events: list[BatchEvent] = []
    async with client_for(emu, api_key="sk-wrong") as wrong:
        with pytest.raises(RunStoppedError) as stopped:
            await BatchRunner(wrong, out, on_event=events.append).run_all(jobs)
    assert str(stopped.value) == (
        "the service refused the API key (403 INVALID_API_KEY): check NOVITA_API_KEY; "
        "0 tasks submitted; rerun to continue"
    )
    assert stopped.value.reason == "INVALID_API_KEY"
    summary = stopped.value.summary
    assert (summary.failed, summary.succeeded, summary.stopped) == (0, 0, "INVALID_API_KEY")
    # The first refusal stopped the run: only the POSTs already on their way were refused.
    assert emu.stats().count("submit", 403) <= 8
    assert [e.message for e in events if e.kind is BatchEventKind.STOPPED] == [
        "the service refused the API key: check NOVITA_API_KEY"
    ]
    assert results(out) == []
    assert {r["type"] for r in records(out)} <= {"asset", "submitting", "not_submitted"}

    # The plain rerun with the right key does every job (no retry_failed needed).
    async with client_for(emu) as right:
        summary = await BatchRunner(right, out).run_all(jobs)
    assert (summary.succeeded, summary.failed, summary.submitted) == (40, 0, 40)
    stats = emu.stats()
    assert stats.submissions == 40 and stats.duplicate_submissions == 0


async def test_a_balance_run_out_stops_submitting_and_the_tasks_paid_for_still_land(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = jobs_for(images, 30)
    emu.faults.account_error(after=5)  # 400 BILLING_BALANCE_NOT_ENOUGH after five tasks
    async with client_for(emu) as client:
        with pytest.raises(RunStoppedError) as stopped:
            await BatchRunner(client, out, BatchOptions(concurrency=10)).run_all(jobs)
        assert str(stopped.value) == (
            "the account's balance has run out (400 BILLING_BALANCE_NOT_ENOUGH): top it up; "
            "5 tasks submitted; rerun to continue"
        )
        rows = results(out)
        # The five tasks paid for were followed to their end and their images saved.
        assert len(rows) == 5 and {r["status"] for r in rows} == {"succeeded"}
        assert all((out / str(r["files"][0])).is_file() for r in rows)  # type: ignore[index]
        assert stopped.value.summary.not_finished >= 1

        emu.faults.clear()  # the balance was topped up
        again = await BatchRunner(client, out, BatchOptions(concurrency=10)).run_all(jobs)
    assert (again.succeeded, again.replayed, again.submitted, again.failed) == (30, 5, 25, 0)
    stats = emu.stats()
    assert stats.submissions == 30 and stats.duplicate_submissions == 0


async def test_a_missing_endpoint_stops_the_run_naming_the_base_url(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    async with client_for(emu, base_url=f"{emu.base_url}/nowhere") as client:
        with pytest.raises(RunStoppedError) as stopped:
            await BatchRunner(client, tmp_path / "out").run_all(jobs_for(images, 3))
    assert "the service has no such endpoint (404 API_NOT_FOUND): check NOVITA_BASE_URL" in str(
        stopped.value
    )
    assert results(tmp_path / "out") == []


async def test_an_outage_pauses_the_run_and_fails_nothing(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    events: list[BatchEvent] = []
    emu.faults.outage(seconds=1.5)  # the API refuses connections from now on, for 1.5 s
    async with client_for(emu) as client:
        summary = await BatchRunner(client, tmp_path / "out", on_event=events.append).run_all(
            jobs_for(images, 12)
        )
    assert (summary.succeeded, summary.failed) == (12, 0)
    paused = [e.message for e in events if e.kind is BatchEventKind.PAUSED]
    assert paused and all(
        str(m).startswith("paused: the API has been unreachable for") for m in paused
    )
    assert "next try in" in str(paused[0])
    continued = [e.message for e in events if e.kind is BatchEventKind.CONTINUED]
    assert len(continued) == 1 and str(continued[0]).startswith("the API answers again after")
    stats = emu.stats()
    assert stats.submissions == 12 and stats.duplicate_submissions == 0


async def test_an_outage_longer_than_its_budget_stops_the_run_and_a_rerun_finishes(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = jobs_for(images, 6)
    emu.faults.outage(seconds=600)
    async with client_for(emu) as client:
        with pytest.raises(RunStoppedError) as stopped:
            await BatchRunner(client, out, BatchOptions(max_outage=0.5)).run_all(jobs)
        assert stopped.value.reason == "OUTAGE"
        assert "the API has been unreachable for" in str(stopped.value)
        assert results(out) == []  # nothing recorded failed
        assert not any(r["type"] == "failed" for r in records(out))

        emu.faults.clear()  # the service is back
        again = await BatchRunner(client, out).run_all(jobs)
    assert (again.succeeded, again.failed) == (6, 0)
    assert emu.stats().duplicate_submissions == 0


async def test_a_day_long_retry_after_on_submissions_pauses_only_as_long_as_the_cap(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    events: list[BatchEvent] = []
    emu.faults.set("submit", rate_429=1.0, retry_after=86400, for_seconds=1.0)
    async with client_for(emu) as client:
        runner = BatchRunner(
            client, tmp_path / "out", BatchOptions(retry_after_cap=0.3), on_event=events.append
        )
        summary = await runner.run_all(jobs_for(images, 4))
    assert (summary.succeeded, summary.failed) == (4, 0)
    paused = [str(e.message) for e in events if e.kind is BatchEventKind.PAUSED]
    assert paused and all("Retry-After 86400s, capped at 0.3s" in m for m in paused)
    assert all(m.startswith("submissions paused for 0.3s") for m in paused)


async def test_a_submission_sent_before_a_crash_is_reported_unknown_not_sent_again(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # What a kill -9 between the intent and the answer leaves: "submitting" and nothing after.
    out = tmp_path / "out"
    out.mkdir()
    jobs = jobs_for(images, 3)
    intent = {"type": "submitting", "id": "j1", "fingerprint": None, "t": 1.0}
    (out / ".novita-journal.jsonl").write_text(json.dumps(intent) + "\n")

    summary = await BatchRunner(client, out).run_all(jobs)
    assert (summary.succeeded, summary.failures_by_reason) == (2, {"SUBMIT_OUTCOME_UNKNOWN": 1})
    assert emu.stats().submissions == 2  # j1 may have a task already: never sent again unasked
    (row,) = [r for r in results(out) if r["status"] == "failed"]
    assert row["id"] == "j1"
    assert "an earlier run sent this job's submission" in row["error"]["message"]  # type: ignore[index]

    again = await BatchRunner(client, out).run_all(jobs)  # a plain rerun: still not sent
    assert (again.replayed, emu.stats().submissions) == (3, 2)
    told = await BatchRunner(client, out, BatchOptions(retry_unknown_submits=True)).run_all(jobs)
    assert (told.succeeded, told.submitted, emu.stats().submissions) == (3, 1, 3)


async def test_a_refused_submission_is_recorded_as_such_and_submitted_on_the_rerun(
    emu: Emulator, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    emu.faults.account_error(after=0, status=403, reason="INVALID_API_KEY")
    async with client_for(emu) as client:
        with pytest.raises(RunStoppedError):
            await BatchRunner(client, out, BatchOptions(concurrency=1)).run_all(jobs_for(images, 2))
        kinds = [r["type"] for r in records(out) if r.get("id") == "j0"]
        assert kinds == ["submitting", "not_submitted"]  # answered: no task exists
        emu.faults.clear()
        again = await BatchRunner(client, out).run_all(jobs_for(images, 2))
    assert (again.succeeded, again.submitted) == (2, 2)


async def test_a_task_the_service_forgot_is_reported_and_retry_failed_submits_it_afresh(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = make_job("slow", images(1), images(2), "[[seconds:600]]")
    submitted = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUBMITTED:
            submitted.set()

    async with BatchRunner(client, out, on_event=on_event).run([job]):
        await submitted.wait()  # the task takes ten minutes: leave as soon as it exists
    task_id = next(r["task_id"] for r in records(out) if r["type"] == "submitted")
    emu.faults.forget_tasks([str(task_id)])

    summary = await BatchRunner(client, out).run_all([job])
    assert summary.failures_by_reason == {"TASK_NOT_FOUND": 1}
    assert emu.stats().submissions == 1

    fresh = make_job("slow", images(1), images(2))  # same id, a task that ends
    retried = await BatchRunner(client, out, BatchOptions(retry_failed=True)).run_all([fresh])
    assert (retried.succeeded, retried.submitted) == (1, 1)
    assert emu.stats().submissions == 2


async def test_an_asset_the_service_forgot_is_uploaded_again_and_the_job_goes_on(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = await BatchRunner(client, out).run_all([make_job("a", images(1), images(2))])
    assert first.succeeded == 1
    uploads = emu.stats().count("upload")
    emu.faults.forget_assets(emu.asset_ids())

    # A later run reuses the journal's asset ids; the service refuses them; the runner uploads
    # the inputs again and submits once more (the refused submission made no task).
    later = await BatchRunner(client, out).run_all([make_job("b", images(1), images(2))])
    assert (later.succeeded, later.failed) == (1, 0)
    assert emu.stats().count("upload") == uploads + 2
    assert emu.stats().count("submit", 400) == 1
    assert emu.stats().submissions == 2


async def test_a_disk_too_full_for_the_next_task_stops_the_run_before_paying(
    emu: Emulator,
    client: NovitaClient,
    images: Callable[[int], Path],
    small_fs: SmallFileSystem,
) -> None:
    out = small_fs.path / "out"
    with pytest.raises(RunStoppedError) as stopped:
        await BatchRunner(client, out).run_all(jobs_for(images, 3))
    assert stopped.value.reason == "DISK_FULL"
    assert str(stopped.value).startswith("the output disk is full (only ")
    assert "free some space; 0 tasks submitted; rerun to continue" in str(stopped.value)
    assert emu.stats().submissions == 0
