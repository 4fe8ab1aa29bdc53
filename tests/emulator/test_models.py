"""GET /v3/model: filters and cursor pagination."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from emu_helpers import auth

from novita_async import _spec
from novita_async.emulator import Emulator


async def _models(session: aiohttp.ClientSession, emu: Emulator, **params: str) -> tuple[int, Any]:
    query = {key.replace("__", "."): value for key, value in params.items()}
    async with session.get(emu.base_url + "/v3/model", params=query, headers=auth(emu)) as resp:
        return resp.status, await resp.json()


async def _all_pages(session: aiohttp.ClientSession, emu: Emulator, **params: str) -> list[Any]:
    models: list[Any] = []
    cursor = ""
    for _ in range(100):
        status, answer = await _models(session, emu, pagination__cursor=cursor, **params)
        assert status == 200
        models.extend(answer["models"])
        cursor = answer["pagination"]["next_cursor"]
        if not cursor:
            return models
    raise AssertionError("pagination never ended")


async def test_sdxl_checkpoints_are_the_seed_list(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    models = await _all_pages(
        session, emu, filter__types="checkpoint", filter__is_sdxl="true", pagination__limit="7"
    )
    assert [m["sd_name"] for m in models] == list(_spec.SDXL_CHECKPOINTS)
    first = models[0]
    assert first["type"] == {"name": "checkpoint", "display_name": "Checkpoint"}
    assert first["is_sdxl"] is True
    assert {"id", "name", "sd_name", "base_model", "tags", "status"} <= set(first)


async def test_pages_respect_the_limit(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, answer = await _models(session, emu, pagination__limit="3")
    assert status == 200
    assert len(answer["models"]) == 3
    assert answer["pagination"]["next_cursor"]
    status, nxt = await _models(
        session, emu, pagination__limit="3", pagination__cursor=answer["pagination"]["next_cursor"]
    )
    assert {m["sd_name"] for m in nxt["models"]}.isdisjoint(m["sd_name"] for m in answer["models"])


@pytest.mark.parametrize(("params", "expected"), [
    ({"filter__types": "lora"}, {"BoutXOval_SDXL_dim32-000005_92430.safetensors"}),
    ({"filter__types": "controlnet"},
     {"controlnet-openpose-sdxl-1.0", "controlnet-canny-sdxl-1.0"}),
    ({"filter__types": "checkpoint", "filter__is_sdxl": "false"},
     {"dreamshaper_8_93211.safetensors"}),
    ({"filter__is_inpainting": "true"}, {"stable-diffusion-xl-1.0-inpainting-0.1.safetensors"}),
    ({"filter__query": "JUGGERNAUT"},
     {"juggernautXL_version2_113240.safetensors", "juggernautXL_version5_126522.safetensors"}),
    ({"filter__source": "novita", "filter__types": "vae"}, {"sdxl_vae.safetensors"}),
    ({"filter__visibility": "private"}, set()),
])  # fmt: skip
async def test_filters(
    emu: Emulator, session: aiohttp.ClientSession, params: dict[str, str], expected: set[str]
) -> None:
    models = await _all_pages(session, emu, pagination__limit="100", **params)
    assert {m["sd_name"] for m in models} == expected


@pytest.mark.parametrize("params", [
    {"pagination__limit": "0"},
    {"pagination__limit": "101"},
    {"pagination__limit": "ten"},
    {"pagination__cursor": "garbage!"},
    {"filter__types": "sprite"},
    {"filter__is_sdxl": "maybe"},
])  # fmt: skip
async def test_bad_parameters_are_400(
    emu: Emulator, session: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    status, answer = await _models(session, emu, **params)
    assert status == 400
    assert answer["reason"] == "INVALID_REQUEST_BODY"
    assert answer["metadata"]["field"] == next(iter(params)).replace("__", ".")


async def test_models_require_a_key(emu: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.get(emu.base_url + "/v3/model") as resp:
        assert resp.status == 401


async def test_unknown_api_path_is_404_api_not_found(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    async with session.get(emu.base_url + "/v3/nothing-here") as resp:
        assert resp.status == 404
        assert (await resp.json())["reason"] == "API_NOT_FOUND"
