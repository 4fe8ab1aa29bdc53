"""Webhook deliveries: a real aiohttp receiver on loopback gets the emulator's events, with faults
and retries; the moment each task ended."""

from __future__ import annotations

import argparse
import gc
import socket
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from emu_helpers import body, get_result, post_task, submit, upload

from novita_async import _spec
from novita_async._converter import structure
from novita_async._models import TaskResult, TaskStatus
from novita_async.emulator import Emulator, EmulatorConfig, WebhookFaultSpec
from novita_async.emulator._cli import add_arguments, config_from_args

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

STALL = 0
"""A scripted answer of the receiver: never answer (until the test ends)."""


class Receiver:
    """A webhook receiver on loopback: records every POST as it arrives, then answers with the
    next scripted status (200 once the script is used up)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], Any, float]] = []
        """(headers, JSON body, arrival on the event loop's clock), in arrival order."""
        self.answers: deque[int] = deque()
        self.url = ""
        self._arrived = anyio.Event()
        self.released = anyio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.json(), anyio.current_time()))
        self._arrived.set()
        self._arrived = anyio.Event()
        status = self.answers.popleft() if self.answers else 200
        if status == STALL:
            await self.released.wait()
            status = 200
        return web.Response(status=status, text="ok")

    async def wait_posts(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.posts) < count:
                await self._arrived.wait()

    @property
    def events(self) -> list[Any]:
        return [event for _, event, _ in self.posts]

    def task_ids(self) -> list[str]:
        return [event["payload"]["task"]["task_id"] for event in self.events]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{token}", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hook/secret"
    try:
        yield receiver
    finally:
        receiver.released.set()
        await runner.cleanup()


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, task_base_seconds=0, webhook_backoff_scale=0.001)


def hooked(face: str, url: str, **fields: Any) -> dict[str, Any]:
    return body(face, face, extra={"webhook": {"url": url}}, **fields)


async def settled(emu: Emulator, events: int) -> dict[str, int]:
    """The webhook counters once ``events`` events have been produced and none is pending."""
    with anyio.fail_after(10):
        stats = await emu.wait_stats(
            lambda s: s.webhooks["events"] >= events and s.webhooks["pending"] == 0
        )
    return stats.webhooks


