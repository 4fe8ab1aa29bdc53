"""When the batch runner polls: first polls timed by the tasks' durations, learned as they end or
bounded by a running task's ``eta`` before any has ended (issue "Completion by webhook": polling
should not wait past the end, without adding polls)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from novita_async import NovitaClient
from novita_async._completion import DurationModel
from novita_async.batch import BatchEvent, BatchEventKind, BatchOptions, BatchRunner, Job
from novita_async.emulator import Emulator

from .conftest import make_job

# Which poll lands before or after a task's end is what these tests count: on the virtual clock
# (support.VirtualTimeLoop) a busy machine cannot move a poll past the end it aimed for.
pytestmark = [pytest.mark.emulator(task_base_seconds=0.3), pytest.mark.virtual_time]


def test_running_tasks_promises_time_their_kind_until_one_has_ended() -> None:
    model = DurationModel()
    assert model.predict(4.0) is None
    model.bound(4.0, 600.0)  # one odd task's promise is not enough...
    assert model.predict(4.0) is None and model.promises(4.0) == 1
    model.bound(4.0, 1.3)  # ...with a second one, the tightest times the kind
    bounded = model.predict(4.0)
    assert bounded is not None and 1.3 <= bounded < 1.8
    model.bound(4.0, 1.8)  # a looser promise changes nothing
    assert model.predict(4.0) == bounded
    assert model.predict(5.0) is None  # another kind: nothing known
    model.observe(4.0, 0.9)  # one of the kind ended: the measured time wins
    learned = model.predict(4.0)
    assert learned is not None and 0.9 <= learned < 1.3


def test_the_promises_kept_are_bounded() -> None:
    model = DurationModel(window=3)
    for cost in range(5):
        model.bound(float(cost), 2.0)
        model.bound(float(cost), 2.5)
    assert [model.predict(float(cost)) is None for cost in range(5)] == [True] * 2 + [False] * 3


async def test_a_wave_of_alike_tasks_is_polled_once_per_task_but_two_scouts(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    jobs = [make_job(f"j{n}", images(1), images(2)) for n in range(10)]
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(concurrency=10))
    with anyio.fail_after(20):
        summary = await runner.run_all(jobs)
    assert (summary.succeeded, summary.failed) == (10, 0)
    # Two tasks are polled at once (running, eta 1 s) and again at the end each promised; the
    # eight others wait for those answers and are polled once, at the tightest promise.
    assert emu.stats().count("result") == 2 * 2 + 8


async def test_one_odd_slow_task_does_not_hold_its_kind_back(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    slow_running = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.RUNNING and event.job_id == "slow":
            slow_running.set()

    async def jobs() -> AsyncIterator[Job]:
        yield make_job("slow", images(1), images(2), "[[seconds:600]]")
        await slow_running.wait()  # "slow" has promised 600 s
        for n in range(4):
            yield make_job(f"fast{n}", images(1), images(2))

    seen: list[str] = []
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(concurrency=5), on_event=on_event)
    with anyio.fail_after(20):
        async with runner.run(jobs()) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome.job_id)
                if len(seen) == 4:
                    break  # "slow" stays submitted
    assert sorted(seen) == [f"fast{n}" for n in range(4)]
    # "slow" was polled once; "fast0" at once too (promising about 1 s) and at that end; the
    # other three once each, at the tightest promise: not at slow's 600 s.
    assert emu.stats().count("result") == 1 + 2 + 3
