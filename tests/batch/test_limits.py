"""The submission gate: a 429 pauses every submitter (no server)."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import ConfigurationError
from novita_async.batch._limits import SubmitGate


@pytest.mark.parametrize("rate", [0, -1, True, "5"])
def test_bad_rates_are_refused(rate: object) -> None:
    with pytest.raises(ConfigurationError):
        SubmitGate(rate)  # type: ignore[arg-type]


async def test_a_429_closes_the_gate_for_everyone_until_retry_after() -> None:
    gate = SubmitGate()
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
        gate = SubmitGate(rand=random.Random(1))
        return [gate.rate_limited(None) for _ in range(consecutive)]

    pauses = anyio.run(main)
    for n, pause in enumerate(pauses, start=1):
        ceiling = min(60.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= pause <= ceiling


async def test_a_success_resets_the_backoff() -> None:
    gate = SubmitGate(rand=random.Random(1))
    for _ in range(5):
        gate.rate_limited(None)
    gate.succeeded()
    assert gate.rate_limited(None) <= 1.0
