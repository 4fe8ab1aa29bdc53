"""Starting and stopping the emulator: clean close with work in flight, and on cancellation."""

from __future__ import annotations

import aiohttp
import anyio
import pytest
from emu_helpers import auth, body, submit, upload

from novita_async import _spec
from novita_async.emulator import Emulator, EmulatorConfig, FaultSpec

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time


async def test_urls_need_a_running_emulator() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    async with emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert repr(emu) == f"<Emulator {emu.base_url}>"
    with pytest.raises(RuntimeError):
        _ = emu.assets_url


async def test_closes_cleanly_with_tasks_processing_and_requests_in_flight(
    session: aiohttp.ClientSession,
) -> None:
    ended: list[str] = []

    async def call(url: str, headers: dict[str, str]) -> None:
        try:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass  # a delayed call may be cut off by the shutdown
        ended.append(url)

    config = EmulatorConfig(task_base_seconds=3600)
    with anyio.fail_after(20):
        # The task group outlives the emulator: the calls must end once it has closed.
        async with anyio.create_task_group() as tg, Emulator(config) as emu:
            face = await upload(session, emu)
            task_id = await submit(session, emu, body(face, face))
            await emu.wait_task(task_id, _spec.STATUS_PROCESSING)
            emu.faults.hold("models")
            emu.faults.set("result", FaultSpec(latency=3600))
            tg.start_soon(call, emu.base_url + "/v3/model", auth(emu))
            result_url = emu.base_url + f"/v3/async/task-result?task_id={task_id}"
            tg.start_soon(call, result_url, auth(emu))
            with anyio.fail_after(5):
                await emu.wait_in_flight("models")
                await emu.wait_in_flight("result")
    assert len(ended) == 2


async def test_cancelling_the_owner_closes_the_emulator() -> None:
    with anyio.move_on_after(0.1) as scope:
        async with Emulator(EmulatorConfig(task_base_seconds=3600)) as emu:
            base_url = emu.base_url
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(base_url + "/__emulator/stats"):
                pass


async def test_an_emulator_cannot_be_entered_twice() -> None:
    async with Emulator() as emu:
        with pytest.raises(RuntimeError):
            await emu.__aenter__()
