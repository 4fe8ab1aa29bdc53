"""Per-key submission limits: 429 RATE_LIMIT_EXCEEDED with Retry-After."""

from __future__ import annotations

import aiohttp
from emu_helpers import body, post_task, upload

from novita_async.emulator import Emulator, EmulatorConfig


async def test_submissions_per_second_limit(session: aiohttp.ClientSession) -> None:
    # One submission per 1000 s: the second is refused whatever the test's speed.
    config = EmulatorConfig(task_base_seconds=0, rate_limit_per_second=0.001)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        status, _ = await post_task(session, emu, body(face, face))
        assert status == 200
        url = emu.base_url + "/v3/async/instant-id"
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        async with session.post(url, json=body(face, face), headers=headers) as resp:
            assert resp.status == 429
            answer = await resp.json()
            retry_after = int(resp.headers["Retry-After"])
        assert answer["reason"] == "RATE_LIMIT_EXCEEDED"
        assert 900 < retry_after <= 1000
        # The limit is per key.
        status, _ = await post_task(session, emu, body(face, face), key="another-key")
        assert status == 200
        stats = emu.stats()
        assert (stats.rate_limited, stats.submissions) == (1, 2)
        assert stats.count("submit", 429) == 1


async def test_images_per_minute_limit(session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig(task_base_seconds=0, rate_limit_images_per_minute=3)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        assert (await post_task(session, emu, body(face, face, image_num=2)))[0] == 200
        status, answer = await post_task(session, emu, body(face, face, image_num=2))
        assert status == 429
        assert answer["reason"] == "RATE_LIMIT_EXCEEDED"
        # One more image still fits in the minute's budget of three.
        assert (await post_task(session, emu, body(face, face, image_num=1)))[0] == 200
        assert (await post_task(session, emu, body(face, face, image_num=1)))[0] == 429
