"""Faults the runner rides out or records: expired URLs, 429s, lost submit answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from novita_async import NovitaClient, RetryPolicy
from novita_async.batch import BatchEvent, BatchEventKind, BatchOptions, BatchRunner
from novita_async.emulator import Emulator

from .conftest import make_job
from .test_runner import assert_images_decode, read_results

# Backoff between rounds, Retry-After pauses and task times: on the virtual clock, not waited.
pytestmark = pytest.mark.virtual_time


@pytest.fixture
async def single_try_client(emu: Emulator) -> AsyncIterator[NovitaClient]:
    """A client that does not retry, so each fault reaches the runner."""
    async with NovitaClient(
        emu.api_key,
        base_url=emu.base_url,
        assets_url=emu.assets_url,
        retry=RetryPolicy(attempts=1),
    ) as client:
        yield client


async def test_an_expired_image_url_is_fetched_again(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    emu.faults.script("image", ["expire", "ok", "expire"])
    events: list[BatchEvent] = []
    jobs = [make_job(f"j{n}", images(1), images(2), image_num=2) for n in range(2)]
    summary = await BatchRunner(
        client, out, BatchOptions(concurrency=1), on_event=events.append
    ).run_all(jobs)

    assert (summary.succeeded, summary.failed, summary.images) == (2, 0, 4)
    retried = [e for e in events if e.kind is BatchEventKind.RETRIED]
    assert [e.reason for e in retried] == ["IMAGE_URL_EXPIRED", "IMAGE_URL_EXPIRED"]
    assert emu.stats().count("image", 403) == 2
    assert emu.stats().submissions == 2  # fresh URLs came from the task, not a new task
    rows = read_results(out)
    assert_images_decode(out, rows)
    assert all(len(r["files"]) == 2 for r in rows)  # type: ignore[arg-type]


async def test_urls_that_keep_expiring_are_followed_again_in_the_same_run_not_failed(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # Three expired URLs outlast the client's refreshes (2); the job is not failed for it: the
    # runner follows its task again a little later, which brings fresh URLs.
    emu.faults.script("image", ["expire"] * 4)
    events: list[BatchEvent] = []
    out = tmp_path / "out"
    jobs = [make_job("a", images(1), images(2))]
    summary = await BatchRunner(client, out, on_event=events.append).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (1, 0)
    rounds = [
        e for e in events if e.kind is BatchEventKind.RETRIED and "round 1 of" in str(e.message)
    ]
    assert [e.reason for e in rounds] == ["IMAGE_URL_EXPIRED"]
    assert emu.stats().count("image", 403) == 4
    assert emu.stats().submissions == 1  # the same task, never a second one
    (row,) = read_results(out)
    assert row["status"] == "succeeded"
    assert_images_decode(out, [row])


async def test_urls_that_never_stop_expiring_end_the_job_retryable_and_a_rerun_finishes_it(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    emu.faults.set("image", expire=1.0)
    out = tmp_path / "out"
    jobs = [make_job("a", images(1), images(2))]
    summary = await BatchRunner(client, out).run_all(jobs)
    assert summary.failures_by_reason == {"RETRIES_EXHAUSTED": 1}
    (row,) = read_results(out)
    assert row["task_id"] is not None
    assert "IMAGE_URL_EXPIRED" in row["error"]["message"]  # type: ignore[index]

    # Not the job's fault: a plain rerun (no retry_failed) follows the same task again.
    emu.faults.clear()
    again = await BatchRunner(client, out).run_all(jobs)
    assert (again.succeeded, again.resumed, again.submitted) == (1, 1, 0)
    assert emu.stats().submissions == 1
    (row,) = read_results(out)
    assert row["status"] == "succeeded"
    assert_images_decode(out, [row])


async def test_a_download_refused_for_longer_than_one_round_of_retries_is_ridden_out(
    emu: Emulator, single_try_client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # The client makes one attempt per call here: two refusals outlast two rounds.
    emu.faults.script("image", ["429:0", "503", "ok"])
    events: list[BatchEvent] = []
    out = tmp_path / "out"
    job = make_job("a", images(1), images(2))
    runner = BatchRunner(single_try_client, out, on_event=events.append)
    summary = await runner.run_all([job])
    assert (summary.succeeded, summary.failed) == (1, 0)
    retried = [e.reason for e in events if e.kind is BatchEventKind.RETRIED]
    assert retried == ["HTTP_429", "HTTP_503"]
    assert [emu.stats().count("image", status) for status in (429, 503, 200)] == [1, 1, 1]
    assert emu.stats().submissions == 1
    assert_images_decode(out, read_results(out))


async def test_a_download_refused_for_ever_ends_retryable_without_a_second_task(
    emu: Emulator, single_try_client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    emu.faults.set("image", rate_429=1.0, retry_after=0.0)
    out = tmp_path / "out"
    job = make_job("a", images(1), images(2))
    summary = await BatchRunner(single_try_client, out).run_all([job])
    assert summary.failures_by_reason == {"RETRIES_EXHAUSTED": 1}
    # Each round is the runner's download attempts (4 with a single-try client), one per round
    # of the job's own retries, then the job ends: 4 * (1 + MAX_JOB_ROUNDS) GETs.
    assert emu.stats().count("image", 429) == 4 * 6
    assert emu.stats().submissions == 1


async def test_429_on_submit_pauses_every_submitter_and_fails_nothing(
    emu: Emulator,
    single_try_client: NovitaClient,
    images: Callable[[int], Path],
    tmp_path: Path,
) -> None:
    emu.faults.script("submit", ["429:0.2", "429:0.2", "429:0.2"])
    events: list[BatchEvent] = []
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(6)]
    runner = BatchRunner(single_try_client, tmp_path / "out", on_event=events.append)
    summary = await runner.run_all(jobs)

    assert (summary.succeeded, summary.failed) == (6, 0)
    retried = [e for e in events if e.kind is BatchEventKind.RETRIED]
    assert len(retried) == 3
    assert {e.reason for e in retried} == {"RATE_LIMIT_EXCEEDED"}
    stats = emu.stats()
    assert stats.count("submit", 429) == 3
    assert stats.submissions == 6 and stats.duplicate_submissions == 0


async def test_a_retrying_client_still_hands_submit_429s_to_the_shared_pause(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # The client (3 attempts) would wait out a 429 for its one submission while the others kept
    # sending; the runner asks it not to, and pauses every submitter instead.
    emu.faults.script("submit", ["429:0.2", "429:0.2"])
    events: list[BatchEvent] = []
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(4)]
    summary = await BatchRunner(client, tmp_path / "out", on_event=events.append).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (4, 0)
    retried = [e for e in events if e.kind is BatchEventKind.RETRIED]
    assert [e.reason for e in retried] == ["RATE_LIMIT_EXCEEDED"] * 2
    assert emu.stats().submissions == 4


async def test_a_lost_submit_answer_is_recorded_not_resubmitted(
    emu: Emulator,
    single_try_client: NovitaClient,
    images: Callable[[int], Path],
    tmp_path: Path,
) -> None:
    emu.faults.script("submit", ["reset_after"])
    out = tmp_path / "out"
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(3)]
    summary = await BatchRunner(single_try_client, out, BatchOptions(concurrency=1)).run_all(jobs)

    assert summary.failures_by_reason == {"SUBMIT_OUTCOME_UNKNOWN": 1}
    assert summary.succeeded == 2
    assert emu.stats().submissions == 3  # the lost answer's task exists: never sent again
    assert emu.stats().duplicate_submissions == 0
    row = next(r for r in read_results(out) if r["status"] == "failed")
    assert row["task_id"] is None
    assert row["error"]["reason"] == "SUBMIT_OUTCOME_UNKNOWN"  # type: ignore[index]

    # An ordinary rerun leaves it failed; retry_failed submits it again, knowingly.
    again = await BatchRunner(single_try_client, out).run_all(jobs)
    assert (again.replayed, again.failed, emu.stats().submissions) == (3, 1, 3)
    retried = await BatchRunner(single_try_client, out, BatchOptions(retry_failed=True)).run_all(
        jobs
    )
    assert (retried.succeeded, retried.submitted, emu.stats().submissions) == (3, 1, 4)
    assert len(read_results(out)) == 3
