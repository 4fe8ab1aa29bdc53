"""Result images: decodable, sized, typed, deterministic; signed URLs on the image origin."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from emu_helpers import body, finished_task, picture, upload
from PIL import Image

from novita_async.emulator import Emulator, EmulatorConfig


async def _download(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


@pytest.mark.parametrize(("image_type", "pil_format"), [
    ("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP"),
])  # fmt: skip
async def test_images_decode_at_the_requested_size_and_type(
    emu: Emulator, session: aiohttp.ClientSession, image_type: str, pil_format: str
) -> None:
    face = await upload(session, emu)
    ref = await upload(session, emu, picture((20, 20, 220)))
    request = body(face, ref, width=320, height=200, image_num=2,
                   extra={"response_image_type": image_type})  # fmt: skip
    answer = await finished_task(session, emu, request)
    pictures = []
    for image in answer["images"]:
        assert image["image_type"] == image_type
        async with session.get(image["image_url"]) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == f"image/{image_type}"
            data = await resp.read()
            assert int(resp.headers["Content-Length"]) == len(data)
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == pil_format
            assert decoded.size == (320, 200)
        pictures.append(data)
    assert pictures[0] != pictures[1]  # image 1/2 and 2/2 differ
    assert emu.stats().image_downloads == 2


async def test_the_picture_shows_the_face_and_the_reference(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    red, blue = (220, 20, 20), (20, 20, 220)
    face = await upload(session, emu, picture(red))
    ref = await upload(session, emu, picture(blue))
    answer = await finished_task(session, emu, body(face, ref, width=400, height=400))
    data = await _download(session, answer["images"][0]["image_url"])
    with Image.open(io.BytesIO(data)) as decoded:
        colours = {colour for _, colour in decoded.convert("RGB").getcolors(400 * 400) or []}
    assert red in colours and blue in colours
    # Left half shows the face, right half the reference.
    with Image.open(io.BytesIO(data)) as decoded:
        rgb = decoded.convert("RGB")
        assert rgb.getpixel((100, 110)) == red
        assert rgb.getpixel((300, 110)) == blue


async def test_same_inputs_give_the_same_picture(session: aiohttp.ClientSession) -> None:
    async def render(seed: int) -> bytes:
        async with Emulator(EmulatorConfig(task_base_seconds=0)) as emu:
            face = await upload(session, emu)
            answer = await finished_task(session, emu, body(face, face, seed=seed))
            return await _download(session, answer["images"][0]["image_url"])

    first, again, other = await render(42), await render(42), await render(43)
    assert first == again
    assert first != other


async def test_tiny_mode_serves_a_valid_image_of_the_requested_size(
    session: aiohttp.ClientSession,
) -> None:
    async with Emulator(EmulatorConfig(task_base_seconds=0, image_mode="tiny")) as emu:
        face = await upload(session, emu)
        request = body(face, face, width=1024, height=768, extra={"response_image_type": "jpeg"})
        answer = await finished_task(session, emu, request)
        data = await _download(session, answer["images"][0]["image_url"])
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (1024, 768))


async def test_large_images_are_padded_to_the_configured_size(
    session: aiohttp.ClientSession,
) -> None:
    size = 3 * 1024 * 1024 + 17
    config = EmulatorConfig(task_base_seconds=0, image_mode="tiny", image_size_bytes=size)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        answer = await finished_task(session, emu, body(face, face))
        data = await _download(session, answer["images"][0]["image_url"])
        assert emu.stats().image_bytes == size
    assert len(data) == size
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (256, 192)


async def test_expired_url_is_403_access_denied_xml(session: aiohttp.ClientSession) -> None:
    async with Emulator(EmulatorConfig(task_base_seconds=0, image_url_ttl=0)) as emu:
        face = await upload(session, emu)
        answer = await finished_task(session, emu, body(face, face))
        assert answer["images"][0]["image_url_ttl"] == "0"
        async with session.get(answer["images"][0]["image_url"]) as resp:
            assert resp.status == 403
            assert resp.content_type == "application/xml"
            text = await resp.text()
    assert "<Code>AccessDenied</Code>" in text
    assert "<Message>Request has expired</Message>" in text


async def test_tampered_signature_is_403(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    url = urlsplit(answer["images"][0]["image_url"])
    query = dict(parse_qsl(url.query))
    query["X-Amz-Expires"] = "999999"  # a longer life than was signed
    forged = url._replace(query=urlencode(query)).geturl()
    async with session.get(forged) as resp:
        assert resp.status == 403
        assert "<Code>AccessDenied</Code>" in await resp.text()
    async with session.get(url._replace(query="").geturl()) as resp:
        assert resp.status == 403


async def test_authorization_on_an_image_url_is_400_and_counted(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    headers = {"Authorization": "Bearer key-that-must-not-leak"}
    async with session.get(answer["images"][0]["image_url"], headers=headers) as resp:
        assert resp.status == 400
        text = await resp.text()
    assert "<Code>InvalidArgument</Code>" in text
    assert "key-that-must-not-leak" not in text
    stats = emu.stats()
    assert stats.unexpected_auth == 1
    assert stats.image_downloads == 0


async def test_the_signature_covers_the_path(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    url = urlsplit(answer["images"][0]["image_url"])
    # Same signature but a different path: the signature no longer matches.
    async with session.get(url._replace(path=url.path + "x").geturl()) as resp:
        assert resp.status == 403
