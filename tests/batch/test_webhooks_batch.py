"""A batch run that learns of each task's end by webhook; polling only catches the lost events
(issue "Completion by webhook")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from novita_async import ConfigurationError, NovitaClient
from novita_async.batch import BatchOptions, BatchRunner, Job
from novita_async.emulator import Emulator

from .conftest import make_job

# Tasks that take a while, so each event comes well after its submission was answered.
pytestmark = [pytest.mark.emulator(task_base_seconds=0.3), pytest.mark.virtual_time]


def jobs_for(images: Callable[[int], Path], count: int) -> list[Job]:
    return [make_job(f"j{n}", images(1), images(2)) for n in range(count)]


async def test_tasks_end_by_webhook_with_two_requests_each(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(webhook_listen="127.0.0.1:0"))
    summary = await runner.run_all(jobs_for(images, 12))
    assert (summary.succeeded, summary.failed) == (12, 0)
    stats = emu.stats()
    assert stats.webhooks["delivered"] == 12
    assert stats.count("result") == 0  # every end came by webhook: no poll at all
    assert stats.count("submit") + stats.count("image") == 24


async def test_a_lost_event_costs_one_poll_never_a_stuck_job(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    emu.faults.webhooks.drop_next(3)
    emu.faults.webhooks.set(duplicate=0.5)
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(webhook_listen="127.0.0.1:0"))
    summary = await runner.run_all(jobs_for(images, 10))
    assert (summary.succeeded, summary.failed) == (10, 0)
    stats = emu.stats()
    assert stats.webhooks["dropped"] == 3
    assert stats.count("result") == 3  # one poll for each task whose event never came
    assert stats.submissions == 10 and stats.duplicate_submissions == 0


async def test_a_resumed_run_with_webhooks_follows_the_earlier_tasks(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = jobs_for(images, 4)
    first = BatchRunner(client, out, BatchOptions(webhook_listen="127.0.0.1:0"))
    async with first.run(jobs) as outcomes:
        async for _ in outcomes:
            break  # leave after one: the other tasks exist, their webhooks go nowhere now
    again = await BatchRunner(client, out, BatchOptions(webhook_listen="127.0.0.1:0")).run_all(jobs)
    assert again.succeeded + again.replayed >= 4 and again.failed == 0
    assert emu.stats().submissions == 4 and emu.stats().duplicate_submissions == 0


def test_a_webhook_url_without_a_listener_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="webhook_url needs webhook_listen"):
        BatchOptions(webhook_url="https://example.test/hooks")
    with pytest.raises(ConfigurationError, match="webhook_listen must be HOST:PORT"):
        BatchOptions(webhook_listen="no-port")
