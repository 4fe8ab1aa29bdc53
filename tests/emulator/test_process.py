"""The emulator as a process: python -m novita_async.emulator."""

from __future__ import annotations

import signal
import socket
import sys

import aiohttp
import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream


async def _read_settings(process: Process, count: int) -> dict[str, str]:
    assert process.stdout is not None
    settings: dict[str, str] = {}
    buffer = ""
    with anyio.fail_after(20):
        async for text in TextReceiveStream(process.stdout):
            buffer += text
            *lines, buffer = buffer.split("\n")
            for line in lines:
                name, _, value = line.partition("=")
                settings[name] = value
            if len(settings) >= count:
                return settings
    raise AssertionError(f"the emulator printed only {settings}")


async def test_process_prints_its_urls_serves_and_exits_cleanly_on_sigint() -> None:
    command = [sys.executable, "-m", "novita_async.emulator", "--port", "0", "--seed", "1"]
    async with await anyio.open_process(command) as process:
        try:
            settings = await _read_settings(process, 5)
            assert settings["NOVITA_BASE_URL"].startswith("http://127.0.0.1:")
            assert settings["NOVITA_ASSETS_URL"].endswith("/image")
            key = settings["NOVITA_API_KEY"]
            headers = {"Authorization": f"Bearer {key}"}
            async with aiohttp.ClientSession() as session:
                url = settings["NOVITA_BASE_URL"] + "/v3/model"
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["models"]
                async with session.get(settings["NOVITA_EMULATOR_STATS_URL"]) as resp:
                    assert (await resp.json())["requests"] == {"models": {"200": 1}}
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_process_exits_cleanly_on_sigterm() -> None:
    command = [sys.executable, "-m", "novita_async.emulator"]
    async with await anyio.open_process(command) as process:
        try:
            await _read_settings(process, 3)
            process.terminate()
            with anyio.fail_after(20):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_port_in_use_exits_with_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, "-m", "novita_async.emulator", "--port", port]
        with anyio.fail_after(20):
            result = await anyio.run_process(command, check=False)
    assert result.returncode == 2
    assert b"cannot listen" in result.stderr
    assert b"Traceback" not in result.stderr
