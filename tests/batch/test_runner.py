"""The batch runner against the emulator over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from PIL import Image

from novita_async import ConfigurationError, NovitaClient
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    BatchSummary,
    JobOutcome,
)
from novita_async.batch._runner import Executor
from novita_async.emulator import Emulator

from .conftest import make_job


def read_results(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def assert_images_decode(out: Path, rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert row["status"] == "succeeded", row
        files = row["files"]
        assert isinstance(files, list) and files
        for name in files:
            with Image.open(out / name) as image:
                image.verify()


async def test_duplicated_inputs_are_uploaded_once(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    face, ref = images(1), images(2)
    jobs = [make_job(f"j{n}", face if n % 2 else images(1).read_bytes(), ref) for n in range(12)]
    summary = await BatchRunner(client, out, BatchOptions(concurrency=4)).run_all(jobs)

    assert (summary.succeeded, summary.failed, summary.jobs) == (12, 0, 12)
    stats = emu.stats()
    assert stats.uploads == 2  # one per distinct content, path or bytes alike
    assert stats.submissions == 12 and stats.duplicate_submissions == 0
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(f"j{n}" for n in range(12))
    assert_images_decode(out, rows)
    assert rows[0]["files"] == [f"{rows[0]['id']}_0.png"]


async def test_outcomes_arrive_in_completion_order_while_the_run_goes_on(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # The first job read takes far longer than the test: the others must not wait for it.
    jobs = [make_job("slow", images(1), images(2), "[[seconds:600]]")]
    jobs += [make_job(f"fast{n}", images(1), images(2)) for n in range(5)]
    seen: list[JobOutcome] = []
    runner = BatchRunner(client, out, BatchOptions(concurrency=6))
    async with runner.run(jobs) as outcomes:
        async for outcome in outcomes:
            seen.append(outcome)
            if len(seen) == 5:
                break  # leaving the block stops the run; "slow" stays submitted
    assert sorted(o.job_id for o in seen) == [f"fast{n}" for n in range(5)]
    assert all(o.ok for o in seen)
    assert runner.summary.interrupted
    journal = [
        json.loads(line) for line in (out / ".novita-journal.jsonl").read_text().splitlines()
    ]
    slow = [r["type"] for r in journal if r.get("id") == "slow"]
    assert slow == ["submitting", "submitted"]  # the intent, then the answer
    assert len(read_results(out)) == 5  # the rebuild lists only ended jobs


async def test_failures_are_reported_per_job_while_the_rest_succeed(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    jobs = [
        make_job("ok0", images(1), images(2)),
        make_job("task-fails", images(1), images(2), "[[fail]]"),
        make_job("missing", tmp_path / "nope.png", images(2)),
        make_job("text", not_an_image, images(2)),
        make_job("../escape", images(1), images(2)),
        make_job("ok1", images(1), images(2)),
        make_job("ok0", images(3), images(2)),  # the same id again
    ]
    events: list[BatchEvent] = []
    runner = BatchRunner(client, out, on_event=events.append)
    seen: list[JobOutcome] = []
    async with runner.run(jobs) as stream:
        async for outcome in stream:
            seen.append(outcome)
    duplicate = [o for o in seen if o.error and o.error.reason == "DUPLICATE_JOB_ID"]
    assert [o.job_id for o in duplicate] == ["ok0"]
    outcomes = {o.job_id: o for o in seen if o not in duplicate}
    assert len(outcomes) == 6
    reasons = {job_id: (o.error.reason if o.error else None) for job_id, o in outcomes.items()}
    assert reasons == {
        "ok0": None,
        "ok1": None,
        "task-fails": "TASK_FAILED",
        "missing": "INPUT_NOT_FOUND",
        "text": "INVALID_IMAGE",
        "../escape": "INVALID_JOB_ID",
    }
    assert outcomes["task-fails"].task_id is not None
    summary = runner.summary
    assert (summary.succeeded, summary.failed) == (2, 5)
    assert summary.failures_by_reason == {
        "TASK_FAILED": 1,
        "INPUT_NOT_FOUND": 1,
        "INVALID_IMAGE": 1,
        "INVALID_JOB_ID": 1,
        "DUPLICATE_JOB_ID": 1,
    }
    assert emu.stats().submissions == 3
    assert not (tmp_path / "escape").exists()
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(outcomes)  # one line per distinct id
    failed_row = next(r for r in rows if r["id"] == "missing")
    assert failed_row["error"]["reason"] == "INPUT_NOT_FOUND"  # type: ignore[index]
    failed_events = [e for e in events if e.kind is BatchEventKind.FAILED]
    assert {e.reason for e in failed_events} == set(summary.failures_by_reason)


def test_the_runner_takes_its_options_whole_and_no_keyword_overrides(tmp_path: Path) -> None:
    client = NovitaClient("test-key", base_url="http://127.0.0.1:9")  # never opened
    given = BatchOptions(concurrency=3, retry_failed=True)
    runner = BatchRunner(client, tmp_path, attrs.evolve(given, rate=2.0))
    assert runner.options == BatchOptions(concurrency=3, retry_failed=True, rate=2.0)
    assert given.rate is None  # the options given are not changed
    assert BatchRunner(client, tmp_path).options == BatchOptions()
    seven = BatchOptions(concurrency=7)
    assert BatchRunner(client, tmp_path, seven).options == BatchOptions(concurrency=7)
    with pytest.raises(ConfigurationError, match=r"^rate must be"):
        BatchRunner(client, tmp_path, BatchOptions(rate=0))
    with pytest.raises(ConfigurationError, match=r"^concurrency must be"):
        BatchRunner(client, tmp_path, attrs.evolve(given, concurrency=0))
    with pytest.raises(TypeError):
        BatchOptions(concurrency_=5)  # type: ignore[call-arg]  # not an option
    with pytest.raises(TypeError):
        BatchRunner(client, tmp_path, concurrency=5)  # type: ignore[call-arg]  # no overrides
    with pytest.raises(TypeError):
        BatchRunner(client, tmp_path, 5)  # type: ignore[arg-type]


def test_a_runner_is_an_executor_with_nothing_in_flight_before_its_run(tmp_path: Path) -> None:
    client = NovitaClient("test-key", base_url="http://127.0.0.1:9")  # never opened
    executor: Executor = BatchRunner(client, tmp_path, BatchOptions(stop_grace=2.0))
    assert executor.options.stop_grace == 2.0
    assert executor.awaiting_answers == 0
    executor.abandon_submissions()  # nothing sent: nothing to give up, and no error
    assert executor.summary == BatchSummary()


async def test_a_run_follows_the_options_given(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out, journal = tmp_path / "out", tmp_path / "elsewhere" / "journal.jsonl"
    journal.parent.mkdir()
    options = BatchOptions(concurrency=2, journal_path=journal)
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(4)]
    summary = await BatchRunner(client, out, options).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (4, 0)
    assert not (out / ".novita-journal.jsonl").exists()
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(r["id"] for r in records if r["type"] == "succeeded") == ["j0", "j1", "j2", "j3"]
    # A rerun with the same options resumes from that journal: nothing is submitted again.
    again = await BatchRunner(client, out, options).run_all(jobs)
    assert (again.replayed, again.submitted) == (4, 0)
    assert emu.stats().submissions == 4
