"""The emulator's account as the service has one: per-route image limits (the documented
defaults on request), a balance that tasks spend and that refuses a submission it cannot pay,
duplicate detection without hashing megabytes of base64, and tasks that keep thumbnails of their
inputs, never the inputs."""

from __future__ import annotations

import argparse
from io import BytesIO
from typing import Any

import aiohttp
import pytest
from emu_helpers import auth, body, post_task, upload
from PIL import Image
from test_v3_tasks import b64, finished, png, post, submitted, wrapped

from novita_async import BadRequestError, NovitaClient, Txt2ImgRequest
from novita_async.emulator import (
    DOCUMENTED_IMAGES_PER_MINUTE,
    IMAGE_COSTS,
    AccountError,
    Emulator,
    EmulatorConfig,
)
from novita_async.emulator._cli import add_arguments, config_from_args
from novita_async.emulator._images import THUMBNAIL_SIDE

# --- per-route limits -------------------------------------------------------------------------


def test_the_documented_limits_are_the_docs() -> None:
    assert DOCUMENTED_IMAGES_PER_MINUTE == {
        "txt2img": 20,
        "img2img": 10,
        "inpainting": 10,
        "upscale": 20,
    }
    assert EmulatorConfig().route_images_per_minute == {}  # off unless asked for


