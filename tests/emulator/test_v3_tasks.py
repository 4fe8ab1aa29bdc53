"""The v3 image tasks (txt2img, img2img, inpainting, upscale): wrapped bodies, their validation,
outputs of the size each task implies, the old answer shape, GET /v3/user, faults, rate limits
and the per-route counters."""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from emu_helpers import auth, body, get_result, post_task, upload
from PIL import Image

from novita_async import _spec
from novita_async.emulator import V3_ROUTES, AccountError, Emulator, EmulatorConfig
from novita_async.emulator._cli import add_arguments, config_from_args

MODEL = "sd_xl_base_1.0.safetensors"


def png(width: int = 48, height: int = 40, colour: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wrapped(route: str, **fields: Any) -> dict[str, Any]:
    """A valid body of ``route`` (its required fields), with ``fields`` merged into ``request``;
    ``extra=...`` sets the extra object."""
    extra = fields.pop("extra", None)
    image = b64(png())
    request: dict[str, Any]
    if route == "upscale":
        request = {"model_name": "RealESRNet_x4plus", "image_base64": image, "scale_factor": 2}
    else:
        request = {
            "model_name": MODEL,
            "prompt": "a lighthouse at dusk",
            "image_num": 1,
            "steps": 20,
            "guidance_scale": 7.5,
            "sampler_name": "Euler a",
        }
        if route in ("txt2img", "img2img"):
            request.update(width=256, height=192)
        if route in ("img2img", "inpainting"):
            request["image_base64"] = image
        if route == "inpainting":
            request["mask_image_base64"] = b64(png(colour=(255, 255, 255)))
    request.update(fields)
    wrapped_body: dict[str, Any] = {"request": request}
    if extra is not None:
        wrapped_body["extra"] = extra
    return wrapped_body


async def post(
    session: aiohttp.ClientSession, emu: Emulator, route: str, payload: Any, key: str | None = None
) -> tuple[int, Any]:
    url = f"{emu.base_url}/v3/async/{route}"
    # A stream, not bytes: aiohttp warns of large bodies given whole.
    data = io.BytesIO(json.dumps(payload).encode())
    headers = {**auth(emu, key), "Content-Type": "application/json"}
    async with session.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def submitted(session: aiohttp.ClientSession, emu: Emulator, route: str, payload: Any) -> str:
    status, answer = await post(session, emu, route, payload)
    assert status == 200, answer
    assert set(answer) == {"task_id"}
    return str(answer["task_id"])


async def finished(session: aiohttp.ClientSession, emu: Emulator, task_id: str) -> Any:
    with anyio.fail_after(10):
        await emu.wait_task(task_id)
    status, answer = await get_result(session, emu, task_id)
    assert status == 200, answer
    return answer


async def sizes_of(session: aiohttp.ClientSession, result: Any) -> list[tuple[int, int]]:
    sizes = []
    for image in result["images"]:
        async with session.get(image["image_url"]) as resp:
            assert resp.status == 200
            data = await resp.read()
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format.lower() == image["image_type"]  # type: ignore[union-attr]
            sizes.append(picture.size)
    return sizes


# --- successful tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "fields", "task_type", "sizes"),
    [
        ("txt2img", {"image_num": 3}, "TXT_TO_IMG", [(256, 192)] * 3),
        ("img2img", {"image_num": 2, "width": 320, "height": 128}, "IMG_TO_IMG", [(320, 128)] * 2),
        ("inpainting", {"image_num": 2}, "INPAINTING", [(48, 40)] * 2),
        ("upscale", {"scale_factor": 2.5}, "UPSCALE", [(120, 100)]),
    ],
)
async def test_a_task_ends_with_images_of_the_size_it_implies(
    emu: Emulator,
    session: aiohttp.ClientSession,
    route: str,
    fields: dict[str, Any],
    task_type: str,
    sizes: list[tuple[int, int]],
) -> None:
    task_id = await submitted(session, emu, route, wrapped(route, **fields))
    result = await finished(session, emu, task_id)
    assert result["task"]["status"] == _spec.STATUS_SUCCEED
    assert result["task"]["task_type"] == task_type
    assert result["task"]["task_id"] == task_id
    assert await sizes_of(session, result) == sizes
    stats = emu.stats()
    assert stats.submissions_by_route == {route: 1}
    assert stats.unknown_fields == {}
    assert stats.count(route, 200) == 1


