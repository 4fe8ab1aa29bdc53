"""Unit tests of the tests' own virtual clock (``support.VirtualTimeLoop``, private to the suite):
timers fire in order without real waits, and neither a socket nor a thread at work is jumped
over."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest
from aiohttp import web
from support import VirtualTimeLoop

pytestmark = pytest.mark.virtual_time


async def test_timers_fire_in_their_order_and_take_no_real_time() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    fired: list[tuple[str, float]] = []
    start, real = anyio.current_time(), time.monotonic()

    async def after(name: str, seconds: float) -> None:
        await anyio.sleep(seconds)
        fired.append((name, anyio.current_time() - start))

    async with anyio.create_task_group() as tg:
        tg.start_soon(after, "day", 86_400.0)
        tg.start_soon(after, "hour", 3_600.0)
        tg.start_soon(after, "second", 1.0)
    assert [name for name, _ in fired] == ["second", "hour", "day"]
    assert [round(at) for _, at in fired] == [1, 3_600, 86_400]
    assert time.monotonic() - real < 60  # a real day would have hit pytest-timeout long before


async def test_a_request_to_an_in_loop_server_beats_a_pending_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await anyio.sleep(30)  # virtual: the answer comes 30 s later on the loop's clock
        return web.Response(text="late but in time")

    app = web.Application()
    app.router.add_get("/", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        start = anyio.current_time()
        with anyio.fail_after(31):  # the jump must stop at the server's timer, not this one
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                async for chunk in stream:
                    answer += chunk
        assert answer.endswith(b"late but in time")
        assert 30 <= anyio.current_time() - start < 31
    finally:
        await runner.cleanup()


async def test_a_thread_at_work_is_waited_for_in_real_time() -> None:
    def work() -> str:
        time.sleep(0.2)  # real work in a thread: the clock must not jump past the timeout
        return "done"

    start = anyio.current_time()
    with anyio.fail_after(5):
        assert await anyio.to_thread.run_sync(work) == "done"
        assert await asyncio.get_running_loop().run_in_executor(None, work) == "done"
    assert anyio.current_time() == start  # work takes no virtual time
