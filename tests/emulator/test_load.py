"""The emulator stays responsive with 2,000 connections open at once."""

from __future__ import annotations

import resource
import socket

import aiohttp
import anyio
from emu_helpers import auth

from novita_async.emulator import Emulator, EmulatorConfig

CONNECTIONS = 2000


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def test_responsive_with_2000_concurrent_connections() -> None:
    # Client and server ends of every connection live in this process.
    _raise_fd_limit(2 * CONNECTIONS + 512)
    statuses: list[int] = []
    async with Emulator(EmulatorConfig(task_base_seconds=0)) as emu:
        url = emu.base_url + "/v3/async/task-result"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as crowd:

            async def wait_for_result(n: int) -> None:
                params = {"task_id": f"task-{n}"}
                async with crowd.get(url, params=params, headers=auth(emu)) as resp:
                    await resp.read()
                    statuses.append(resp.status)

            emu.faults.hold("result")  # every request stays open until released
            async with anyio.create_task_group() as tg:
                for n in range(CONNECTIONS):
                    tg.start_soon(wait_for_result, n)
                with anyio.fail_after(60):
                    await emu.wait_in_flight("result", CONNECTIONS)
                assert emu.stats().in_flight == {"result": CONNECTIONS}
                # All 2,000 are open at once; another client is still served.
                async with aiohttp.ClientSession() as other:
                    with anyio.fail_after(10):
                        async with other.get(emu.base_url + "/v3/model", headers=auth(emu)) as r:
                            assert r.status == 200
                            await r.read()
                assert statuses == []
                emu.faults.release("result")
        assert statuses == [404] * CONNECTIONS
        assert emu.stats().count("result", 404) == CONNECTIONS


async def test_port_option_sets_the_api_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Emulator(EmulatorConfig(port=port)) as emu:
        assert emu.base_url == f"http://127.0.0.1:{port}"
        ports = {emu.base_url, emu.assets_url, emu.images_origin}
        assert len(ports) == 3
