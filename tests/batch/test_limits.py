"""The run gate: a 429 or an outage pauses everyone, a stop stops everyone (no server)."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import APIConnectionError, AuthenticationError, OutageError
from novita_async.batch._pacing import RunGate, RunStopped

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

# A bad rate is refused where it is set, by BatchOptions (tests/batch/test_options.py).


async def test_a_429_closes_the_gate_for_everyone_until_retry_after() -> None:
    gate = RunGate()
    await gate.wait()  # open
    gate.rate_limited(0.2)
    closed_at = anyio.current_time()
    admitted: list[float] = []

    async def submitter() -> None:
        await gate.wait()
        admitted.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(submitter)
    assert len(admitted) == 3
    assert all(t >= closed_at + 0.2 for t in admitted)
    assert gate.paused_for == 0.0


@given(st.integers(min_value=1, max_value=12))
def test_backoff_without_retry_after_grows_and_is_capped(consecutive: int) -> None:
    async def main() -> list[float]:
        gate = RunGate(rand=random.Random(1))
        return [gate.rate_limited(None) for _ in range(consecutive)]

    pauses = anyio.run(main)
    for n, pause in enumerate(pauses, start=1):
        ceiling = min(60.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= pause <= ceiling


async def test_a_success_resets_the_backoff() -> None:
    gate = RunGate(rand=random.Random(1))
    for _ in range(5):
        gate.rate_limited(None)
    gate.answered()
    assert gate.rate_limited(None) <= 1.0


async def test_retry_after_is_honoured_only_up_to_the_cap_and_the_pause_is_announced() -> None:
    said: list[str] = []
    gate = RunGate(retry_after_cap=0.05, on_pause=lambda m, _: said.append(m))
    assert gate.rate_limited(86400.0) == 0.05
    assert said == [
        "submissions paused for 0.1s: rate limited on instant-id (429, Retry-After 86400s, "
        "capped at 0.05s)"
    ]
    await gate.wait()  # the cap, not a day
    assert gate.paused_for == 0.0


async def test_an_outage_pauses_every_step_once_per_round_and_ends_at_the_next_answer() -> None:
    said: list[str] = []
    gate = RunGate(on_pause=lambda m, _: said.append(m), rand=random.Random(1))
    refused = APIConnectionError("cannot connect")
    gate.unreachable(refused)
    first = gate.paused_for
    assert 0.5 <= first <= 1.0
    gate.unreachable(refused)  # sent before the pause began: the same round
    assert gate.paused_for <= first
    assert len(said) == 1 and said[0].startswith("paused: the API has been unreachable for 0s")
    assert "(CONNECTION_ERROR); next try in" in said[0]
    await gate.wait(submission=False)
    gate.unreachable(refused)  # a new round: a longer pause
    assert 1.0 <= gate.paused_for <= 2.0
    gate.answered()
    assert said[-1].startswith("the API answers again after")
    gate.unreachable(refused)  # a new outage starts from the first round again
    assert gate.paused_for <= 1.0


async def test_an_outage_longer_than_the_budget_stops_the_run() -> None:
    gate = RunGate(max_outage=0.0)
    refused = APIConnectionError("cannot connect")
    gate.unreachable(refused)
    assert gate.stopped is None
    await anyio.sleep(0.01)
    gate.unreachable(refused)
    assert isinstance(gate.stopped, OutageError)
    assert gate.stopped.reason == "OUTAGE"
    with pytest.raises(RunStopped):
        await gate.wait()


async def test_a_stop_wakes_every_waiter_and_the_first_cause_stands() -> None:
    gate = RunGate()
    gate.rate_limited(3600.0)  # capped at 60 s: the waiters would wait a minute
    stopped: list[str] = []

    async def submitter() -> None:
        try:
            await gate.wait()
        except RunStopped:
            stopped.append("stopped")

    key = AuthenticationError(401, reason="INVALID_API_KEY")
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(submitter)
        await anyio.wait_all_tasks_blocked()
        gate.stop(key)
        gate.stop(APIConnectionError("later"))
    assert stopped == ["stopped"] * 3
    assert gate.stopped is key
