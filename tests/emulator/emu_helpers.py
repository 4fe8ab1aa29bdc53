"""Shared helpers of the emulator tests: sample images, request bodies, HTTP shortcuts."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import anyio
from PIL import Image

from novita_async import _spec
from novita_async.emulator import Emulator

MODEL = "sdxlUnstableDiffusers_v11_216694.safetensors"


def picture(colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(out, fmt)
    return out.getvalue()


def auth(emu: Emulator, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or emu.api_key}"}


async def upload(session: aiohttp.ClientSession, emu: Emulator, data: bytes | None = None) -> str:
    async with session.put(emu.assets_url, data=picture() if data is None else data) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["assets_id"])


def body(face: str, ref: str, **fields: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model_name": MODEL,
        "face_image_assets_ids": [face],
        "ref_image_assets_ids": [ref],
        "prompt": "a portrait in a garden",
        "width": 256,
        "height": 192,
        "image_num": 1,
        "steps": 20,
        "guidance_scale": 7.5,
        "sampler_name": "Euler",
    }
    request.update(fields)
    return request


async def post_task(
    session: aiohttp.ClientSession, emu: Emulator, request: Any, key: str | None = None
) -> tuple[int, Any]:
    url = emu.base_url + "/v3/async/instant-id"
    async with session.post(url, json=request, headers=auth(emu, key)) as resp:
        return resp.status, await resp.json(content_type=None)


async def submit(session: aiohttp.ClientSession, emu: Emulator, request: dict[str, Any]) -> str:
    status, answer = await post_task(session, emu, request)
    assert status == 200, answer
    return str(answer["task_id"])


async def get_result(
    session: aiohttp.ClientSession, emu: Emulator, task_id: str, key: str | None = None
) -> tuple[int, Any]:
    url = emu.base_url + "/v3/async/task-result"
    async with session.get(url, params={"task_id": task_id}, headers=auth(emu, key)) as resp:
        return resp.status, await resp.json()


async def poll_until(
    session: aiohttp.ClientSession, emu: Emulator, task_id: str, statuses: set[str]
) -> Any:
    """Poll the result endpoint until the task's status is one of ``statuses``."""
    with anyio.fail_after(10):
        while True:
            status, answer = await get_result(session, emu, task_id)
            assert status == 200, answer
            if answer["task"]["status"] in statuses:
                return answer
            await anyio.sleep(0.01)


async def finished_task(
    session: aiohttp.ClientSession, emu: Emulator, request: dict[str, Any]
) -> Any:
    task_id = await submit(session, emu, request)
    with anyio.fail_after(10):
        await emu.wait_task(task_id)
    status, answer = await get_result(session, emu, task_id)
    assert status == 200
    return answer


FINAL = {_spec.STATUS_SUCCEED, _spec.STATUS_FAILED}
