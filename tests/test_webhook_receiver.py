"""The webhook receiver over loopback HTTP: what it accepts, what it refuses, what it hands over.

Events are posted by the tests themselves, as the service (or a forger) would; the end-to-end
tests against the emulator's own deliveries are in ``tests/client/test_webhook_waits.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from aiohttp import web
from client.webhook_support import Served, event_body, served

from novita_async import (
    InvalidResponseError,
    PollPolicy,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    WebhookEvent,
    WebhookReceiver,
)
from novita_async._completion import wait_until_done
from novita_async.webhooks import MAX_BODY, EventType, WebhookStats, parse_event


@pytest.fixture
async def hook() -> AsyncIterator[Served]:
    async for running in served(WebhookReceiver()):
        yield running


def handed(receiver: WebhookReceiver, task_id: str) -> list[TaskResult]:
    """What the receiver hands a waiter of ``task_id``, subscribed as ``_completion`` does: the
    task's end at once if it came already, else once it comes."""
    got: list[TaskResult] = []
    receiver._subscribe(task_id, got.append)
    return got


# --- the event --------------------------------------------------------------------------------


def test_a_task_result_event_parses_into_the_same_result_as_polling() -> None:
    event = parse_event(event_body("t-1", audios=[]))
    assert event.kind is EventType.ASYNC_TASK_RESULT and event.is_task_result
    assert event.task_id == "t-1"
    assert event.result is not None
    assert event.result.status is TaskStatus.SUCCEED
    assert event.result.images[0].image_url_ttl == 3600  # lenient, as a task-result answer
    assert event.result.extra.seed == 42


def test_an_unknown_event_type_is_a_distinct_value_not_an_error() -> None:
    event = parse_event(json.dumps({"event_type": "ASYNC_TASK_PROGRESS", "payload": [1]}))
    assert event == WebhookEvent("ASYNC_TASK_PROGRESS")
    assert event.kind is EventType.UNKNOWN and not event.is_task_result
    assert event.task_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe{",
        b"[]",
        b'{"payload": {}}',
        b'{"event_type": 3}',
        b'{"event_type": "ASYNC_TASK_RESULT"}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"images": []}}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": null}}}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "t"}, "images": {}}}',
        b"[" * 100_000,
    ],
    ids=[
        "text",
        "bad-utf8",
        "list",
        "no-type",
        "type-not-str",
        "no-payload",
        "no-task",
        "null-id",
        "images-not-list",
        "deep",
    ],
)
def test_a_malformed_body_is_an_invalid_response(body: bytes) -> None:
    with pytest.raises(InvalidResponseError):
        parse_event(body)


# --- the secret path --------------------------------------------------------------------------


def test_the_token_is_random_long_and_redacted() -> None:
    first, second = WebhookReceiver(), WebhookReceiver(path_prefix="/hooks/novita")
    token = first.path.rsplit("/", 1)[1]
    assert first.path == f"/novita/{token}" and len(token) >= 22  # >= 128 bits
    assert second.path.startswith("/hooks/novita/") and second.path != first.path
    assert first.url("https://my.app/") == f"https://my.app/novita/{token}"
    assert token not in repr(first) and repr(first).endswith("expecting=0>")
    given = WebhookReceiver(token="k" * 40)
    assert given.path == "/novita/" + "k" * 40


@pytest.mark.parametrize(
    "options",
    [
        {"token": "short"},
        {"token": "x" * 30 + "/"},
        {"path_prefix": "novita"},
        {"path_prefix": "/novita/"},
        {"max_buffered": 0},
    ],
)
def test_bad_receiver_options_are_refused(options: dict[str, object]) -> None:
    from novita_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        WebhookReceiver(**options)  # type: ignore[arg-type]


async def test_a_wrong_token_or_another_path_under_the_prefix_is_404_and_counted(
    hook: Served,
) -> None:
    receiver = hook.receiver
    receiver.expect("t-1")
    good = receiver.path
    for path in ["/novita/" + "x" * 43, good + "/more", "/novita/", good[:-1]]:
        assert await hook.post(event_body("t-1"), path) == 404
    assert await hook.post(b"", good, method="GET") == 404
    assert receiver.stats() == WebhookStats(refused_path=5)
    assert handed(receiver, "t-1") == []  # nothing forged got through


async def test_an_event_for_a_task_nobody_expects_is_answered_2xx_and_ignored(
    hook: Served,
) -> None:
    receiver = hook.receiver
    receiver.expect("mine")
    assert await hook.post(event_body("someone-elses")) == 200
    assert receiver.stats() == WebhookStats(refused_task=1)
    assert receiver.stats().refused == 1
    # Expecting it afterwards does not resurrect the forged event.
    assert handed(receiver, "someone-elses") == []
    assert handed(receiver, "mine") == []


