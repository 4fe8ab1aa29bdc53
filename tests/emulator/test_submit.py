"""POST /v3/async/instant-id: authentication and validation of the raw JSON."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from emu_helpers import MODEL, auth, body, post_task, upload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novita_async import _spec
from novita_async.emulator import Emulator, EmulatorConfig

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

SUBMIT = "/v3/async/instant-id"


@pytest.fixture
async def assets(emu: Emulator, session: aiohttp.ClientSession) -> tuple[str, str]:
    return await upload(session, emu), await upload(session, emu)


async def test_valid_request_answers_a_task_id(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    status, answer = await post_task(session, emu, body(*assets))
    assert status == 200
    assert set(answer) == {"task_id"}
    assert len(answer["task_id"]) == 36
    assert emu.stats().submissions == 1


async def test_the_documented_example_request_is_accepted(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    example = body(
        *assets,
        extra={"response_image_type": "jpeg"},
        negative_prompt="bad quality, blurry",
        loras=[{"model_name": "BoutXOval_SDXL_dim32-000005_92430.safetensors", "strength": 0.8}],
        height=1024,
        width=768,
        id_strength=0.8,
        adapter_strength=0.8,
        seed=-1,
        controlnet={
            "units": [
                {"model_name": "controlnet-openpose-sdxl-1.0", "strength": 0.4,
                 "preprocessor": "openpose"},
            ]
        },
    )  # fmt: skip
    status, answer = await post_task(session, emu, example)
    assert status == 200, answer


async def test_missing_key_is_401(emu: Emulator, session: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        async with session.post(emu.base_url + SUBMIT, json={}, headers=headers) as resp:
            assert resp.status == 401
            answer = await resp.json()
        assert answer["code"] == 401
        assert set(answer) == {"code", "reason", "message", "metadata"}


async def test_unknown_key_is_403_when_keys_are_configured(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(EmulatorConfig(api_keys={"good-key"})) as emu:
        assert emu.api_key == "good-key"
        headers = {"Authorization": "Bearer other-key"}
        async with session.post(emu.base_url + SUBMIT, json={}, headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json())["reason"] == "INVALID_API_KEY"
        async with session.post(emu.base_url + SUBMIT, json={}, headers=auth(emu)) as resp:
            assert resp.status == 400  # past authentication, the empty body is invalid


async def test_body_that_is_not_json_is_400(emu: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.post(emu.base_url + SUBMIT, data=b"{nope", headers=auth(emu)) as resp:
        assert resp.status == 400
        assert (await resp.json())["reason"] == "INVALID_REQUEST_BODY"


def _without(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda request: request.pop(name)


def _setter(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda request: request.__setitem__(name, value)


LORA = {"model_name": "BoutXOval_SDXL_dim32-000005_92430.safetensors", "strength": 0.5}
INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    *((f"missing {name}", _without(name), name) for name in _spec.REQUIRED_FIELDS),
    ("unknown model", _setter("model_name", "sd15_model.safetensors"), "model_name"),
    ("model not a string", _setter("model_name", 5), "model_name"),
    ("unknown face asset", _setter("face_image_assets_ids", ["nope"]), "face_image_assets_ids[0]"),
    ("unknown ref asset", _setter("ref_image_assets_ids", ["nope"]), "ref_image_assets_ids[0]"),
    ("empty face list", _setter("face_image_assets_ids", []), "face_image_assets_ids"),
    ("face ids a string", _setter("face_image_assets_ids", "abc"), "face_image_assets_ids"),
    ("empty prompt", _setter("prompt", ""), "prompt"),
    ("long prompt", _setter("prompt", "x" * 1025), "prompt"),
    ("prompt not a string", _setter("prompt", 12), "prompt"),
    ("long negative prompt", _setter("negative_prompt", "x" * 1025), "negative_prompt"),
    ("width a string", _setter("width", "512"), "width"),
    ("width a float", _setter("width", 512.5), "width"),
    ("steps a bool", _setter("steps", True), "steps"),
    ("guidance a string", _setter("guidance_scale", "7"), "guidance_scale"),
    ("unknown sampler", _setter("sampler_name", "Euler b"), "sampler_name"),
    ("six loras", _setter("loras", [LORA] * 6), "loras"),
    ("lora without strength", _setter("loras", [{"model_name": "x"}]), "loras[0].strength"),
    ("loras not a list", _setter("loras", LORA), "loras"),
    ("bad preprocessor", _setter("controlnet", {"units": [
        {"model_name": "controlnet-canny-sdxl-1.0", "strength": 0.3, "preprocessor": "sobel"}
    ]}), "controlnet.units[0].preprocessor"),
    ("bad image type", _setter("extra", {"response_image_type": "gif"}),
     "extra.response_image_type"),
    ("nsfw flag a string", _setter("extra", {"enable_nsfw_detection": "yes"}),
     "extra.enable_nsfw_detection"),
    ("nsfw level out of range", _setter("extra", {"nsfw_detection_level": 3}),
     "extra.nsfw_detection_level"),
    ("extra not an object", _setter("extra", []), "extra"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_field_is_400_naming_the_field(
    emu: Emulator,
    session: aiohttp.ClientSession,
    assets: tuple[str, str],
    case: str,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    request = body(*assets)
    mutate(request)
    status, answer = await post_task(session, emu, request)
    assert status == 400, (case, answer)
    assert answer["code"] == 400
    assert answer["reason"] == "INVALID_REQUEST_BODY"
    assert answer["message"].startswith(field + ":")
    assert answer["metadata"] == {"field": field}
    assert emu.stats().submissions == 0


async def test_face_kps_must_match_the_face_count(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    face, ref = assets
    status, answer = await post_task(session, emu, body(face, ref, face_kps_assets_ids=[face, ref]))
    assert status == 400
    assert answer["metadata"] == {"field": "face_kps_assets_ids"}
    status, _ = await post_task(session, emu, body(face, ref, face_kps_assets_ids=[ref]))
    assert status == 200


async def test_unknown_fields_are_ignored(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    status, _ = await post_task(session, emu, body(*assets, flavour="vanilla", request={"a": 1}))
    assert status == 200


async def test_five_loras_are_accepted(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    status, _ = await post_task(session, emu, body(*assets, loras=[LORA] * 5))
    assert status == 200


def _outside(allowed: _spec.Range, integer: bool) -> st.SearchStrategy[float]:
    below = st.integers(max_value=math.ceil(allowed.low) - 1)
    parts: list[st.SearchStrategy[Any]] = [below]
    if allowed.high is not None:
        parts.append(st.integers(min_value=int(allowed.high) + 1, max_value=10**9))
        if not integer:
            parts.append(st.floats(min_value=allowed.high, max_value=1e6, exclude_min=True))
    if not integer:
        parts.append(st.floats(max_value=allowed.low, exclude_max=True, min_value=-1e6))
    return st.one_of(parts)


def _inside(allowed: _spec.Range, integer: bool) -> st.SearchStrategy[float]:
    high = allowed.high if allowed.high is not None else 2**31
    if integer:
        return st.integers(min_value=int(allowed.low), max_value=int(high))
    return st.floats(min_value=allowed.low, max_value=high)


NUMERIC = [name for name in _spec.NUMERIC_FIELDS if name != "nsfw_detection_level"]


@pytest.mark.parametrize("inside", [False, True], ids=["outside-400", "inside-accepted"])
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), name=st.sampled_from(NUMERIC))
async def test_numbers_outside_their_range_are_400_inside_accepted(
    emu: Emulator,
    session: aiohttp.ClientSession,
    assets: tuple[str, str],
    inside: bool,
    data: st.DataObject,
    name: str,
) -> None:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    value = data.draw((_inside if inside else _outside)(allowed, integer))
    fields: dict[str, Any] = {name: value}
    if inside and name == "control_guidance_start":
        fields["control_guidance_end"] = 1.0
    status, answer = await post_task(session, emu, body(*assets, **fields))
    if inside:
        assert status == 200, answer
    else:
        assert status == 400, answer
        assert answer["metadata"] == {"field": name}


async def test_model_list_of_the_seed_is_accepted(
    emu: Emulator, session: aiohttp.ClientSession, assets: tuple[str, str]
) -> None:
    for model in (_spec.RECOMMENDED_MODEL, MODEL, _spec.SDXL_CHECKPOINTS[0]):
        status, _ = await post_task(session, emu, body(*assets, model_name=model))
        assert status == 200