async def test_extra_sets_the_image_type_and_the_seed_is_kept(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = wrapped("txt2img", seed=1234, extra={"response_image_type": "webp"})
    result = await finished(session, emu, await submitted(session, emu, "txt2img", payload))
    assert result["extra"]["seed"] == "1234"
    assert [image["image_type"] for image in result["images"]] == ["webp"]
    assert await sizes_of(session, result) == [(256, 192)]


async def test_the_pictures_show_the_inputs(emu: Emulator, session: aiohttp.ClientSession) -> None:
    # Big enough for the panels: the input image and the mask are drawn into the result.
    image, mask = png(256, 160, (200, 40, 40)), png(256, 160, (255, 255, 255))
    payload = wrapped("inpainting", image_base64=b64(image), mask_image_base64=b64(mask))
    result = await finished(session, emu, await submitted(session, emu, "inpainting", payload))
    assert await sizes_of(session, result) == [(256, 160)]
    async with session.get(result["images"][0]["image_url"]) as resp:
        first = await resp.read()
    other = wrapped("inpainting", image_base64=b64(png(256, 160, (40, 200, 40))))
    other["request"]["mask_image_base64"] = b64(mask)
    other["request"]["seed"] = int(result["extra"]["seed"])
    result = await finished(session, emu, await submitted(session, emu, "inpainting", other))
    async with session.get(result["images"][0]["image_url"]) as resp:
        assert await resp.read() != first  # same seed, another input: another picture


async def test_a_failing_prompt_fails_the_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = wrapped("img2img", prompt="a cat [[fail:out of memory]]")
    result = await finished(session, emu, await submitted(session, emu, "img2img", payload))
    assert result["task"]["status"] == _spec.STATUS_FAILED
    assert result["task"]["reason"] == "out of memory"
    assert result["images"] == []


async def test_every_documented_optional_field_is_accepted_and_known(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    image = b64(png())
    extra = {
        "response_image_type": "png",
        "enable_nsfw_detection": False,
        "nsfw_detection_level": 2,
        "custom_storage": {
            "aws_s3": {
                "region": "us-east-1",
                "bucket": "b",
                "path": "/out",
                "save_to_path_directly": True,
            }
        },
        "enterprise_plan": {"enabled": False},
    }
    common = {
        "negative_prompt": "blurry",
        "seed": -1,
        "sd_vae": "sdxl_vae.safetensors",
        "clip_skip": 12,
        "loras": [{"model_name": f"lora{i}", "strength": i / 5} for i in range(5)],
        "embeddings": [{"model_name": "easynegative"}],
    }
    payloads = {
        "txt2img": wrapped(
            "txt2img",
            extra=extra,
            **common,
            hires_fix={
                "target_width": 4096,
                "target_height": 128,
                "strength": 1,
                "upscaler": "Latent",
            },
            refiner={"switch_at": 0.5},
            enable_transparent_background=True,
            restore_faces=False,
        ),
        "img2img": wrapped(
            "img2img",
            extra=extra,
            **common,
            strength=0,
            controlnet={
                "units": [
                    {
                        "model_name": "control_v11p_sd15_canny",
                        "image_base64": image,
                        "strength": 1,
                        "preprocessor": "depth_leres++",
                        "guidance_start": 0,
                        "guidance_end": 1,
                    }
                ]
            },
            ip_adapters=[
                {"model_name": "ip-adapter_sdxl.bin", "image_base64": image, "strength": 0.5}
            ],
        ),
        "inpainting": wrapped(
            "inpainting",
            extra=extra,
            **common,
            mask_blur=64,
            strength=None,
            inpainting_full_res=1,
            inpainting_full_res_padding=256,
            inpainting_mask_invert=0,
            initial_noise_multiplier=1.5,
        ),
        "upscale": wrapped("upscale", extra=extra, model_name="4x-UltraSharp", scale_factor=4),
    }
    for route, payload in payloads.items():
        await submitted(session, emu, route, payload)
    stats = emu.stats()
    assert stats.submissions_by_route == dict.fromkeys(V3_ROUTES, 1)
    assert stats.unknown_fields == {}


async def test_unknown_fields_are_accepted_and_counted_per_route(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = wrapped(
        "txt2img",
        cfg_scale=7,
        loras=[{"model_name": "a", "strength": 1, "weight": 1}],
        extra={"webhook_url": "http://x"},
    )
    payload["prompt"] = "flat and wrapped at once"
    await submitted(session, emu, "txt2img", payload)
    await submitted(session, emu, "txt2img", wrapped("txt2img", cfg_scale=7))
    await submitted(session, emu, "upscale", wrapped("upscale", steps=20))
    assert emu.stats().unknown_fields == {
        "txt2img": {
            "prompt": 1,
            "request.cfg_scale": 2,
            "request.loras[].weight": 1,
            "extra.webhook_url": 1,
        },
        "upscale": {"request.steps": 1},
    }


@pytest.mark.emulator(legacy_task_answer=True)
async def test_the_switch_answers_the_old_shape(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, answer = await post(session, emu, "upscale", wrapped("upscale"))
    assert status == 200
    assert answer["code"] == 0 and answer["msg"] == ""
    assert set(answer) == {"code", "msg", "data"} and set(answer["data"]) == {"task_id"}
    result = await finished(session, emu, answer["data"]["task_id"])
    assert result["task"]["status"] == _spec.STATUS_SUCCEED
    # InstantID keeps its own answer.
    face = await upload(session, emu)
    status, answer = await post_task(session, emu, body(face, face))
    assert status == 200 and set(answer) == {"task_id"}


def test_the_command_line_sets_the_switch_and_the_balance() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--legacy-task-answer",
            "--credit-balance",
            "25000",
            "--fault",
            "txt2img:error_5xx=0.5",
            "--script",
            "upscale:500,ok",
        ]
    )
    config = config_from_args(ns)
    assert config.legacy_task_answer is True
    assert config.credit_balance == 25000
    assert config.faults["txt2img"].error_5xx == 0.5
    assert config.fault_scripts == {"upscale": ("500", "ok")}
    defaults = config_from_args(parser.parse_args([]))
    assert defaults.legacy_task_answer is False
    assert defaults.credit_balance == EmulatorConfig().credit_balance


# --- refusals -------------------------------------------------------------------------------------


async def refused(
    session: aiohttp.ClientSession, emu: Emulator, route: str, payload: Any
) -> tuple[str, str, str | None]:
    status, answer = await post(session, emu, route, payload)
    assert status == 400, answer
    return answer["reason"], answer["message"], (answer.get("metadata") or {}).get("field")


@pytest.mark.parametrize("route", V3_ROUTES)
async def test_a_flat_body_is_refused(
    emu: Emulator, session: aiohttp.ClientSession, route: str
) -> None:
    flat = {**wrapped(route)["request"], "extra": {}}
    reason, message, field = await refused(session, emu, route, flat)
    assert (reason, field) == ("INVALID_REQUEST_BODY", "request")
    assert "wrapped" in message
    for payload in ([wrapped(route)], {"request": "text"}):
        reason, _, _ = await refused(session, emu, route, payload)
        assert reason == "INVALID_REQUEST_BODY"
    assert emu.stats().submissions == 0


def _set(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    *parents, last = path.split(".")
    target = payload
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return payload


_DROP = object()
_UNIT = {"model_name": "control_v11p_sd15_canny", "image_base64": b64(png()), "strength": 1}

# (route, dotted path to set, value, field named in the answer)
BAD_FIELDS: list[tuple[str, str, Any, str]] = [
    ("txt2img", "request.model_name", _DROP, "request.model_name"),
    ("txt2img", "request.model_name", "", "request.model_name"),
    ("txt2img", "request.prompt", "", "request.prompt"),
    ("txt2img", "request.prompt", "x" * 1025, "request.prompt"),
    ("txt2img", "request.negative_prompt", "", "request.negative_prompt"),
    ("txt2img", "request.width", 127, "request.width"),
    ("txt2img", "request.height", 2049, "request.height"),
    ("txt2img", "request.width", 256.0, "request.width"),
    ("txt2img", "request.height", _DROP, "request.height"),
    ("txt2img", "request.image_num", 9, "request.image_num"),
    ("txt2img", "request.image_num", 0, "request.image_num"),
    ("txt2img", "request.steps", 101, "request.steps"),
    ("txt2img", "request.steps", True, "request.steps"),
    ("txt2img", "request.guidance_scale", 30.5, "request.guidance_scale"),
    ("txt2img", "request.guidance_scale", 0.5, "request.guidance_scale"),
    ("txt2img", "request.sampler_name", "", "request.sampler_name"),
    ("txt2img", "request.seed", -2, "request.seed"),
    ("txt2img", "request.clip_skip", 13, "request.clip_skip"),
    ("txt2img", "request.sd_vae", 3, "request.sd_vae"),
    ("txt2img", "request.loras", [{"model_name": "a", "strength": 1}] * 6, "request.loras"),
    (
        "txt2img",
        "request.loras",
        [{"model_name": "a", "strength": 1.5}],
        "request.loras[0].strength",
    ),
    ("txt2img", "request.loras", [{"model_name": "a"}], "request.loras[0].strength"),
    ("txt2img", "request.embeddings", [{}], "request.embeddings[0].model_name"),
    ("txt2img", "request.embeddings", [{"model_name": "e"}] * 6, "request.embeddings"),
    (
        "txt2img",
        "request.hires_fix",
        {"target_width": 512, "strength": 0.5},
        "request.hires_fix.target_height",
    ),
    (
        "txt2img",
        "request.hires_fix",
        {"target_width": 4097, "target_height": 512, "strength": 0.5},
        "request.hires_fix.target_width",
    ),
    (
        "txt2img",
        "request.hires_fix",
        {"target_width": 512, "target_height": 512, "strength": 0.5, "upscaler": "Lanczos"},
        "request.hires_fix.upscaler",
    ),
    ("txt2img", "request.refiner", {"switch_at": 1.1}, "request.refiner.switch_at"),
    ("txt2img", "request.restore_faces", "yes", "request.restore_faces"),
    ("txt2img", "extra.response_image_type", "gif", "extra.response_image_type"),
    ("txt2img", "extra.enable_nsfw_detection", 1, "extra.enable_nsfw_detection"),
    ("txt2img", "extra.nsfw_detection_level", 3, "extra.nsfw_detection_level"),
    ("txt2img", "extra.webhook", {"url": "ftp://x"}, "extra.webhook.url"),
    (
        "txt2img",
        "extra.custom_storage",
        {"aws_s3": {"region": "r", "bucket": "b"}},
        "extra.custom_storage.aws_s3.path",
    ),
    ("txt2img", "extra.enterprise_plan", {"enabled": "no"}, "extra.enterprise_plan.enabled"),
    ("img2img", "request.image_base64", _DROP, "request.image_base64"),
    ("img2img", "request.width", _DROP, "request.width"),
    ("img2img", "request.strength", 1.01, "request.strength"),
    ("img2img", "request.controlnet", {}, "request.controlnet.units"),
    (
        "img2img",
        "request.controlnet",
        {"units": [{**_UNIT, "strength": 2}]},
        "request.controlnet.units[0].strength",
    ),
    (
        "img2img",
        "request.controlnet",
        {"units": [{**_UNIT, "preprocessor": "hed"}]},
        "request.controlnet.units[0].preprocessor",
    ),
    (
        "img2img",
        "request.controlnet",
        {"units": [{**_UNIT, "image_base64": "data:image/png;base64,AAAA"}]},
        "request.controlnet.units[0].image_base64",
    ),
    (
        "img2img",
        "request.ip_adapters",
        [{"model_name": "ip-adapter_sd15.bin", "strength": 1}],
        "request.ip_adapters[0].image_base64",
    ),
    (
        "img2img",
        "request.ip_adapters",
        [{"model_name": "other.bin", "image_base64": b64(png()), "strength": 1}],
        "request.ip_adapters[0].model_name",
    ),
    ("inpainting", "request.mask_image_base64", _DROP, "request.mask_image_base64"),
    ("inpainting", "request.mask_blur", 65, "request.mask_blur"),
    ("inpainting", "request.inpainting_full_res", 2, "request.inpainting_full_res"),
    ("inpainting", "request.inpainting_full_res", True, "request.inpainting_full_res"),
    (
        "inpainting",
        "request.inpainting_full_res_padding",
        257,
        "request.inpainting_full_res_padding",
    ),
    ("inpainting", "request.inpainting_mask_invert", -1, "request.inpainting_mask_invert"),
    ("inpainting", "request.initial_noise_multiplier", 1.6, "request.initial_noise_multiplier"),
    ("inpainting", "request.image_num", 9, "request.image_num"),
    ("upscale", "request.model_name", "Latent", "request.model_name"),
    ("upscale", "request.scale_factor", 1, "request.scale_factor"),
    ("upscale", "request.scale_factor", 4.01, "request.scale_factor"),
    ("upscale", "request.scale_factor", "2", "request.scale_factor"),
    ("upscale", "request.scale_factor", _DROP, "request.scale_factor"),
    ("upscale", "request.image_base64", _DROP, "request.image_base64"),
]


@pytest.mark.parametrize(("route", "path", "value", "field"), BAD_FIELDS)
async def test_a_field_out_of_its_range_or_enum_is_refused_by_name(
    emu: Emulator, session: aiohttp.ClientSession, route: str, path: str, value: Any, field: str
) -> None:
    payload = _set(wrapped(route), path, value)
    reason, message, named = await refused(session, emu, route, payload)
    assert (reason, named) == ("INVALID_REQUEST_BODY", field)
    assert message.startswith(field + ":")
    assert emu.stats().submissions == 0


@pytest.mark.parametrize("route", ["img2img", "inpainting", "upscale"])
async def test_an_input_image_must_be_bare_base64_of_an_image(
    emu: Emulator, session: aiohttp.ClientSession, route: str
) -> None:
    image = b64(png())
    field = "request.image_base64"
    cases = [
        ("data:image/png;base64," + image, "INVALID_REQUEST_BODY", "data: URI"),
        ("not base64 at all!", "INVALID_REQUEST_BODY", "base64"),
        (image[:-3], "INVALID_REQUEST_BODY", "base64"),
        (b64(b"plain text, not a picture"), "INVALID_IMAGE_FORMAT", "image"),
        (42, "INVALID_REQUEST_BODY", "base64"),
    ]
    for value, reason, words in cases:
        payload = _set(wrapped(route), field, value)
        got_reason, message, named = await refused(session, emu, route, payload)
        assert (got_reason, named) == (reason, field), message
        assert message.startswith(field + ":") and words in message
    assert emu.stats().submissions == 0


@pytest.mark.parametrize(
    ("route", "most_bytes"),
    [
        ("img2img", 10 * 1024 * 1024),
        ("inpainting", 30 * 1024 * 1024),
        ("upscale", 30 * 1024 * 1024),
    ],
)
async def test_an_image_over_the_endpoints_bytes_is_refused(
    emu: Emulator, session: aiohttp.ClientSession, route: str, most_bytes: int
) -> None:
    over = b64(b"\0" * (most_bytes + 1))
    payload = _set(wrapped(route), "request.image_base64", over)
    reason, message, field = await refused(session, emu, route, payload)
    assert (reason, field) == ("IMAGE_FILE_EXCEEDS_MAX_SIZE", "request.image_base64")
    assert f"at most {most_bytes // (1024 * 1024)} MB" in message
    # At the limit, the size passes: these bytes then fail as no image.
    at_limit = b64(b"\0" * most_bytes)
    payload = _set(wrapped(route), "request.image_base64", at_limit)
    reason, _, _ = await refused(session, emu, route, payload)
    assert reason == "INVALID_IMAGE_FORMAT"


async def test_an_image_over_the_endpoints_pixels_is_refused(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    cases = [
        ("img2img", "request.image_base64", png(4097, 4096), "16 MP"),
        ("inpainting", "request.image_base64", png(4096, 4097), "16 MP"),
        ("upscale", "request.image_base64", png(2049, 16), "2048x2048"),
        ("upscale", "request.image_base64", png(16, 2049), "2048x2048"),
        ("img2img", "request.controlnet", None, "16 MP"),
    ]
    for route, field, data, limit in cases:
        if data is None:
            unit = {**_UNIT, "image_base64": b64(png(4097, 4096))}
            payload = _set(wrapped(route), field, {"units": [unit]})
            field = "request.controlnet.units[0].image_base64"
        else:
            payload = _set(wrapped(route), field, b64(data))
        reason, message, named = await refused(session, emu, route, payload)
        assert (reason, named) == ("IMAGE_EXCEEDS_MAX_RESOLUTION", field)
        assert limit in message
    # At the limits, they pass.
    await submitted(
        session,
        emu,
        "upscale",
        _set(wrapped("upscale"), "request.image_base64", b64(png(2048, 2048))),
    )
    big = b64(png(4096, 4096))
    await submitted(session, emu, "img2img", _set(wrapped("img2img"), "request.image_base64", big))


async def test_a_mask_of_another_resolution_is_refused(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = _set(wrapped("inpainting"), "request.mask_image_base64", b64(png(40, 48)))
    reason, message, field = await refused(session, emu, "inpainting", payload)
    assert (reason, field) == ("INVALID_REQUEST_BODY", "request.mask_image_base64")
    assert "48x40" in message and "40x48" in message
    payload = _set(wrapped("inpainting"), "request.mask_image_base64", "data:,x")
    reason, _, field = await refused(session, emu, "inpainting", payload)
    assert field == "request.mask_image_base64"


async def test_transparent_background_needs_png(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = wrapped(
        "txt2img", enable_transparent_background=True, extra={"response_image_type": "jpeg"}
    )
    _, _, field = await refused(session, emu, "txt2img", payload)
    assert field == "request.enable_transparent_background"


async def test_a_body_that_is_not_json_is_refused(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    url = f"{emu.base_url}/v3/async/txt2img"
    async with session.post(url, data=b"{", headers=auth(emu)) as resp:
        assert resp.status == 400
        assert (await resp.json())["reason"] == "INVALID_REQUEST_BODY"
    async with session.post(url, json=wrapped("txt2img")) as resp:
        assert resp.status == 401


# --- faults, limits, webhooks, the account ---------------------------------------------------


@pytest.mark.parametrize("route", V3_ROUTES)
async def test_scripted_faults_apply_to_each_route(
    emu: Emulator, session: aiohttp.ClientSession, route: str
) -> None:
    emu.faults.script(route, ["503", "429", "ok"])
    status, answer = await post(session, emu, route, wrapped(route))
    assert (status, answer["reason"]) == (503, "SERVICE_UNAVAILABLE")
    status, _ = await post(session, emu, route, wrapped(route))
    assert status == 429
    await submitted(session, emu, route, wrapped(route))
    stats = emu.stats()
    assert stats.requests[route] == {"503": 1, "429": 1, "200": 1}
    assert stats.submissions_by_route == {route: 1}
    # The other routes are untouched by this route's script.
    assert emu.faults.pending("submit") == 0


async def test_a_drawn_error_spec_and_reset_after_apply(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.set("img2img", error_5xx=1.0)
    status, answer = await post(session, emu, "img2img", wrapped("img2img"))
    assert status in (500, 503)
    assert answer["reason"] in ("CREATE_TASK_FAILED", "SERVICE_UNAVAILABLE")
    emu.faults.clear("img2img")
    emu.faults.script("inpainting", ["reset_after"])
    with pytest.raises(aiohttp.ClientError):
        await post(session, emu, "inpainting", wrapped("inpainting"))
    # The task exists (it will be billed) though its answer was lost.
    assert emu.stats().submissions_by_route == {"inpainting": 1}


async def test_an_account_error_applies_to_the_new_routes(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.account_error(AccountError(after=1, routes=("txt2img", "user")))
    await submitted(session, emu, "txt2img", wrapped("txt2img"))
    status, answer = await post(session, emu, "txt2img", wrapped("txt2img"))
    assert (status, answer["reason"]) == (400, "BILLING_BALANCE_NOT_ENOUGH")
    async with session.get(emu.base_url + "/v3/user", headers=auth(emu)) as resp:
        assert resp.status == 400
    # Not named: still served.
    await submitted(session, emu, "upscale", wrapped("upscale"))


@pytest.mark.emulator(rate_limit_images_per_minute=3)
async def test_the_images_limit_counts_image_num_per_endpoint(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    await submitted(session, emu, "txt2img", wrapped("txt2img", image_num=3))
    status, answer = await post(session, emu, "txt2img", wrapped("txt2img"))
    assert (status, answer["reason"]) == (429, "RATE_LIMIT_EXCEEDED")
    status, _ = await post(session, emu, "img2img", wrapped("img2img", image_num=4))
    assert status == 429
    # Another endpoint has its own window; an upscale counts one image.
    await submitted(session, emu, "img2img", wrapped("img2img", image_num=3))
    for _ in range(3):
        await submitted(session, emu, "upscale", wrapped("upscale"))
    status, _ = await post(session, emu, "upscale", wrapped("upscale"))
    assert status == 429
    stats = emu.stats()
    assert stats.rate_limited == 3
    assert stats.submissions_by_route == {"txt2img": 1, "img2img": 1, "upscale": 3}


class Hooks:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.arrived = anyio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        self.arrived.set()
        self.arrived = anyio.Event()
        return web.Response(text="ok")

    async def wait(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.events) < count:
                await self.arrived.wait()


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    hooks = Hooks()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hooks.url = f"http://{host}:{port}/hook"
    try:
        yield hooks
    finally:
        await runner.cleanup()


async def test_a_task_ends_through_its_webhook(
    emu: Emulator, session: aiohttp.ClientSession, hooks: Hooks
) -> None:
    payload = wrapped("upscale", scale_factor=3, extra={"webhook": {"url": hooks.url}})
    task_id = await submitted(session, emu, "upscale", payload)
    await hooks.wait(1)
    event = hooks.events[0]
    assert event["event_type"] == "ASYNC_TASK_RESULT"
    assert event["payload"]["task"]["task_id"] == task_id
    assert event["payload"]["task"]["task_type"] == "UPSCALE"
    assert await sizes_of(session, event["payload"]) == [(144, 120)]
    # Test mode: a simulated event at once, no task.
    test_mode = {"enabled": True, "return_task_status": _spec.STATUS_FAILED}
    payload = wrapped("txt2img", extra={"webhook": {"url": hooks.url, "test_mode": test_mode}})
    simulated = await submitted(session, emu, "txt2img", payload)
    await hooks.wait(2)
    assert hooks.events[1]["payload"]["task"]["task_id"] == simulated
    assert hooks.events[1]["payload"]["task"]["status"] == _spec.STATUS_FAILED
    assert hooks.events[1]["payload"]["task"]["task_type"] == "TXT_TO_IMG"
    status, _ = await get_result(session, emu, simulated)
    assert status == 404
    assert emu.stats().submissions_by_route == {"upscale": 1}


@pytest.mark.emulator(credit_balance=1_234_567)
async def test_the_user_route_answers_the_credit_balance(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    url = emu.base_url + "/v3/user"
    async with session.get(url, headers=auth(emu)) as resp:
        assert resp.status == 200
        assert await resp.json() == {"credit_balance": 1_234_567}
    async with session.get(url) as resp:
        assert resp.status == 401
    emu.faults.script("user", ["500"])
    async with session.get(url, headers=auth(emu)) as resp:
        assert resp.status == 500
    assert emu.stats().requests["user"] == {"200": 1, "401": 1, "500": 1}


async def test_instant_id_submissions_are_counted_under_submit(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    await post_task(session, emu, body(face, face, cfg_scale=3))
    await submitted(session, emu, "txt2img", wrapped("txt2img"))
    stats = emu.stats()
    assert stats.submissions_by_route == {"submit": 1, "txt2img": 1}
    assert stats.unknown_fields == {}