@pytest.mark.emulator(route_images_per_minute=DOCUMENTED_IMAGES_PER_MINUTE)
async def test_each_route_has_its_documented_images_per_minute(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    # img2img: 10 images a minute; 8 + 2 fit, one more does not.
    await submitted(session, emu, "img2img", wrapped("img2img", image_num=8))
    await submitted(session, emu, "img2img", wrapped("img2img", image_num=2))
    status, answer = await post(session, emu, "img2img", wrapped("img2img"))
    assert (status, answer["reason"]) == (429, "RATE_LIMIT_EXCEEDED")
    # txt2img has its own window of 20, untouched by img2img's.
    for image_num in (8, 8, 4):
        await submitted(session, emu, "txt2img", wrapped("txt2img", image_num=image_num))
    status, _ = await post(session, emu, "txt2img", wrapped("txt2img"))
    assert status == 429
    # Per key: another key starts with a full minute.
    status, _ = await post(session, emu, "img2img", wrapped("img2img", image_num=8), key="k2")
    assert status == 200
    # Upscale counts one image per task: 20 pass, the 21st is refused.
    for _ in range(20):
        await submitted(session, emu, "upscale", wrapped("upscale"))
    status, _ = await post(session, emu, "upscale", wrapped("upscale"))
    assert status == 429
    stats = emu.stats()
    assert stats.rate_limited == 3
    assert stats.submissions_by_route == {"img2img": 3, "txt2img": 3, "upscale": 20}


@pytest.mark.emulator(route_images_per_minute={"inpainting": 2}, rate_limit_images_per_minute=3)
async def test_a_route_not_named_keeps_the_accounts_images_per_minute(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    await submitted(session, emu, "inpainting", wrapped("inpainting", image_num=2))
    assert (await post(session, emu, "inpainting", wrapped("inpainting")))[0] == 429
    await submitted(session, emu, "txt2img", wrapped("txt2img", image_num=3))
    assert (await post(session, emu, "txt2img", wrapped("txt2img")))[0] == 429


def parse(*argv: str) -> EmulatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_the_command_line_sets_route_limits_and_costs() -> None:
    assert parse("--route-limit", "documented").route_images_per_minute == dict(
        DOCUMENTED_IMAGES_PER_MINUTE
    )
    config = parse(
        "--route-limit", "documented",
        "--route-limit", "txt2img=40,upscale=30",
        "--route-limit", "submit=5",
        "--image-cost", "txt2img=0",
    )  # fmt: skip
    assert config.route_images_per_minute == {
        "txt2img": 40, "img2img": 10, "inpainting": 10, "upscale": 30, "submit": 5
    }  # fmt: skip
    assert config.image_costs == {**IMAGE_COSTS, "txt2img": 0}
    assert parse().image_costs == IMAGE_COSTS


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--route-limit", "adetailer=10"),
        ("--route-limit", "txt2img"),
        ("--route-limit", "txt2img=0"),
        ("--route-limit", "txt2img=ten"),
        ("--image-cost", "user=3"),
        ("--image-cost", "txt2img=-1"),
        ("--image-cost", "documented"),
    ],
)
def test_the_command_line_refuses_a_bad_route_or_number(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises((SystemExit, ValueError)):
        config_from_args(parser.parse_args([flag, value]))


@pytest.mark.parametrize(
    "limits", [{"adetailer": 10}, {"txt2img": 0}, {"txt2img": 2.5}, {"txt2img": True}]
)
def test_the_config_refuses_a_bad_route_limit(limits: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        EmulatorConfig(route_images_per_minute=limits)


# --- the balance ------------------------------------------------------------------------------


async def balance_of(session: aiohttp.ClientSession, emu: Emulator) -> int:
    async with session.get(emu.base_url + "/v3/user", headers=auth(emu)) as resp:
        assert resp.status == 200
        return int((await resp.json())["credit_balance"])


@pytest.mark.emulator(credit_balance=10_000)
async def test_tasks_spend_the_balance_per_image_and_route(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    assert await balance_of(session, emu) == 10_000
    await submitted(session, emu, "txt2img", wrapped("txt2img", image_num=3))
    await submitted(session, emu, "upscale", wrapped("upscale"))
    face = await upload(session, emu)
    assert (await post_task(session, emu, body(face, face, image_num=2)))[0] == 200
    spent = 3 * IMAGE_COSTS["txt2img"] + IMAGE_COSTS["upscale"] + 2 * IMAGE_COSTS["submit"]
    assert await balance_of(session, emu) == 10_000 - spent
    assert emu.stats().credit_balance == 10_000 - spent
    # What creates no task costs nothing: a refusal, a 429, a webhook test.
    assert (await post(session, emu, "txt2img", wrapped("txt2img", steps=0)))[0] == 400
    emu.faults.script("img2img", ["429"])
    assert (await post(session, emu, "img2img", wrapped("img2img")))[0] == 429
    test_mode = {"enabled": True, "return_task_status": "TASK_STATUS_SUCCEED"}
    webhook = {"url": "http://127.0.0.1:9/hook", "test_mode": test_mode}
    status, _ = await post(session, emu, "txt2img", wrapped("txt2img", extra={"webhook": webhook}))
    assert status == 200
    assert await balance_of(session, emu) == 10_000 - spent
    emu.reset_stats()  # counters, not the account
    assert emu.stats().credit_balance == 10_000 - spent


@pytest.mark.emulator(credit_balance=40)
async def test_a_balance_that_cannot_pay_refuses_as_the_account_error_does(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    # 40 units: two 15-unit images, then 10 left: too little for one more.
    await submitted(session, emu, "img2img", wrapped("img2img", image_num=2))
    status, refused = await post(session, emu, "txt2img", wrapped("txt2img"))
    assert status == 400
    async with Emulator(EmulatorConfig(account_error=AccountError())) as other:
        status, account = await post(session, other, "txt2img", wrapped("txt2img"))
    assert status == 400 and refused == account
    assert set(refused) == {"code", "reason", "message", "metadata"}
    assert refused["reason"] == "BILLING_BALANCE_NOT_ENOUGH"
    # A free route still needs a balance above zero.
    free = {**IMAGE_COSTS, "submit": 0}
    async with Emulator(EmulatorConfig(credit_balance=0, image_costs=free)) as broke:
        face = await upload(session, broke)
        status, answer = await post_task(session, broke, body(face, face))
        assert (status, answer["reason"]) == (400, "BILLING_BALANCE_NOT_ENOUGH")
        assert broke.stats().faults["balance_not_enough"] == 1
    # A top-up serves it again.
    emu.set_credit_balance(100)
    await submitted(session, emu, "txt2img", wrapped("txt2img"))
    assert emu.stats().submissions_by_route == {"img2img": 1, "txt2img": 1}
    assert emu.stats().faults["balance_not_enough"] == 1


async def test_the_balance_is_set_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.base_url + "/__emulator/credit-balance"
    async with session.post(url, json={"units": 123}) as resp:
        assert resp.status == 200 and await resp.json() == {"credit_balance": 123}
    assert await balance_of(session, emu) == 123
    async with session.post(url, json={"units": -1}) as resp:
        assert resp.status == 400


@pytest.mark.emulator(credit_balance=100)
async def test_the_client_sees_the_balance_go_down_and_run_out(emu: Emulator) -> None:
    async with NovitaClient(emu.api_key, base_url=emu.base_url) as client:
        assert await client.balance() == 0.01
        request = Txt2ImgRequest(model_name="m.safetensors", prompt="a cat", image_num=6)
        await client.submit(request)  # 90 units
        assert await client.balance() == pytest.approx(0.001)
        with pytest.raises(BadRequestError) as caught:
            await client.submit(request)
    assert caught.value.reason == "BILLING_BALANCE_NOT_ENOUGH"


async def test_an_account_error_refuses_every_submission_route_by_default(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.account_error(after=0)
    for route in ("txt2img", "img2img", "inpainting", "upscale"):
        status, answer = await post(session, emu, route, wrapped(route))
        assert (status, answer["reason"]) == (400, "BILLING_BALANCE_NOT_ENOUGH"), route
    face = await upload(session, emu)
    assert (await post_task(session, emu, body(face, face)))[0] == 400
    assert await balance_of(session, emu) == EmulatorConfig().credit_balance  # not on user


# --- what a task keeps ------------------------------------------------------------------------


async def test_the_same_body_twice_is_a_duplicate_and_another_image_is_not(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    payload = wrapped("img2img")
    await submitted(session, emu, "img2img", payload)
    # The same content, keys in another order: the same submission.
    reordered = {"request": dict(reversed(list(payload["request"].items())))}
    await submitted(session, emu, "img2img", reordered)
    assert emu.stats().duplicate_submissions == 1
    # Another picture: not the same.
    other = wrapped("img2img", image_base64=b64(png(48, 41)))
    await submitted(session, emu, "img2img", other)
    # The same request to another route is another submission.
    await submitted(session, emu, "inpainting", wrapped("inpainting"))
    await submitted(session, emu, "inpainting", wrapped("inpainting"))
    assert emu.stats().duplicate_submissions == 2


async def test_a_task_keeps_no_input_image_nested_or_not(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    image = b64(png(64, 64, (1, 2, 3)))
    unit = {"model_name": "control_v11p_sd15_canny", "image_base64": image, "strength": 0.5}
    adapter = {"model_name": "ip-adapter_sd15.bin", "image_base64": image, "strength": 0.4}
    payload = wrapped("img2img", controlnet={"units": [unit, unit]}, ip_adapters=[adapter])
    task_id = await submitted(session, emu, "img2img", payload)
    record = emu._state.tasks.get(task_id)
    assert record is not None
    kept = repr(record.body) + repr(record.inputs)
    assert image[:40] not in kept and "_base64" not in repr(record.body)
    assert record.body["controlnet"]["units"][1] == {
        "model_name": "control_v11p_sd15_canny", "strength": 0.5
    }  # fmt: skip
    assert record.body["ip_adapters"] == [{"model_name": "ip-adapter_sd15.bin", "strength": 0.4}]
    assert emu.stats().unknown_fields == {}
    # What was sent is not changed by what the task keeps.
    assert payload["request"]["controlnet"]["units"][0]["image_base64"] == image


@pytest.mark.emulator(image_mode="full")
async def test_a_task_keeps_a_thumbnail_of_a_large_input_and_its_pictures_show_it(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    image, mask = png(2000, 1200, (220, 30, 30)), png(2000, 1200, (255, 255, 255))
    payload = wrapped("inpainting", image_base64=b64(image), mask_image_base64=b64(mask))
    task_id = await submitted(session, emu, "inpainting", payload)
    record = emu._state.tasks.get(task_id)
    assert record is not None and len(record.inputs) == 2
    for kept in record.inputs:
        with Image.open(BytesIO(kept.thumbnail)) as thumbnail:
            assert max(thumbnail.size) == THUMBNAIL_SIDE
            assert thumbnail.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE * 1200 // 2000)
    result = await finished(session, emu, task_id)
    async with session.get(result["images"][0]["image_url"]) as resp:
        assert resp.status == 200
        with Image.open(BytesIO(await resp.read())) as picture:
            assert picture.size == (2000, 1200)
            # The image panel (top left) shows the red input.
            red, green, blue = picture.convert("RGB").getpixel((500, 330))  # type: ignore[misc]
            assert red > 180 and green < 80 and blue < 80


@pytest.mark.emulator(image_mode="tiny")
async def test_tiny_pictures_keep_nothing_of_the_inputs(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    task_id = await submitted(session, emu, "upscale", wrapped("upscale"))
    record = emu._state.tasks.get(task_id)
    assert record is not None and record.inputs == ()
