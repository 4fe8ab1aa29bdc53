"""When the batch runner polls: first polls timed by the tasks' durations, learned as they end or
bounded by a running task's ``eta`` before any has ended (issue "Completion by webhook": polling
should not wait past the end, without adding polls)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from novita_async import NovitaClient
from novita_async.batch import BatchEvent, BatchEventKind, BatchRunner, Job
from novita_async.batch._durations import DurationModel
from novita_async.emulator import Emulator

from .conftest import make_job

pytestmark = pytest.mark.emulator(task_base_seconds=0.3)


def test_a_running_tasks_promise_times_its_kind_until_one_has_ended() -> None:
    model = DurationModel()
    assert model.predict(4.0) is None
    model.bound(4.0, 1.3)
    model.bound(4.0, 1.8)  # a looser promise changes nothing
    bounded = model.predict(4.0)
    assert bounded is not None and 1.3 <= bounded < 1.8
    assert model.predict(5.0) is None  # another kind: nothing known
    model.observe(4.0, 0.9)  # one of the kind ended: the measured time wins
    learned = model.predict(4.0)
    assert learned is not None and 0.9 <= learned < 1.3


def test_the_promises_kept_are_bounded() -> None:
    model = DurationModel(window=3)
    for cost in range(5):
        model.bound(float(cost), 2.0)
    assert [model.predict(float(cost)) is None for cost in range(5)] == [True] * 2 + [False] * 3


async def test_a_first_wave_is_polled_once_per_task_but_the_first(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # Two alike jobs; the second is read only once the first has answered a poll "running".
    first_answered = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.RUNNING and event.job_id == "a":
            first_answered.set()

    async def jobs() -> AsyncIterator[Job]:
        yield make_job("a", images(1), images(2))
        await first_answered.wait()
        yield make_job("b", images(1), images(2))

    runner = BatchRunner(client, tmp_path / "out", on_event=on_event, concurrency=2)
    with anyio.fail_after(20):
        summary = await runner.run_all(jobs())
    assert (summary.succeeded, summary.failed) == (2, 0)
    # "a", knowing nothing, is polled at once (running, eta 1 s), then at the end it promised;
    # "b" starts with that promise and is polled once, after its end: not at once and at eta.
    assert emu.stats().count("result") == 3
