"""Request bodies over 1 MiB (a v3 task's inline image, a large asset) go through the emulator
without aiohttp's ``ResourceWarning`` (warnings are errors here), a retry resends the same bytes,
and no log line or error carries the body's content."""

from __future__ import annotations

import base64
import io
import logging
import warnings

import pytest
from PIL import Image

from novita_async import APIStatusError, NovitaClient
from novita_async._models import Img2ImgRequest
from novita_async.emulator import Emulator

from .conftest import FAST_POLL

MIB = 1024 * 1024


def padded_png(total: int, colour: tuple[int, int, int] = (10, 200, 90)) -> bytes:
    """A valid PNG of exactly ``total`` bytes (a small picture, then padding after its end)."""
    out = io.BytesIO()
    Image.new("RGB", (160, 128), colour).save(out, "PNG")
    data = out.getvalue()
    return data + b"\0" * (total - len(data))


async def test_a_5_mib_img2img_body_is_sent_and_resent_whole(
    emu: Emulator, client: NovitaClient, caplog: pytest.LogCaptureFixture
) -> None:
    image = padded_png(4 * MIB)  # 5.3 MiB of base64 in the body
    encoded = base64.b64encode(image).decode()
    # The first attempt is answered 503 after the emulator read the whole body: the second must
    # carry the same bytes for the task to be created (the emulator validates the image again).
    emu.faults.script("img2img", ["503", "ok"])
    request = Img2ImgRequest(model_name="m.safetensors", prompt="a cat", width=256, height=192)
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="novita_async"):
        warnings.simplefilter("error")
        task_id = await client.submit(request, images={"image": image})
    stats = emu.stats()
    assert stats.count("img2img", 503) == 1 and stats.count("img2img", 200) == 1
    assert stats.submissions_by_route == {"img2img": 1}
    assert stats.unknown_fields == {}
    result = await client.wait_for_task(task_id, poll=FAST_POLL)
    assert len(result.images) == 1
    assert encoded[:32] not in caplog.text and encoded[-32:] not in caplog.text


async def test_a_refused_large_body_leaves_its_content_out_of_the_error(
    client: NovitaClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Not a picture past its first bytes: the emulator refuses it, naming the field only.
    image = padded_png(2 * MIB)[:40] + b"\xff" * (2 * MIB)
    encoded = base64.b64encode(image).decode()
    request = Img2ImgRequest(model_name="m.safetensors", prompt="a cat")
    with (
        caplog.at_level(logging.DEBUG, logger="novita_async"),
        pytest.raises(APIStatusError) as caught,
    ):
        await client._submit_body("img2img", request.body({"image": encoded}))
    assert caught.value.status == 400
    assert "image_base64" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert encoded[:32] not in text and encoded[1000:1032] not in text


async def test_a_2_mib_asset_upload_is_sent_and_resent_whole(
    emu: Emulator, client: NovitaClient
) -> None:
    image = padded_png(2 * MIB, (200, 30, 30))
    emu.faults.script("upload", ["503", "ok"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asset_id = await client.upload_asset(image)
    assert emu.asset_ids() == [asset_id]
    assert emu.stats().count("upload", 503) == 1 and emu.stats().uploads == 1
    # What arrived is the picture, byte for byte (the emulator keeps an asset's bytes).
    assert emu._state.assets[asset_id] == image


async def test_a_small_body_is_sent_as_json(emu: Emulator, client: NovitaClient) -> None:
    image = padded_png(4096)
    request = Img2ImgRequest(model_name="m.safetensors", prompt="a cat", width=128, height=128)
    task_id = await client.submit(request, images={"image": image})
    assert await emu.wait_task(task_id) == "TASK_STATUS_SUCCEED"
    assert emu.stats().submissions_by_route == {"img2img": 1}
