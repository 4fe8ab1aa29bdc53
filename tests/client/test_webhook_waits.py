"""``wait_for_task(events=receiver)``: the task's webhook event races the polling.

Some events are posted by the tests (as the service would) to time them exactly; the others are
the emulator's own deliveries. An emulator task of 0 seconds may announce its end before its
submitter has read its id; where a test needs the event after ``expect``, the event is scripted
``out_of_order`` (held until the next event sent has had its answer) and a webhook test-mode
submission sends that next event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import attrs
import pytest

from novita_async import (
    Extra,
    InstantIDRequest,
    NovitaClient,
    PollPolicy,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    ValidationError,
    Webhook,
    WebhookReceiver,
    WebhookTestMode,
)
from novita_async.emulator import Emulator
from novita_async.webhooks import WebhookStats

from .conftest import FAST_POLL
from .webhook_support import Served, event_body, served

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

# Once the task says it runs, the next poll would come only a minute later.
SLOW_POLL = PollPolicy(min_delay=60, max_delay=60)


@pytest.fixture
async def hook() -> AsyncIterator[Served]:
    async for running in served(WebhookReceiver()):
        yield running


@attrs.frozen
class Submitter:
    client: NovitaClient
    asset: str
    url: str

    async def submit(self, *, test_status: str | None = None) -> str:
        mode = None if test_status is None else WebhookTestMode(True, test_status)
        request = InstantIDRequest(
            prompt="a portrait", face_image_assets_ids=[self.asset],
            ref_image_assets_ids=[self.asset], width=512, height=512,
            extra=Extra(webhook=Webhook(url=self.url, test_mode=mode)),
        )  # fmt: skip
        return await self.client.submit_instant_id(request)


@pytest.fixture
async def submitter(client: NovitaClient, face_png: Path, hook: Served) -> Submitter:
    asset = await client.upload_asset(face_png)
    return Submitter(client, asset, hook.receiver.url(hook.base))


def gets(emu: Emulator) -> int:
    return emu.stats().count("result")


# --- events posted by the test ----------------------------------------------------------------


@pytest.mark.emulator(task_base_seconds=3600)
async def test_an_event_in_time_ends_the_wait_without_a_poll(
    emu: Emulator, client: NovitaClient, submitter: Submitter, hook: Served
) -> None:
    task_id = await submitter.submit()
    hook.receiver.expect(task_id)  # as its owner does right after submitting
    assert await hook.post(event_body(task_id)) == 200
    result = await client.wait_for_task(task_id, events=hook.receiver, event_grace=3600)
    assert result.status is TaskStatus.SUCCEED and result.images
    assert gets(emu) == 0
    assert hook.receiver.expecting == 0


@pytest.mark.emulator(task_base_seconds=3600)
async def test_an_event_after_the_first_poll_ends_the_wait_at_once(
    emu: Emulator, client: NovitaClient, submitter: Submitter, hook: Served
) -> None:
    task_id = await submitter.submit()
    seen: list[TaskStatus] = []

    async def on_progress(result: TaskResult) -> None:
        seen.append(result.status)
        if len(seen) == 1:  # the first poll found it running: now the event comes
            assert await hook.post(event_body(task_id)) == 200

    result = await client.wait_for_task(
        task_id, poll=SLOW_POLL, on_progress=on_progress, events=hook.receiver
    )
    assert result.status is TaskStatus.SUCCEED
    assert not seen[0].is_final and seen[1:] == [TaskStatus.SUCCEED]  # the event's result
    assert gets(emu) == 1
    assert hook.receiver.stats() == WebhookStats(accepted=1)


@pytest.mark.emulator(task_base_seconds=3600)
async def test_a_failure_by_event_raises_task_failed_as_polling_does(
    emu: Emulator, client: NovitaClient, submitter: Submitter, hook: Served
) -> None:
    task_id = await submitter.submit()
    hook.receiver.expect(task_id)
    body = event_body(task_id, "TASK_STATUS_FAILED", reason="face not detected")
    assert await hook.post(body) == 200
    with pytest.raises(TaskFailedError) as caught:
        await client.wait_for_task(task_id, events=hook.receiver, event_grace=3600)
    assert caught.value.task_id == task_id
    assert caught.value.task_reason == "face not detected"
    assert gets(emu) == 0
    assert hook.receiver.expecting == 0


@pytest.mark.emulator(task_base_seconds=0.05)
async def test_no_event_at_all_falls_back_to_polling(
    emu: Emulator, client: NovitaClient, face_png: Path, hook: Served
) -> None:
    asset = await client.upload_asset(face_png)
    task_id = await client.submit_instant_id(
        InstantIDRequest(prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset])
    )  # no webhook asked for
    result = await client.wait_for_task(
        task_id, poll=FAST_POLL, events=hook.receiver, event_grace=0.01
    )
    assert result.status is TaskStatus.SUCCEED
    assert gets(emu) >= 1
    assert hook.receiver.expecting == 0  # forgotten when the wait ended


async def test_event_grace_must_be_a_number_at_least_zero(
    client: NovitaClient, hook: Served
) -> None:
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValidationError):
            await client.wait_for_task("t", events=hook.receiver, event_grace=bad)  # type: ignore[arg-type]
    assert hook.receiver.expecting == 0


# --- the emulator's deliveries ----------------------------------------------------------------


@pytest.mark.emulator(task_base_seconds=0)
@pytest.mark.parametrize("fails", [False, True], ids=["succeeded", "failed"])
async def test_the_emulators_event_ends_the_wait_without_a_poll(
    emu: Emulator,
    client: NovitaClient,
    submitter: Submitter,
    hook: Served,
    fails: bool,
    tmp_path: Path,
) -> None:
    if fails:
        emu.faults.fail_next_tasks(1, reason="NSFW content detected")
    emu.faults.webhooks.script(["out_of_order"])
    task_id = await submitter.submit()
    hook.receiver.expect(task_id)
    await submitter.submit(test_status="TASK_STATUS_SUCCEED")  # its event lets the held one go
    if fails:
        with pytest.raises(TaskFailedError) as caught:
            await client.wait_for_task(task_id, events=hook.receiver, event_grace=3600)
        assert caught.value.task_reason == "NSFW content detected"
    else:
        result = await client.wait_for_task(task_id, events=hook.receiver, event_grace=3600)
        # The event's image URLs are as good as a poll's.
        assert [p.name for p in await client.download_images(result, tmp_path)] == ["0.png"]
    assert gets(emu) == 0
    # The test-mode event's task id was never expected.
    assert hook.receiver.stats() == WebhookStats(accepted=1, refused_task=1)


@pytest.mark.emulator(task_base_seconds=0.02)
async def test_a_dropped_event_costs_polls_not_the_task(
    emu: Emulator, client: NovitaClient, submitter: Submitter, hook: Served
) -> None:
    emu.faults.webhooks.drop_next(1)
    task_id = await submitter.submit()
    result = await client.wait_for_task(
        task_id, poll=FAST_POLL, events=hook.receiver, event_grace=0.05
    )
    assert result.status is TaskStatus.SUCCEED
    assert gets(emu) >= 1
    assert emu.stats().webhooks["dropped"] == 1
    assert hook.receiver.stats().accepted == 0


@pytest.mark.emulator(task_base_seconds=0.1, task_jitter=0.5, webhook_backoff_scale=0.01)
async def test_many_tasks_with_duplicate_late_reordered_and_dropped_events_all_end(
    emu: Emulator, make_client: Callable[..., NovitaClient], face_png: Path, hook: Served
) -> None:
    emu.faults.webhooks.set(drop=0.2, duplicate=0.4, out_of_order=0.3, delay=0.02, jitter=0.05)
    results: dict[str, TaskResult] = {}
    async with make_client() as client:
        submitter = Submitter(client, await client.upload_asset(face_png),
                              hook.receiver.url(hook.base))  # fmt: skip

        async def one() -> None:
            task_id = await submitter.submit()
            results[task_id] = await client.wait_for_task(
                task_id, poll=FAST_POLL, events=hook.receiver, event_grace=0.5, timeout=60
            )

        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(one)
    assert len(results) == 16
    assert all(r.status is TaskStatus.SUCCEED and r.task_id == t for t, r in results.items())
    # Every delivery the emulator made was answered 2xx and counted once by the receiver.
    final = await emu.wait_stats(lambda s: s.webhooks["pending"] == 0)
    stats = hook.receiver.stats()
    assert final.webhooks["delivered"] == final.webhooks["attempted"]
    assert (
        stats.accepted + stats.duplicates + stats.late + stats.refused_task
        == (final.webhooks["delivered"])
    )
    assert (stats.refused_path, stats.malformed, stats.busy) == (0, 0, 0)
    assert hook.receiver.expecting == 0


@pytest.mark.emulator(task_base_seconds=0, webhook_backoff_scale=0.5)
async def test_a_busy_receiver_answers_503_and_the_emulators_retry_gets_through(
    emu: Emulator, submitter: Submitter
) -> None:
    receiver = WebhookReceiver(max_buffered=1)
    async for hook in served(receiver):
        events = aiter(receiver)
        url = receiver.url(hook.base)
        local = attrs.evolve(submitter, url=url)
        emu.faults.webhooks.script(["out_of_order", "out_of_order"])
        first, second = await local.submit(), await local.submit()
        receiver.expect(first)
        receiver.expect(second)
        await local.submit(test_status="TASK_STATUS_SUCCEED")  # lets both held events go
        # One of the two fills the buffer, the other is answered 503 and retried.
        await emu.wait_stats(lambda s: s.webhooks["retries"] >= 1)
        got = {(await anext(events)).task_id, (await anext(events)).task_id}
        assert got == {first, second}
    stats = receiver.stats()
    assert stats.accepted == 2 and stats.busy >= 1
    assert emu.stats().webhooks["failed"] == 0
