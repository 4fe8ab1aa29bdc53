"""One computation per key at a time, shared by the callers that ask meanwhile."""

from __future__ import annotations

import anyio
import pytest

from novita_async._singleflight import SingleFlight


class Source:
    """A computation the test releases by hand, counting how often it was started."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = anyio.Event()

    async def compute(self, key: str) -> str:
        self.calls.append(key)
        await self.release.wait()
        return key.upper()


async def test_callers_that_ask_at_once_share_one_call() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    source = Source()
    results: list[str] = []

    async def ask() -> None:
        results.append(await flights.get("a", lambda: source.compute("a")))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        source.release.set()
    assert source.calls == ["a"]
    assert results == ["A"] * 20
    assert len(flights) == 0  # max_size 0: nothing is remembered afterwards


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flights: SingleFlight[str, str] = SingleFlight(10)
    release = anyio.Event()
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise OSError("disk gone")

    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await flights.get("a", failing)
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert calls == 1
    assert len(errors) == 5 and all(str(e) == "disk gone" for e in errors)

    async def working() -> str:
        return "fine"

    assert await flights.get("a", working) == "fine"  # the next caller computes again
    assert len(flights) == 1


async def test_a_cancelled_computing_caller_hands_over_to_a_waiter() -> None:
    flights: SingleFlight[str, str] = SingleFlight(10)
    source = Source()
    results: list[str] = []
    leader = anyio.CancelScope()

    async def ask() -> None:
        results.append(await flights.get("a", lambda: source.compute("a")))

    async def lead() -> None:
        with leader:
            await ask()

    async with anyio.create_task_group() as group:
        group.start_soon(lead)
        await anyio.wait_all_tasks_blocked()  # the leader computes...
        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()  # ...and the second caller waits for it
        assert source.calls == ["a"]
        leader.cancel()
        await anyio.wait_all_tasks_blocked()
        assert source.calls == ["a", "a"]  # the waiter found the key free and computes
        source.release.set()
    assert results == ["A"]


async def test_a_cancelled_caller_alone_leaves_the_key_free() -> None:
    flights: SingleFlight[str, str] = SingleFlight(10)
    source = Source()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await flights.get("a", lambda: source.compute("a"))
    source.release.set()
    assert await flights.get("a", lambda: source.compute("a")) == "A"
    assert source.calls == ["a", "a"]


async def test_results_are_kept_up_to_the_bound_least_recently_used_dropped() -> None:
    flights: SingleFlight[str, str] = SingleFlight(2)
    source = Source()
    source.release.set()

    async def get(key: str) -> str:
        return await flights.get(key, lambda: source.compute(key))

    for key in ("a", "b", "a", "c"):  # "a" used again just before "c" comes: "b" goes
        await get(key)
    assert source.calls == ["a", "b", "c"]
    assert len(flights) == 2
    await get("a")
    await get("b")
    assert source.calls == ["a", "b", "c", "b"]


async def test_the_bound_can_weigh_each_result() -> None:
    flights: SingleFlight[str, bytes] = SingleFlight(10, size_of=len)
    computed: list[str] = []

    async def get(key: str, size: int) -> bytes:
        async def compute() -> bytes:
            computed.append(key)
            return b"x" * size

        return await flights.get(key, compute)

    await get("a", 4)
    await get("b", 4)
    await get("c", 4)  # 12 bytes > 10: "a" goes
    assert len(flights) == 2
    await get("big", 11)  # larger than the bound alone: not kept, and it clears the rest
    assert len(flights) == 0
    await get("b", 4)
    assert computed == ["a", "b", "c", "big", "b"]


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        SingleFlight(-1)