async def test_a_malformed_or_oversized_body_is_400_or_413(hook: Served) -> None:
    assert await hook.post(b"{") == 400
    assert await hook.post(b'{"event_type": "ASYNC_TASK_RESULT", "payload": 1}') == 400
    assert await hook.post(b" " * (MAX_BODY + 1)) == 413
    assert hook.receiver.stats() == WebhookStats(malformed=3)


async def test_an_unknown_event_type_is_answered_2xx_and_ignored(hook: Served) -> None:
    receiver = hook.receiver
    receiver.expect("t-1")
    assert await hook.post(event_body("t-1", event_type="ASYNC_TASK_PROGRESS")) == 200
    assert receiver.stats() == WebhookStats(unknown_types=1)
    assert receiver.expecting == 1 and handed(receiver, "t-1") == []


async def test_the_token_never_reaches_a_log_line(
    hook: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = hook.receiver
    receiver.expect("t-1")
    for body in (event_body("t-1"), event_body("t-1"), event_body("other"), b"{", b"[1]"):
        await hook.post(body)
    await hook.post(event_body("t-1"), receiver.path + "x")
    assert caplog.records  # refusals are logged...
    token = receiver.path.rsplit("/", 1)[1]
    assert token not in caplog.text  # ...without the path that holds the token
    assert token not in repr(receiver) and token not in repr(receiver.stats())


# --- the first event wins ---------------------------------------------------------------------


async def test_duplicates_are_counted_and_dropped_and_the_first_event_wins(hook: Served) -> None:
    receiver = hook.receiver
    receiver.expect("t-1")
    assert await hook.post(event_body("t-1")) == 200
    # The service's retry, then a contradicting event: the first one stands.
    assert await hook.post(event_body("t-1")) == 200
    assert await hook.post(event_body("t-1", "TASK_STATUS_FAILED", reason="late")) == 200
    [result] = handed(receiver, "t-1")
    assert result.status is TaskStatus.SUCCEED
    assert receiver.expecting == 0  # handed over: forgotten
    assert await hook.post(event_body("t-1")) == 200
    assert receiver.stats() == WebhookStats(accepted=1, duplicates=3)


async def test_a_late_event_after_the_owner_forgot_the_task_is_counted_and_dropped(
    hook: Served,
) -> None:
    receiver = hook.receiver
    receiver.expect("t-1")
    receiver.forget("t-1")  # polling found the end first
    assert await hook.post(event_body("t-1")) == 200
    assert receiver.stats() == WebhookStats(late=1)
    assert receiver.expecting == 0


async def test_out_of_order_events_each_reach_their_own_waiter(hook: Served) -> None:
    receiver = hook.receiver
    got: dict[str, TaskStatus] = {}

    async def never(task_id: str) -> TaskResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def wait(task_id: str) -> None:
        try:
            result = await wait_until_done(
                never, task_id, timeout=3600, policy=PollPolicy(), on_progress=None,
                events=receiver, first_poll=3600,
            )  # fmt: skip
        except TaskFailedError as exc:
            assert exc.task_id == task_id
            got[task_id] = TaskStatus.FAILED
        else:
            assert result.task_id == task_id
            got[task_id] = result.status

    for task_id in ("a", "b", "c", "d"):
        receiver.expect(task_id)
    # "d" ends before anyone waits for it; the others while their waiters wait.
    assert await hook.post(event_body("d", "TASK_STATUS_FAILED")) == 200
    async with anyio.create_task_group() as group:
        for task_id in ("a", "b", "c", "d"):
            group.start_soon(wait, task_id)
        await anyio.wait_all_tasks_blocked()
        for task_id, status in (("c", "TASK_STATUS_SUCCEED"), ("a", "TASK_STATUS_FAILED"),
                                ("b", "TASK_STATUS_SUCCEED")):  # fmt: skip
            assert await hook.post(event_body(task_id, status)) == 200
    assert got == {"a": TaskStatus.FAILED, "b": TaskStatus.SUCCEED, "c": TaskStatus.SUCCEED,
                   "d": TaskStatus.FAILED}  # fmt: skip
    assert receiver.stats() == WebhookStats(accepted=4)
    assert receiver.expecting == 0


async def test_an_event_that_is_not_an_end_does_not_take_the_tasks_place(hook: Served) -> None:
    receiver = hook.receiver
    receiver.expect("t-1")
    assert await hook.post(event_body("t-1", "TASK_STATUS_PROCESSING")) == 200
    assert await hook.post(event_body("t-1", "TASK_STATUS_SOMETHING_NEW")) == 200
    got = handed(receiver, "t-1")
    assert got == [] and receiver.expecting == 1
    assert await hook.post(event_body("t-1")) == 200
    assert [result.status for result in got] == [TaskStatus.SUCCEED]
    assert receiver.stats() == WebhookStats(accepted=1, not_final=2)


async def test_a_wait_that_ends_by_polling_forgets_the_task_and_its_event_comes_late(
    hook: Served,
) -> None:
    receiver = hook.receiver
    polled = parse_event(event_body("t-1")).result
    assert polled is not None

    async def answer(task_id: str) -> TaskResult:
        assert receiver.expecting == 1  # expected while the wait lasts
        return polled

    result = await wait_until_done(answer, "t-1", timeout=60, policy=PollPolicy(),
                                   on_progress=None, events=receiver)  # fmt: skip
    assert result is polled and receiver.expecting == 0
    assert await hook.post(event_body("t-1")) == 200
    assert receiver.stats() == WebhookStats(late=1)


# --- handing over -----------------------------------------------------------------------------


async def test_answers_come_at_once_while_the_consumer_is_stuck(hook: Served) -> None:
    receiver = hook.receiver
    release = anyio.Event()
    consumed: list[str | None] = []

    async def slow_consumer(feed: AsyncIterator[WebhookEvent]) -> None:
        async for event in feed:
            consumed.append(event.task_id)
            await release.wait()  # stuck on the first event until every answer came

    for task_id in ("a", "b", "c"):
        receiver.expect(task_id)
    async with anyio.create_task_group() as group:
        group.start_soon(slow_consumer, aiter(receiver))
        assert await hook.post(event_body("a")) == 200
        await anyio.wait_all_tasks_blocked()
        assert consumed == ["a"]
        assert await hook.post(event_body("b")) == 200
        assert await hook.post(event_body("c")) == 200
        assert consumed == ["a"]
        release.set()
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert consumed == ["a", "b", "c"]
    assert receiver.stats() == WebhookStats(accepted=3)


async def test_an_iteration_sees_the_events_its_waits_take_too(hook: Served) -> None:
    receiver = hook.receiver
    events = aiter(receiver)  # from now on every accepted event is iterated
    got = handed(receiver, "t-1")  # a wait for t-1; t-2 is only expected
    receiver.expect("t-2")
    assert await hook.post(event_body("t-1")) == 200
    assert await hook.post(event_body("t-2")) == 200
    assert [result.task_id for result in got] == ["t-1"]
    assert [(await anext(events)).task_id for _ in range(2)] == ["t-1", "t-2"]
    assert receiver.expecting == 0  # both handed over: forgotten


async def test_a_full_buffer_is_answered_503_and_the_services_retry_gets_through() -> None:
    receiver = WebhookReceiver(max_buffered=2)
    async for hook in served(receiver):
        events = aiter(receiver)
        for task_id in ("a", "b", "c"):
            receiver.expect(task_id)
        assert [await hook.post(event_body(t)) for t in "abc"] == [200, 200, 503]
        assert receiver.stats() == WebhookStats(accepted=2, busy=1)
        assert receiver.expecting == 1  # "c" still waits for its event
        assert (await anext(events)).task_id == "a"
        assert await hook.post(event_body("c")) == 200  # the retry, once there is room
        assert [(await anext(events)).task_id for _ in range(2)] == ["b", "c"]
        receiver.expect("d")
        assert await hook.post(event_body("d")) == 200  # read: room again
        assert receiver.stats() == WebhookStats(accepted=4, busy=1)


# --- mounting ---------------------------------------------------------------------------------


async def test_the_receiver_mounts_in_an_existing_app() -> None:
    receiver = WebhookReceiver(path_prefix="/hooks/novita")
    app = web.Application()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    app.add_subapp(receiver.path_prefix, receiver.app)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            hook = Served(receiver, base, http)
            receiver.expect("t-1")
            assert await hook.post(event_body("t-1"), receiver.url(base)[len(base) :]) == 200
            assert await hook.post(event_body("t-1"), "/hooks/novita/wrong-token") == 404
            async with http.get(base + "/") as answer:
                assert await answer.text() == "hello"
    finally:
        await runner.cleanup()
    [result] = handed(receiver, "t-1")
    assert result.task_id == "t-1"
    assert receiver.stats() == WebhookStats(accepted=1, refused_path=1)


def test_accept_is_framework_neutral() -> None:
    receiver = WebhookReceiver()
    token = receiver.path.rsplit("/", 1)[1]
    receiver.expect("t-1")
    assert receiver.accept("wrong", event_body("t-1")) == 404
    assert receiver.accept(token, b"{") == 400
    assert receiver.accept(token, event_body("t-1")) == 200
    assert receiver.stats() == WebhookStats(accepted=1, refused_path=1, malformed=1)
