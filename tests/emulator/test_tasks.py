"""Task lifecycle and GET /v3/async/task-result."""

from __future__ import annotations

import aiohttp
import anyio
import pytest
from emu_helpers import (
    FINAL,
    body,
    finished_task,
    get_result,
    poll_until,
    submit,
    upload,
)

from novita_async import _spec
from novita_async.emulator import Emulator, EmulatorConfig

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time


async def test_tasks_queue_then_process_with_rising_progress_and_falling_eta(
    session: aiohttp.ClientSession,
) -> None:
    config = EmulatorConfig(workers=1, task_base_seconds=0)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        # The first task holds the only worker for a while; the second must queue behind it.
        first = await submit(session, emu, body(face, face, prompt="long one [[seconds:2.2]]"))
        second = await submit(session, emu, body(face, face))
        await emu.wait_task(first, _spec.STATUS_PROCESSING)
        _, answer = await get_result(session, emu, second)
        assert answer["task"]["status"] == _spec.STATUS_QUEUED
        assert answer["task"]["progress_percent"] == 0
        assert answer["images"] == []

        seen: list[tuple[int, int]] = []
        with anyio.fail_after(10):
            while True:
                _, answer = await get_result(session, emu, first)
                task = answer["task"]
                if task["status"] != _spec.STATUS_PROCESSING:
                    break
                seen.append((task["progress_percent"], task["eta"]))
                await anyio.sleep(0.1)
        assert task["status"] == _spec.STATUS_SUCCEED
        progress = [p for p, _ in seen]
        etas = [e for _, e in seen]
        assert progress == sorted(progress) and progress[-1] > progress[0]
        assert etas == sorted(etas, reverse=True) and etas[-1] < etas[0]
        assert all(0 <= p < 100 for p in progress)

        final = await poll_until(session, emu, second, FINAL)
        assert final["task"]["status"] == _spec.STATUS_SUCCEED
        assert emu.stats().tasks == {_spec.STATUS_SUCCEED: 2}


async def test_wait_task_reports_each_state(session: aiohttp.ClientSession) -> None:
    async with Emulator(EmulatorConfig(workers=1, task_base_seconds=0)) as emu:
        face = await upload(session, emu)
        blocker = await submit(session, emu, body(face, face, prompt="[[seconds:30]]"))
        queued = await submit(session, emu, body(face, face))
        assert emu.task_status(queued) == _spec.STATUS_QUEUED
        assert await emu.wait_task(blocker, _spec.STATUS_PROCESSING) == _spec.STATUS_PROCESSING
        assert emu.stats().tasks == {_spec.STATUS_PROCESSING: 1, _spec.STATUS_QUEUED: 1}
        with pytest.raises(LookupError):
            await emu.wait_task("no-such-task")


async def test_succeeded_task_result_has_the_documented_shape_and_quirks(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face, image_num=3, seed=-1))
    assert set(answer) >= {"task", "images", "extra", "videos"}
    task = answer["task"]
    assert task["task_type"] == "INSTANT_ID"
    assert task["status"] == _spec.STATUS_SUCCEED
    assert task["reason"] == ""
    assert (task["eta"], task["progress_percent"]) == (0, 0)
    assert len(answer["images"]) == 3
    for image in answer["images"]:
        assert image["image_url_ttl"] == "3600"  # a string, as the real service sends it
        assert image["image_type"] == "png"
        assert image["nsfw_detection_result"] is None
        assert image["image_url"].startswith(emu.images_origin + "/prod/")
        assert "X-Amz-Signature=" in image["image_url"]
    seed = answer["extra"]["seed"]
    assert isinstance(seed, str) and int(seed) >= 0  # the seed drawn for -1, as a string
    assert answer["extra"]["debug_info"]["submit_time_ms"].isdigit()


async def test_an_explicit_seed_is_echoed_as_a_string(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face, seed=1234))
    assert answer["extra"]["seed"] == "1234"


async def test_prompt_marker_fails_exactly_that_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    failed = await finished_task(session, emu, body(face, face, prompt="x [[fail:no face found]]"))
    ok = await finished_task(session, emu, body(face, face))
    assert failed["task"]["status"] == _spec.STATUS_FAILED
    assert failed["task"]["reason"] == "no face found"
    assert failed["images"] == []
    assert ok["task"]["status"] == _spec.STATUS_SUCCEED


async def test_fail_next_tasks_fails_the_next_submissions_only(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.fail_next_tasks(2, reason="scripted failure")
    answers = [await finished_task(session, emu, body(face, face)) for _ in range(3)]
    assert [a["task"]["status"] for a in answers] == [
        _spec.STATUS_FAILED,
        _spec.STATUS_FAILED,
        _spec.STATUS_SUCCEED,
    ]
    assert answers[0]["task"]["reason"] == "scripted failure"
    assert emu.stats().tasks == {_spec.STATUS_FAILED: 2, _spec.STATUS_SUCCEED: 1}


async def test_failure_rate_fails_that_fraction_of_tasks(session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig(seed=3, task_base_seconds=0, task_failure_rate=0.5)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        statuses = [
            (await finished_task(session, emu, body(face, face)))["task"]["status"]
            for _ in range(40)
        ]
    failed = statuses.count(_spec.STATUS_FAILED)
    assert 0 < failed < 40
    assert set(statuses) == FINAL


async def test_unknown_task_is_404_task_not_found(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, answer = await get_result(session, emu, "00000000-0000-4000-8000-000000000000")
    assert status == 404
    assert answer["reason"] == "TASK_NOT_FOUND"
    assert answer["code"] == 404


async def test_a_task_is_not_visible_to_another_key(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    task_id = await submit(session, emu, body(face, face))
    status, _ = await get_result(session, emu, task_id, key="someone-else")
    assert status == 404


async def test_result_requires_a_key(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.base_url + "/v3/async/task-result?task_id=x"
    async with session.get(url) as resp:
        assert resp.status == 401


async def test_dishonest_eta_differs_from_the_truth(session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig(seed=1, eta_honest=False, task_base_seconds=1000)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        task_id = await submit(session, emu, body(face, face))
        await emu.wait_task(task_id, _spec.STATUS_PROCESSING)
        etas = {(await get_result(session, emu, task_id))[1]["task"]["eta"] for _ in range(5)}
    assert len(etas) > 1  # an honest eta would be 1000 (or 999) every time


async def test_task_duration_follows_the_model(session: aiohttp.ClientSession) -> None:
    # 2 s base + 0.1 s x 20 steps x 1 megapixel x 2 images = 6 s, halved by speed_factor 2.
    config = EmulatorConfig(task_base_seconds=2, step_seconds=0.1, speed_factor=2, workers=1)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        task_id = await submit(session, emu, body(face, face, width=1000, height=1000, image_num=2))
        await emu.wait_task(task_id, _spec.STATUS_PROCESSING)
        queued = await submit(session, emu, body(face, face, width=1000, height=1000))
        _, answer = await get_result(session, emu, task_id)
        assert answer["task"]["eta"] == 3
        _, answer = await get_result(session, emu, queued)
        # Queued: the running task's 3 s left on the single worker, then its own 2 s.
        assert answer["task"]["eta"] == 5
