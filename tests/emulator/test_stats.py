"""Server-side counters: the Python accessor and GET /__emulator/stats."""

from __future__ import annotations

import aiohttp
from emu_helpers import auth, body, finished_task, post_task, upload

from novita_async import _spec
from novita_async.emulator import Emulator


async def test_counters_after_a_small_session(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face, seed=5))
    await post_task(session, emu, body(face, face, seed=5))  # the same body again
    await post_task(session, emu, body(face, face, seed=6))
    await post_task(session, emu, body(face, face, width=1))  # invalid: no task
    async with session.get(answer["images"][0]["image_url"]) as resp:
        await resp.read()

    stats = emu.stats()
    assert stats.uploads == 1
    assert stats.submissions == 3
    assert stats.duplicate_submissions == 1
    assert stats.image_downloads == 1
    assert stats.image_bytes > 0
    assert stats.unexpected_auth == 0
    assert stats.requests["submit"] == {"200": 3, "400": 1}
    assert stats.count("submit") == 4
    assert stats.count("result", 200) == 1
    assert stats.count("upload", 200) == 1
    assert sum(stats.tasks.values()) == 3
    assert stats.in_flight == {}


async def test_duplicates_ignore_key_order(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    request = body(face, face, seed=1)
    await post_task(session, emu, request)
    await post_task(session, emu, dict(reversed(list(request.items()))))
    assert emu.stats().duplicate_submissions == 1


async def test_stats_endpoint_matches_the_accessor(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    await finished_task(session, emu, body(face, face))
    async with session.get(emu.base_url + "/__emulator/stats") as resp:
        assert resp.status == 200
        over_http = await resp.json()
    assert over_http == emu.stats().to_dict()
    assert over_http["tasks"] == {_spec.STATUS_SUCCEED: 1}


async def test_reset_stats(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    await post_task(session, emu, body(face, face))
    emu.reset_stats()
    stats = emu.stats()
    assert (stats.uploads, stats.submissions, stats.requests) == (0, 0, {})
    await post_task(session, emu, body(face, face))
    assert emu.stats().duplicate_submissions == 0  # the memory of bodies was reset too
    async with session.post(emu.base_url + "/__emulator/reset-stats") as resp:
        assert resp.status == 200
    assert emu.stats().submissions == 0


async def test_internal_routes_are_not_counted(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    async with session.get(emu.base_url + "/__emulator/stats", headers=auth(emu)) as resp:
        await resp.read()
    assert emu.stats().requests == {}
