"""The run folder as a record of money spent: one run per OUT, inputs never overwritten, names that
fit the file system, a budget per run (issue "The run folder")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from novita_async import ConfigurationError, NovitaClient, RunStoppedError
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    InvalidJob,
    Job,
    JobInputError,
    dry_run,
)
from novita_async.emulator import Emulator

from .conftest import make_job, png_bytes


async def test_two_runs_on_one_output_folder_are_refused_whatever_their_journals(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    slow = make_job("slow", images(1), images(2), "[[seconds:600]]")
    submitted = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUBMITTED:
            submitted.set()

    first = BatchRunner(
        client, out, BatchOptions(journal_path=tmp_path / "one.jsonl"), on_event=on_event
    )
    async with first.run([slow]):
        await submitted.wait()
        second = BatchRunner(client, out, BatchOptions(journal_path=tmp_path / "two.jsonl"))
        with pytest.raises(ConfigurationError, match="in use by another run"):
            await second.run_all([make_job("other", images(1), images(2))])
    assert emu.stats().submissions == 1  # the second run paid for nothing
    # Once the first run has ended, the folder is free again.
    summary = await BatchRunner(
        client, out, BatchOptions(journal_path=tmp_path / "two.jsonl")
    ).run_all([make_job("other", images(1), images(2))])
    assert summary.succeeded == 1


async def test_an_input_that_sits_where_the_run_writes_is_refused_before_anything_is_sent(
    emu: Emulator, client: NovitaClient, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # A face kept in OUT under a name the run writes (another job's first image).
    face = out / "b_0.png"
    face.write_bytes(png_bytes(1))
    ref = tmp_path / "ref.png"
    ref.write_bytes(png_bytes(2))
    summary = await BatchRunner(client, out).run_all([make_job("a", face, ref)])
    assert summary.failures_by_reason == {"INPUT_IS_OUTPUT": 1}
    assert emu.stats().count("upload") == 0 and emu.stats().submissions == 0
    assert face.read_bytes() == png_bytes(1)  # untouched


async def test_a_job_id_that_fits_in_characters_but_not_in_bytes_is_refused_before_paying(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    wide = "é" * 120  # 120 characters (under the 200-character limit), 240 bytes of UTF-8
    summary = await BatchRunner(client, tmp_path / "out").run_all(
        [make_job(wide, images(1), images(2)), make_job("short", images(1), images(2))]
    )
    assert summary.failures_by_reason == {"NAME_TOO_LONG": 1}
    assert summary.succeeded == 1
    assert emu.stats().submissions == 1


async def test_a_budget_stops_submitting_finishes_what_it_paid_for_and_a_rerun_continues(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs: list[Job] = [make_job(f"j{n}", images(1), images(2)) for n in range(10)]
    with pytest.raises(RunStoppedError) as stopped:
        await BatchRunner(client, out, BatchOptions(max_tasks=4, concurrency=3)).run_all(jobs)
    assert stopped.value.reason == "BUDGET_REACHED"
    assert str(stopped.value) == (
        "the run's budget of 4 new tasks is spent (BUDGET_REACHED): as max_tasks "
        "(--max-tasks) asked; 4 tasks submitted; rerun to continue"
    )
    summary = stopped.value.summary
    assert (summary.submitted, summary.succeeded, summary.failed) == (4, 4, 0)
    assert emu.stats().submissions == 4

    with pytest.raises(RunStoppedError):  # the rerun has a budget of its own
        await BatchRunner(client, out, BatchOptions(max_tasks=4)).run_all(jobs)
    last = await BatchRunner(client, out, BatchOptions(max_tasks=4)).run_all(jobs)
    assert (last.succeeded, last.submitted, last.replayed) == (10, 2, 8)
    assert emu.stats().submissions == 10 and emu.stats().duplicate_submissions == 0


async def test_a_dry_run_counts_what_a_run_would_do_against_finished_work_and_sends_nothing(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    emu.faults.fail_next_tasks(1)
    earlier = [make_job(f"j{n}", images(1), images(2)) for n in range(3)]
    first = await BatchRunner(client, out, BatchOptions(concurrency=1)).run_all(earlier)
    assert (first.succeeded, first.failed) == (2, 1)
    requests = emu.stats().requests

    jobs: list[Job | InvalidJob] = [
        *earlier[1:],  # done (j0's task failed)
        make_job("new1", images(1), images(3), image_num=2),  # one content not uploaded yet
        make_job("new2", images(4), images(3)),  # another new content
        make_job("j0", images(1), images(2), "changed"),  # changed since its task was made
        make_job("new1", images(1), images(2)),  # an id given twice
        InvalidJob("7", JobInputError("INVALID_JOB_LINE", "line 7, field steps: must be ...")),
        make_job("gone", tmp_path / "missing.png", images(2)),
    ]
    plan = await dry_run(jobs, out, BatchOptions(rate=4.0), assets_url=emu.assets_url)
    assert (plan.jobs, plan.done, plan.failed, plan.changed) == (8, 2, 0, 1)
    assert (plan.to_submit, plan.images, plan.uploads, plan.seconds) == (2, 3, 2, 0.5)
    assert [(p.job_id, p.reason) for p in plan.problems] == [
        ("new1", "DUPLICATE_JOB_ID"),
        ("7", "INVALID_JOB_LINE"),
        ("gone", "INPUT_NOT_FOUND"),
    ]
    assert not plan.ok
    assert emu.stats().requests == requests  # nothing sent
    left = await dry_run(earlier, out)
    assert (left.done, left.failed, left.to_submit, left.ok) == (2, 1, 0, True)
    # With retry_failed, the failed job would be paid for again.
    again = await dry_run(earlier, out, BatchOptions(retry_failed=True))
    assert (again.done, again.failed, again.to_submit, again.ok) == (2, 0, 1, True)