async def test_a_task_with_a_webhook_gets_one_delivery_shaped_as_its_result(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    await receiver.wait_posts(1)
    counts = await settled(emu, 1)

    assert len(receiver.posts) == 1
    headers, event, _ = receiver.posts[0]
    assert set(event) == {"event_type", "payload"}
    assert event["event_type"] == "ASYNC_TASK_RESULT"
    payload = event["payload"]
    status, answer = await get_result(session, emu, task_id)
    assert status == 200
    assert set(payload) == set(answer) == {"task", "images", "videos", "audios", "extra"}
    assert payload["task"] == answer["task"]
    assert payload["extra"] == answer["extra"]
    result = structure(payload, TaskResult)
    assert (result.task_id, result.status) == (task_id, TaskStatus.SUCCEED)
    assert len(result.images) == 1
    async with session.get(payload["images"][0]["image_url"]) as resp:
        assert resp.status == 200
        assert await resp.read()

    assert "Authorization" not in headers
    assert headers["Content-Type"] == "application/json"
    assert counts == {
        "events": 1,
        "attempted": 1,
        "delivered": 1,
        "retries": 0,
        "timeouts": 0,
        "failed": 0,
        "dropped": 0,
        "duplicated": 0,
        "reordered": 0,
        "delayed": 0,
        "pending": 0,
    }
    per_task = {"attempted": 1, "delivered": 1, "retries": 0, "dropped": 0, "failed": 0}
    assert emu.webhook_counts() == {task_id: per_task}


async def test_every_task_gets_exactly_one_delivery_and_tasks_without_a_url_none(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    face = await upload(session, emu)
    hooked_ids = [await submit(session, emu, hooked(face, receiver.url, seed=n)) for n in range(12)]
    for n in range(3):
        await submit(session, emu, body(face, face, seed=100 + n))
    counts = await settled(emu, 12)
    with anyio.fail_after(10):
        for task_id in emu.task_ids():
            await emu.wait_task(task_id)
    assert sorted(receiver.task_ids()) == sorted(hooked_ids)
    assert (counts["events"], counts["delivered"]) == (12, 12)


async def test_a_failed_task_is_announced_too(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    face = await upload(session, emu)
    task_id = await submit(
        session, emu, hooked(face, receiver.url, prompt="a portrait [[fail:no face found]]")
    )
    await receiver.wait_posts(1)
    payload = receiver.events[0]["payload"]
    result = structure(payload, TaskResult)
    assert (result.task_id, result.status) == (task_id, TaskStatus.FAILED)
    assert result.task.reason == "no face found"
    assert payload["images"] == []


@pytest.mark.parametrize("status", [_spec.STATUS_SUCCEED, _spec.STATUS_FAILED])
async def test_test_mode_sends_a_simulated_event_without_a_task(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver, status: str
) -> None:
    face = await upload(session, emu)
    test_mode = {"enabled": True, "return_task_status": status}
    request = body(face, face, extra={"webhook": {"url": receiver.url, "test_mode": test_mode}})
    code, answer = await post_task(session, emu, request)
    assert code == 200
    await receiver.wait_posts(1)
    event = receiver.events[0]
    assert event["event_type"] == "ASYNC_TASK_RESULT"
    result = structure(event["payload"], TaskResult)
    assert (result.task_id, result.status.value) == (answer["task_id"], status)
    assert result.images == ()
    assert "Authorization" not in receiver.posts[0][0]
    stats = emu.stats()
    assert (stats.submissions, stats.tasks, emu.task_ids()) == (0, {}, [])
    assert (await get_result(session, emu, answer["task_id"]))[0] == 404


async def test_test_mode_disabled_runs_the_task(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    face = await upload(session, emu)
    webhook = {"url": receiver.url, "test_mode": {"enabled": False}}
    task_id = await submit(session, emu, body(face, face, extra={"webhook": webhook}))
    await receiver.wait_posts(1)
    assert receiver.task_ids() == [task_id]
    assert emu.stats().submissions == 1


@pytest.mark.parametrize(
    ("webhook", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "extra.webhook.url"),
        ({"url": "not a url"}, "extra.webhook.url"),
        ({"url": "http://x", "test_mode": {"enabled": "yes"}}, "extra.webhook.test_mode.enabled"),
        (
            {"url": "http://x", "test_mode": {"enabled": True, "return_task_status": "DONE"}},
            "extra.webhook.test_mode.return_task_status",
        ),
    ],
)
async def test_bad_webhooks_are_refused(
    emu: Emulator, session: aiohttp.ClientSession, webhook: dict[str, Any], field: str
) -> None:
    face = await upload(session, emu)
    status, answer = await post_task(session, emu, body(face, face, extra={"webhook": webhook}))
    assert (status, answer["metadata"]) == (400, {"field": field})
    assert emu.stats().webhooks["events"] == 0


async def test_a_receiver_answering_500_then_200_sees_retries(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.extend([500, 503])
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    counts = await settled(emu, 1)
    assert len(receiver.posts) == 3
    assert receiver.events[0] == receiver.events[2]  # the same event each time
    assert (counts["attempted"], counts["retries"], counts["delivered"]) == (3, 2, 1)
    assert counts["failed"] == 0
    assert emu.webhook_counts()[task_id] == {
        "attempted": 3,
        "delivered": 1,
        "retries": 2,
        "dropped": 0,
        "failed": 0,
    }


async def test_a_receiver_that_always_fails_is_given_up_after_five_retries(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.extend([500] * 10)
    face = await upload(session, emu)
    await submit(session, emu, hooked(face, receiver.url))
    counts = await settled(emu, 1)
    assert len(receiver.posts) == 6
    assert (counts["attempted"], counts["retries"], counts["delivered"]) == (6, 5, 0)
    assert counts["failed"] == 1


async def test_an_unreachable_receiver_is_retried_then_given_up(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as sock:  # a port just freed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    face = await upload(session, emu)
    await submit(session, emu, hooked(face, f"http://127.0.0.1:{port}/hook"))
    counts = await settled(emu, 1)
    assert (counts["attempted"], counts["failed"], counts["delivered"]) == (6, 1, 0)


@pytest.mark.emulator(webhook_timeout=0.05)
async def test_a_receiver_that_does_not_answer_in_time_times_out(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.extend([STALL, STALL])
    face = await upload(session, emu)
    await submit(session, emu, hooked(face, receiver.url))
    counts = await settled(emu, 1)
    assert len(receiver.posts) == 3
    assert (counts["timeouts"], counts["retries"], counts["delivered"]) == (2, 2, 1)


@pytest.mark.emulator(webhook_timeout=0.02)
async def test_a_receiver_that_never_answers_is_given_up(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.extend([STALL] * 6)
    face = await upload(session, emu)
    await submit(session, emu, hooked(face, receiver.url))
    counts = await settled(emu, 1)
    assert len(receiver.posts) == 6
    assert (counts["timeouts"], counts["failed"], counts["delivered"]) == (6, 1, 0)


async def test_drop_the_next_events(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.drop_next(2)
    assert emu.faults.webhooks.pending() == 2
    face = await upload(session, emu)
    dropped = [await submit(session, emu, hooked(face, receiver.url, seed=n)) for n in range(2)]
    kept = await submit(session, emu, hooked(face, receiver.url, seed=9))
    counts = await settled(emu, 3)
    assert receiver.task_ids() == [kept]
    assert (counts["dropped"], counts["attempted"], counts["delivered"]) == (2, 1, 1)
    for task_id in dropped:
        assert emu.webhook_counts()[task_id]["dropped"] == 1


async def test_drop_every_event_by_probability_over_http(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with session.post(
        emu.base_url + "/__emulator/faults/webhook", json={"spec": {"drop": 1.0}}
    ) as resp:
        assert resp.status == 200
    assert emu.faults.webhooks.get() == WebhookFaultSpec(drop=1.0)
    face = await upload(session, emu)
    for n in range(4):
        await submit(session, emu, hooked(face, receiver.url, seed=n))
    counts = await settled(emu, 4)
    assert (counts["dropped"], counts["attempted"], receiver.posts) == (4, 0, [])

    async with session.delete(emu.base_url + "/__emulator/faults") as resp:
        assert resp.status == 200
    kept = await submit(session, emu, hooked(face, receiver.url, seed=10))
    await receiver.wait_posts(1)
    assert receiver.task_ids() == [kept]


async def test_delay_holds_the_first_attempt_back(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.set(delay=0.2, jitter=0.1)
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    await receiver.wait_posts(1)
    ended = emu.task_ends(clock="emulator")[task_id]
    assert receiver.posts[0][2] - ended >= 0.2  # a lower bound the sleep guarantees
    assert (await settled(emu, 1))["delayed"] == 1


async def test_a_delayed_event_is_overtaken_by_a_later_one(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.script(["delay:3600"])
    face = await upload(session, emu)
    await submit(session, emu, hooked(face, receiver.url, seed=1))
    fast = await submit(session, emu, hooked(face, receiver.url, seed=2))
    with anyio.fail_after(10):
        stats = await emu.wait_stats(lambda s: s.webhooks["delivered"] == 1)
    assert receiver.task_ids() == [fast]
    assert (stats.webhooks["delayed"], stats.webhooks["pending"]) == (1, 1)


async def test_duplicate_sends_the_event_twice(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.script(["duplicate"])
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    counts = await settled(emu, 1)
    assert receiver.task_ids() == [task_id, task_id]
    assert receiver.events[0] == receiver.events[1]
    assert (counts["duplicated"], counts["attempted"], counts["delivered"]) == (1, 2, 2)


async def test_out_of_order_holds_an_event_until_the_next_one_is_sent(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.script(["out_of_order"])
    face = await upload(session, emu)
    first = await submit(session, emu, hooked(face, receiver.url, seed=1))
    with anyio.fail_after(10):
        await emu.wait_task(first)
    assert emu.stats().webhooks["reordered"] == 1
    second = await submit(session, emu, hooked(face, receiver.url, seed=2))
    counts = await settled(emu, 2)
    assert receiver.task_ids() == [second, first]
    assert (counts["delivered"], counts["reordered"]) == (2, 1)


async def test_an_event_held_out_of_order_is_sent_after_hold_seconds_without_a_next(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.faults.webhooks.set(out_of_order=1.0, hold_seconds=0.05)
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    await receiver.wait_posts(1)
    assert receiver.task_ids() == [task_id]


async def test_seeded_webhook_faults_are_reproducible(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    spec = WebhookFaultSpec(drop=0.5, duplicate=0.3)
    outcomes = []
    for _ in range(2):
        config = EmulatorConfig(seed=3, task_base_seconds=0, webhook_faults=spec)
        async with Emulator(config) as emu:
            face = await upload(session, emu)
            for n in range(8):
                await submit(session, emu, hooked(face, receiver.url, seed=n))
            counts = await settled(emu, 8)
            outcomes.append((counts["dropped"], counts["duplicated"]))
    assert outcomes[0] == outcomes[1]


async def test_task_ends_on_both_clocks_and_over_http(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    before, loop_before = time.time(), anyio.current_time()
    face = await upload(session, emu)
    ids = [await submit(session, emu, body(face, face, seed=n)) for n in range(3)]
    with anyio.fail_after(10):
        for task_id in ids:
            await emu.wait_task(task_id)
    unix, loop = emu.task_ends(), emu.task_ends(clock="emulator")
    assert set(unix) == set(loop) == set(ids)
    assert all(before <= moment <= time.time() for moment in unix.values())
    assert all(loop_before <= moment <= anyio.current_time() for moment in loop.values())
    async with session.get(emu.base_url + "/__emulator/task-ends") as resp:
        assert await resp.json() == unix
    async with session.get(emu.base_url + "/__emulator/task-ends?clock=emulator") as resp:
        assert await resp.json() == loop
    async with session.get(emu.base_url + "/__emulator/task-ends?clock=sundial") as resp:
        assert resp.status == 400


async def test_webhook_counters_over_http(
    emu: Emulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.append(500)
    async with session.post(
        emu.base_url + "/__emulator/faults/webhook", json={"script": ["duplicate", "ok"]}
    ) as resp:
        assert (await resp.json())["pending"] == 2
    async with session.post(
        emu.base_url + "/__emulator/faults/webhook", json={"script": ["sideways"]}
    ) as resp:
        assert resp.status == 400
    face = await upload(session, emu)
    task_id = await submit(session, emu, hooked(face, receiver.url))
    await settled(emu, 1)
    async with session.get(emu.base_url + "/__emulator/webhooks") as resp:
        per_task = await resp.json()
    assert per_task == emu.webhook_counts()
    assert per_task[task_id] == {
        "attempted": 3,
        "delivered": 2,
        "retries": 1,
        "dropped": 0,
        "failed": 0,
    }
    async with session.get(emu.base_url + "/__emulator/stats") as resp:
        assert (await resp.json())["webhooks"]["duplicated"] == 1
    emu.reset_stats()
    assert emu.stats().webhooks["attempted"] == 0
    assert emu.webhook_counts() == {}


def test_webhook_options_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args([
        "--webhook-fault", "drop=0.1,duplicate=0.2,out_of_order=0.3,delay=1,jitter=0.5",
        "--webhook-script", "drop,duplicate,out_of_order,delay:2,ok",
        "--webhook-timeout", "2.5",
        "--webhook-backoff-scale", "0.01",
    ])  # fmt: skip
    config = config_from_args(ns)
    assert config.webhook_faults == WebhookFaultSpec(
        drop=0.1, duplicate=0.2, out_of_order=0.3, delay=1, jitter=0.5
    )
    assert config.webhook_script == ("drop", "duplicate", "out_of_order", "delay:2", "ok")
    assert (config.webhook_timeout, config.webhook_backoff_scale) == (2.5, 0.01)
    for bad in (["--webhook-fault", "drop=2"], ["--webhook-fault", "lose=1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError):
        config_from_args(parser.parse_args(["--webhook-script", "drop,sideways"]))


async def test_shutdown_with_deliveries_pending_leaves_no_warnings(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers.extend([STALL, 500])
    config = EmulatorConfig(seed=1, task_base_seconds=0, webhook_backoff_scale=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Emulator(config) as emu:
            emu.faults.webhooks.script(["ok", "ok", "delay:3600", "out_of_order"])
            face = await upload(session, emu)
            for n in range(4):
                await submit(session, emu, hooked(face, receiver.url, seed=n))
            # One attempt stalled, one waiting to retry, one delayed, one held.
            with anyio.fail_after(10):
                await emu.wait_stats(
                    lambda s: s.webhooks["attempted"] == 2 and s.webhooks["events"] == 4
                )
                await receiver.wait_posts(2)
            assert emu.stats().webhooks["pending"] == 4
        gc.collect()
    assert [str(w.message) for w in caught] == []
