"""The gate paces each endpoint on its own: a 429 pauses that endpoint's submissions only, and a
task's cap (``task_rates``, images a minute) is kept over a sliding minute, as the service counts.
On the virtual clock: the waits are read off the clock, not timed."""

from __future__ import annotations

import anyio
import pytest

from novita_async.batch._pacing import RatePermits, RunGate, RunStopped

pytestmark = pytest.mark.virtual_time


async def test_a_429_pauses_its_endpoint_and_leaves_the_others_open() -> None:
    said: list[str] = []
    gate = RunGate(on_pause=lambda message, _: said.append(message))
    pause = gate.rate_limited(30.0, "txt2img")
    assert pause == 30.0
    assert said == ["submissions paused for 30.0s: rate limited on txt2img (429, Retry-After 30s)"]
    assert gate.ready_in("txt2img") == 30.0
    assert gate.ready_in("img2img") == 0.0 and gate.paused_for == 0.0  # instant-id's: open
    began = anyio.current_time()
    await gate.wait(endpoint="img2img")
    assert anyio.current_time() == began  # not held at all
    await gate.wait(endpoint="txt2img")
    assert anyio.current_time() - began == pytest.approx(30.0)


async def test_429s_in_a_row_back_off_per_endpoint() -> None:
    gate = RunGate(retry_after_cap=60.0)
    first = gate.rate_limited(None, "txt2img")
    second = gate.rate_limited(None, "txt2img")
    other = gate.rate_limited(None, "upscale")  # its own first round
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0 and 0.5 <= other <= 1.0


async def test_the_shared_permits_pause_one_endpoint_for_every_runner() -> None:
    permits = RatePermits(None)
    one, other = RunGate(permits=permits), RunGate(permits=permits)
    one.rate_limited(10.0, "inpainting")
    began = anyio.current_time()
    await other.wait(endpoint="img2img")
    assert anyio.current_time() == began
    await other.wait(endpoint="inpainting")  # the other runner's gate knew nothing itself
    assert anyio.current_time() - began == pytest.approx(10.0)
    assert permits.counts() == {"granted": 2, "pauses": 1}


async def test_an_until_ready_waiter_holds_nothing_and_sees_the_stop() -> None:
    gate = RunGate()
    gate.rate_limited(60.0, "txt2img")
    began = anyio.current_time()

    async with anyio.create_task_group() as tasks:

        async def stop_soon() -> None:
            await anyio.sleep(1.0)
            gate.stop(RuntimeError("stop"))

        tasks.start_soon(stop_soon)
        with pytest.raises(RunStopped):
            await gate.until_ready("txt2img")
    assert anyio.current_time() - began == pytest.approx(1.0)  # the stop woke it, not the pause


async def test_a_cap_takes_images_over_a_sliding_minute() -> None:
    gate = RunGate(caps={"txt2img": 4})
    began = anyio.current_time()
    times = []
    for images in (2, 2, 1, 3, 4):
        await gate.wait(endpoint="txt2img", images=images)
        times.append(anyio.current_time() - began)
    # 2 + 2 at once; the 1 when the first 2 leave the (2% longer) minute, the 3 when the second
    # 2 do, and the 4 when the window is empty of the 1 and the 3.
    assert times == pytest.approx([0.0, 0.0, 61.2, 61.2, 122.4])
    await gate.wait(endpoint="img2img", images=8)  # uncapped
    assert anyio.current_time() - began == pytest.approx(122.4)


async def test_a_task_of_more_images_than_the_cap_goes_alone() -> None:
    gate = RunGate(caps={"upscale": 2})
    began = anyio.current_time()
    await gate.wait(endpoint="upscale", images=5)
    await gate.wait(endpoint="upscale", images=5)
    assert anyio.current_time() - began == pytest.approx(61.2)
