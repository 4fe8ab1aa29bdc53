"""PUT /image on the asset origin."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from emu_helpers import picture

from novita_async.emulator import Emulator, EmulatorConfig


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_upload_stores_an_image_and_answers_an_asset_id(
    emu: Emulator, session: aiohttp.ClientSession, fmt: str
) -> None:
    async with session.put(emu.assets_url, data=picture(fmt=fmt)) as resp:
        assert resp.status == 200
        answer = await resp.json()
    asset_id = answer["assets_id"]
    assert base64.b64decode(asset_id).startswith(b"r2/novita-ai-asset/image/")
    assert emu.stats().uploads == 1
    assert emu.stats().count("upload", 200) == 1


async def test_each_upload_gets_its_own_id(emu: Emulator, session: aiohttp.ClientSession) -> None:
    ids = set()
    for _ in range(3):
        async with session.put(emu.assets_url, data=picture()) as resp:
            ids.add((await resp.json())["assets_id"])
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"just some text, not a picture", "not a png")],
)
async def test_upload_refuses_empty_and_non_image_bodies(
    emu: Emulator, session: aiohttp.ClientSession, data: bytes, message: str
) -> None:
    async with session.put(emu.assets_url, data=data) as resp:
        assert resp.status == 400
        answer = await resp.json()
    assert answer["code"] == 400
    assert answer["reason"] == "INVALID_IMAGE_FORMAT"
    assert message in answer["message"]
    assert set(answer) == {"code", "reason", "message", "metadata"}
    assert emu.stats().uploads == 0


async def test_upload_refuses_a_body_over_the_size_limit(session: aiohttp.ClientSession) -> None:
    async with Emulator(EmulatorConfig(max_asset_bytes=100)) as emu:
        data = picture() + bytes(200)
        async with session.put(emu.assets_url, data=data) as resp:
            assert resp.status == 400
            assert (await resp.json())["reason"] == "IMAGE_FILE_EXCEEDS_MAX_SIZE"


async def test_upload_with_authorization_is_refused_and_counted(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer secret-key-123"}
    async with session.put(emu.assets_url, data=picture(), headers=headers) as resp:
        assert resp.status == 400
        text = await resp.text()
    assert "<Code>InvalidArgument</Code>" in text
    assert "secret-key-123" not in text
    stats = emu.stats()
    assert stats.unexpected_auth == 1
    assert stats.uploads == 0


async def test_upload_with_authorization_allowed_when_configured(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(EmulatorConfig(allow_auth_on_assets=True)) as emu:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        async with session.put(emu.assets_url, data=picture(), headers=headers) as resp:
            assert resp.status == 200
        assert emu.stats().unexpected_auth == 0


async def test_three_origins_are_distinct(emu: Emulator) -> None:
    origins = {emu.base_url, emu.assets_url.removesuffix("/image"), emu.images_origin}
    assert len(origins) == 3
    assert all(origin.startswith("http://127.0.0.1:") for origin in origins)
