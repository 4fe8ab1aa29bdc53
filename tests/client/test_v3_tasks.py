"""The client's v3 image tasks against a small aiohttp server on loopback that records what it
receives (the emulator does not serve these endpoints yet): ``submit`` of each request type,
inputs read from paths, bytes and URLs, checked against the endpoint's limits and encoded once,
``txt2img``/``img2img``/``inpainting``/``upscale`` from submission to files, both answer shapes,
and ``balance``."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from novita_async import InstantIDRequest, InvalidResponseError, NovitaClient, ValidationError
from novita_async._files import image_size
from novita_async._models import (
    Img2ImgRequest,
    InpaintingRequest,
    Txt2ImgRequest,
    UpscaleRequest,
)

from .conftest import FAST_POLL, FAST_RETRY

KEY = "sk-test-v3"
BASE = {"model_name": "m.safetensors", "prompt": "a cat"}


def picture(size: tuple[int, int] = (64, 48), kind: str = "PNG", noise: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (noise % 256, 120, 80)).save(buffer, format=kind)
    return buffer.getvalue()


@attrs.define
class Recorder:
    """What the server received, and how it answers."""

    posts: list[tuple[str, dict[str, Any], str]] = attrs.Factory(list)
    polls: int = 0
    old_shape: bool = False
    credit: Any = 123_456
    outputs: int = 1
    input_image: bytes = b""
    image_gets: int = 0


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, Recorder]]:
    seen = Recorder()

    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        seen.posts.append((request.match_info["task"], body, request.headers["Authorization"]))
        task_id = f"task-{len(seen.posts)}"
        answer = (
            {"code": 0, "msg": "", "data": {"task_id": task_id}}
            if seen.old_shape
            else {"task_id": task_id}
        )
        return web.json_response(answer)

    async def result(request: web.Request) -> web.Response:
        seen.polls += 1
        base = str(request.url.origin())
        images = [
            {"image_url": f"{base}/out/{n}.png", "image_url_ttl": 3600, "image_type": "png"}
            for n in range(seen.outputs)
        ]
        task = {"task_id": request.query["task_id"], "status": "TASK_STATUS_SUCCEED"}
        return web.json_response({"task": task, "images": images})

    async def output(_: web.Request) -> web.Response:
        seen.image_gets += 1
        return web.Response(body=picture((8, 8)), content_type="image/png")

    async def user(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        return web.json_response({"credit_balance": seen.credit, "allow_features": []})

    async def source(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers
        return web.Response(body=seen.input_image, content_type="image/png")

    app = web.Application(client_max_size=200 * 1024 * 1024)
    app.router.add_post("/v3/async/{task}", submit)
    app.router.add_get("/v3/async/task-result", result)
    app.router.add_get("/out/{name}", output)
    app.router.add_get("/v3/user", user)
    app.router.add_get("/inputs/{name}", source)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server, seen
    finally:
        await test_server.close()


@pytest.fixture
async def client(server: tuple[TestServer, Recorder]) -> AsyncIterator[NovitaClient]:
    test_server, _ = server
    base = str(test_server.make_url("")).rstrip("/")
    async with NovitaClient(KEY, base_url=base, assets_url=base, retry=FAST_RETRY) as made:
        yield made


def decoded(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


async def test_txt2img_submits_waits_and_downloads(
    client: NovitaClient, server: tuple[TestServer, Recorder], tmp_path: Path
) -> None:
    _, seen = server
    seen.outputs = 2
    request = Txt2ImgRequest(**BASE, image_num=2, extra={"response_image_type": "png"})
    outcome = await client.txt2img(request, out_dir=tmp_path, poll=FAST_POLL)
    assert outcome.task_id == "task-1"
    assert [path.name for path in outcome.files] == ["0.png", "1.png"]
    assert all(image_size(path.read_bytes()) == (8, 8) for path in outcome.files)
    [(task, body, auth)] = seen.posts
    assert (task, auth) == ("txt2img", f"Bearer {KEY}")
    assert body == request.body({})
    assert set(body) == {"extra", "request"} and None not in body["request"].values()


async def test_img2img_inputs_from_path_bytes_and_url_are_encoded_once_per_content(
    client: NovitaClient, server: tuple[TestServer, Recorder], tmp_path: Path
) -> None:
    test_server, seen = server
    shared = picture((64, 48))
    path = tmp_path / "in.png"
    path.write_bytes(shared)
    seen.input_image = picture((32, 32), noise=9)
    request = Img2ImgRequest(
        **BASE,
        controlnet={
            "units": [{"model_name": "c", "strength": 1}, {"model_name": "d", "strength": 1}]
        },
        ip_adapters=[{"model_name": "ip-adapter_sd15.bin", "strength": 0.5}],
    )
    url = str(test_server.make_url("/inputs/ref.png?X-Amz-Signature=secret"))
    outcome = await client.img2img(
        request,
        image=path,
        controlnet_images=[shared, url],
        ip_adapter_images=[bytearray(shared)],
        out_dir=tmp_path / "out",
        poll=FAST_POLL,
    )
    assert len(outcome.files) == 1
    [(task, body, _)] = seen.posts
    sent = body["request"]
    assert task == "img2img"
    assert decoded(sent["image_base64"]) == shared
    units = sent["controlnet"]["units"]
    assert [decoded(unit["image_base64"]) for unit in units] == [shared, seen.input_image]
    assert decoded(sent["ip_adapters"][0]["image_base64"]) == shared
    # The same content, one string wherever it goes (encoded once: the next test counts).
    assert (
        sent["image_base64"] == units[0]["image_base64"] == sent["ip_adapters"][0]["image_base64"]
    )


async def test_encoding_happens_once_per_distinct_content(
    client: NovitaClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = base64.b64encode

    def counting(data: bytes) -> bytes:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr("novita_async._client.base64.b64encode", counting)
    shared, other = picture(), picture(noise=50)
    request = Img2ImgRequest(**BASE, controlnet={"units": [{"model_name": "c", "strength": 1}] * 3})
    await client.submit(
        request,
        images={
            "image": shared,
            "controlnet.units[0].image": shared,
            "controlnet.units[1].image": other,
            "controlnet.units[2].image": bytes(shared),
        },
    )
    assert calls == [len(shared), len(other)]


async def test_inpainting_and_upscale(
    client: NovitaClient, server: tuple[TestServer, Recorder], tmp_path: Path
) -> None:
    _, seen = server
    image, mask = picture((40, 30)), picture((40, 30), noise=255)
    done = await client.inpainting(
        InpaintingRequest(**BASE, mask_blur=4),
        image=image,
        mask_image=mask,
        out_dir=tmp_path / "a",
        poll=FAST_POLL,
    )
    bigger = await client.upscale(
        UpscaleRequest(model_name="4x-UltraSharp", scale_factor=2),
        image=picture((2048, 16), kind="JPEG"),
        out_dir=tmp_path / "b",
        poll=FAST_POLL,
    )
    assert (done.task_id, bigger.task_id) == ("task-1", "task-2")
    (task_a, body_a, _), (task_b, body_b, _) = seen.posts
    assert (task_a, task_b) == ("inpainting", "upscale")
    assert decoded(body_a["request"]["mask_image_base64"]) == mask
    assert body_b["request"]["scale_factor"] == 2 and "image_num" not in body_b["request"]


async def test_the_old_answer_shape_is_accepted(
    client: NovitaClient, server: tuple[TestServer, Recorder]
) -> None:
    server[1].old_shape = True
    assert await client.submit(Txt2ImgRequest(**BASE)) == "task-1"


@pytest.mark.parametrize(
    ("request_", "images", "field", "says"),
    [
        (
            UpscaleRequest(model_name="4x-UltraSharp"),
            {"image": picture((2049, 8))},
            "image",
            "2048x2048",
        ),
        (
            UpscaleRequest(model_name="4x-UltraSharp"),
            {"image": picture((8, 2049))},
            "image",
            "2048x2048",
        ),
        (Img2ImgRequest(**BASE), {"image": picture((4097, 4096), kind="JPEG")}, "image", "pixels"),
        (Img2ImgRequest(**BASE), {"image": b"GIF89a not an image we take"}, "image", "PNG, JPEG"),
        (Img2ImgRequest(**BASE), {"image": b""}, "image", "empty"),
        (Img2ImgRequest(**BASE), {}, "images", "required"),
        (
            Img2ImgRequest(**BASE),
            {"image": picture(), "mask_image": picture()},
            "images",
            "is not an input of img2img",
        ),
        (
            InpaintingRequest(**BASE),
            {"image": picture((40, 30)), "mask_image": picture((30, 40))},
            "mask_image",
            "resolution of image",
        ),
    ],
)
async def test_inputs_outside_the_endpoint_limits_are_refused_before_sending(
    client: NovitaClient,
    server: tuple[TestServer, Recorder],
    request_: Any,
    images: dict[str, bytes],
    field: str,
    says: str,
) -> None:
    with pytest.raises(ValidationError, match=says) as caught:
        await client.submit(request_, images=images)
    assert caught.value.field == field
    assert server[1].posts == []
    # No image content in the error: a description, never the bytes or their base64.
    for data in images.values():
        if data:
            assert base64.b64encode(data).decode()[:16] not in str(caught.value)


async def test_byte_limits(
    client: NovitaClient, monkeypatch: pytest.MonkeyPatch, server: tuple[TestServer, Recorder]
) -> None:
    # 10 MB for img2img: a PNG of 10 MiB + 1 bytes (its header, then padding) is refused.
    png = picture((16, 16))
    padded = png + b"\0" * (10 * 1024 * 1024 + 1 - len(png))
    with pytest.raises(ValidationError, match="at most 10485760 bytes") as caught:
        await client.submit(Img2ImgRequest(**BASE), images={"image": padded})
    assert "10485761 bytes" in str(caught.value)
    exact = padded[:-1]
    assert await client.submit(Img2ImgRequest(**BASE), images={"image": exact}) == "task-1"
    # Inpainting allows 30 MB: the same 10 MiB + 1 passes there.
    images = {"image": padded, "mask_image": padded}
    assert await client.submit(InpaintingRequest(**BASE), images=images) == "task-2"


async def test_no_base64_in_any_log_line(
    client: NovitaClient, server: tuple[TestServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    data = picture((50, 50), noise=77)
    encoded = base64.b64encode(data).decode()
    with caplog.at_level(logging.DEBUG):
        await client.submit(UpscaleRequest(model_name="4x-UltraSharp"), images={"image": data})
    assert server[1].posts[0][1]["request"]["image_base64"] == encoded
    assert encoded[:40] not in caplog.text
    assert encoded[:40] not in repr(client)


async def test_instant_id_submit_is_unchanged_and_takes_no_images(
    client: NovitaClient, server: tuple[TestServer, Recorder]
) -> None:
    request = InstantIDRequest(prompt="p", face_image_assets_ids=["f"], ref_image_assets_ids=["r"])
    assert await client.submit(request) == "task-1"
    task, body, _ = server[1].posts[0]
    assert task == "instant-id" and body["face_image_assets_ids"] == ["f"] and "request" not in body
    with pytest.raises(ValidationError):
        await client.submit(request, images={"image": picture()})


@pytest.mark.parametrize(
    ("credit", "dollars"), [(123_456, 12.3456), (0, 0.0), ("250000", 25.0), (1.5, 0.00015)]
)
async def test_balance_in_dollars(
    client: NovitaClient, server: tuple[TestServer, Recorder], credit: Any, dollars: float
) -> None:
    server[1].credit = credit
    assert await client.balance() == pytest.approx(dollars)
    assert server[1].posts == []


@pytest.mark.parametrize("credit", [None, "lots", True, [1]])
async def test_a_balance_answer_without_a_number_is_refused(
    client: NovitaClient, server: tuple[TestServer, Recorder], credit: Any
) -> None:
    server[1].credit = credit
    with pytest.raises(InvalidResponseError, match="credit_balance"):
        await client.balance()


@pytest.mark.parametrize(
    ("kind", "size"),
    [("PNG", (300, 200)), ("JPEG", (123, 45)), ("WEBP", (77, 66)), ("JPEG", (2048, 1))],
)
def test_image_size_reads_each_format_header(kind: str, size: tuple[int, int]) -> None:
    assert image_size(picture(size, kind=kind)) == size


def test_image_size_of_lossless_and_extended_webp() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (91, 17)).save(buffer, format="WEBP", lossless=True)
    assert image_size(buffer.getvalue()) == (91, 17)
    buffer = io.BytesIO()
    Image.new("RGBA", (33, 22), (1, 2, 3, 4)).save(buffer, format="WEBP", exif=b"Exif\0\0")
    assert image_size(buffer.getvalue()) == (33, 22)
    assert image_size(b"not an image") is None
    assert json.dumps(image_size(picture((5, 6)))) == "[5, 6]"
