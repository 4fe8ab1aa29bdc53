"""The happy paths against the emulator over loopback HTTP."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path

import aiofiles
import anyio
import anyio.lowlevel
import pytest
from PIL import Image

from novita_async import (
    APIConnectionError,
    Extra,
    InstantIDRequest,
    NovitaClient,
    TaskStatus,
    ValidationError,
)
from novita_async.emulator import Emulator

from .conftest import FAST_POLL, EventLog, big_image_task, image_bytes


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


async def test_upload_submit_wait_download_round_trip(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path, events: EventLog
) -> None:
    async with aiofiles.open(face_png, "rb") as async_file:
        ids = [
            await client.upload_asset(face_png),
            await client.upload_asset(image_bytes("JPEG")),
            await client.upload_asset(async_file),
        ]
    assert len(set(ids)) == 3 and all(ids)

    request = InstantIDRequest(
        prompt="a portrait",
        face_image_assets_ids=ids[:1],
        ref_image_assets_ids=ids[1:],
        image_num=2,
        width=256,
        height=256,
        extra=Extra(response_image_type="jpeg"),
    )
    task_id = await client.submit_instant_id(request)
    seen: list[TaskStatus] = []
    result = await client.wait_for_task(
        task_id, poll=FAST_POLL, on_progress=lambda r: seen.append(r.status)
    )
    assert result.status is TaskStatus.SUCCEED
    assert seen[-1] is TaskStatus.SUCCEED
    assert len(result.images) == 2

    out = tmp_path / "out"
    paths = await client.download_images(result, out, stem="img-")
    assert [p.name for p in paths] == ["img-0.jpeg", "img-1.jpeg"]
    for path in paths:
        with Image.open(path) as picture:
            assert picture.format == "JPEG"
    assert leftovers(out) == []

    stats = emu.stats()
    assert stats.uploads == 3
    assert stats.submissions == 1
    assert stats.image_downloads == 2
    assert stats.unexpected_auth == 0
    assert {e.route for e in events.of("response")} == {"upload", "submit", "result", "image"}


async def test_instant_id_convenience_call(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    outcome = await client.instant_id(
        InstantIDRequest(prompt="a portrait", width=128, height=128),
        face_images=[face_png],
        ref_images=[image_bytes("WEBP")],
        out_dir=tmp_path / "o",
        poll=FAST_POLL,
    )
    assert outcome.result.task_id == outcome.task_id
    assert [p.name for p in outcome.files] == ["0.png"]
    assert outcome.files[0].stat().st_size > 0
    assert emu.stats().unexpected_auth == 0


async def test_instant_id_validates_fields_before_uploading(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="steps"):
        await client.instant_id(
            InstantIDRequest(prompt="p", steps=500),
            face_images=[face_png],
            ref_images=[face_png],
            out_dir=tmp_path,
        )
    assert emu.stats().uploads == 0


async def test_upload_rejects_what_is_not_an_image(client: NovitaClient, emu: Emulator) -> None:
    with pytest.raises(ValidationError, match="PNG, JPEG or WebP"):
        await client.upload_asset(b"GIF89a....")
    with pytest.raises(ValidationError, match="source"):
        await client.upload_asset(b"")
    assert emu.stats().uploads == 0


async def test_submit_checks_the_request_is_complete(client: NovitaClient, emu: Emulator) -> None:
    with pytest.raises(ValidationError, match="face_image_assets_ids"):
        await client.submit_instant_id(InstantIDRequest(prompt="template only"))
    assert emu.stats().count("submit") == 0


async def test_upload_assets_keeps_order(client: NovitaClient, emu: Emulator) -> None:
    sources = [image_bytes("PNG", (32 + n, 32)) for n in range(6)]
    ids = await client.upload_assets(sources, concurrency=3)
    assert len(ids) == 6 and len(set(ids)) == 6
    assert emu.stats().uploads == 6


async def test_download_streams_without_holding_the_image(face_png: Path, tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    async with big_image_task(face_png, size) as (_, client, result):
        dest = tmp_path / "big.png"
        tracemalloc.start()
        try:
            await client.download_image(result.images[0], dest)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert dest.stat().st_size == size
    # Streamed in chunks: far less than the image was ever held in memory at once.
    assert peak < size // 4
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "size", [100 * 1024, 512 * 1024, 3 * 1024 * 1024], ids=["inline", "in-a-thread", "streamed"]
)
async def test_each_image_is_hashed_as_it_is_written(
    face_png: Path, tmp_path: Path, size: int
) -> None:
    async with big_image_task(face_png, size) as (_, client, result):
        [saved] = await client._download_images(result, tmp_path / "out", stem="j_")
    assert saved.path == tmp_path / "out" / "j_0.png"
    data = saved.path.read_bytes()
    assert (saved.size, saved.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert len(data) == size


async def test_a_large_truncated_download_is_retried_and_leaves_no_file(
    face_png: Path, tmp_path: Path
) -> None:
    # Half of 3 MiB is past the in-memory buffer: the body was streaming to a temporary file.
    async with big_image_task(face_png, 3 * 1024 * 1024) as (emu, client, result):
        emu.faults.script("image", ["truncate"] * 3)
        out = tmp_path / "out"
        with pytest.raises(APIConnectionError):
            await client.download_image(result.images[0], out / "0.png")
        assert emu.stats().count("image") == 3
    assert not out.exists() or list(out.iterdir()) == []


async def test_download_replaces_an_existing_file_atomically(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    asset = await client.upload_asset(face_png)
    task_id = await client.submit_instant_id(
        InstantIDRequest(prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset])
    )
    result = await client.wait_for_task(task_id, poll=FAST_POLL)
    dest = tmp_path / "0.png"
    dest.write_bytes(b"old")
    await client.download_image(result.images[0], dest)
    with Image.open(io.BytesIO(dest.read_bytes())) as picture:
        assert picture.format == "PNG"
    assert leftovers(tmp_path) == []


async def test_list_models_pages_through_everything_with_filters(
    client: NovitaClient, emu: Emulator
) -> None:
    everything = [m.sd_name async for m in client.list_models(types=None, is_sdxl=None)]
    paged = [m.sd_name async for m in client.list_models(types=None, is_sdxl=None, page_size=7)]
    assert paged == everything
    assert len(set(everything)) == len(everything) > 7
    pages = -(-len(everything) // 7)
    assert emu.stats().count("models") == 1 + pages

    checkpoints = [m async for m in client.list_models()]
    assert checkpoints
    assert all(m.type and m.type.name == "checkpoint" and m.is_sdxl for m in checkpoints)
    assert "sdxlUnstableDiffusers_v8HEAVENSWRATH_133813.safetensors" in {
        m.sd_name for m in checkpoints
    }

    controlnets = [m async for m in client.list_models(types=["controlnet", "vae"], is_sdxl=None)]
    assert {m.type.name for m in controlnets if m.type} == {"controlnet", "vae"}

    found = [m.sd_name async for m in client.list_models(query="juggernaut")]
    assert found and all("juggernaut" in name.lower() for name in found)

    inpainting = [m async for m in client.list_models(is_inpainting=True)]
    assert inpainting and all(m.is_inpainting for m in inpainting)


async def test_list_models_rejects_unknown_type(client: NovitaClient) -> None:
    with pytest.raises(ValidationError, match="types"):
        async for _ in client.list_models(types="sampler"):
            pass


async def test_a_cancelled_large_download_leaves_no_partial_file(
    face_png: Path, tmp_path: Path
) -> None:
    # Larger than the in-memory buffer, so the body streams through a temporary file.
    async with big_image_task(face_png, 3 * 1024 * 1024) as (emu, client, result):
        emu.faults.set("image", bandwidth=2 * 1024 * 1024)  # about 1.5 s for the whole body
        out = tmp_path / "out"
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(client.download_image, result.images[0], out / "0.png")
                # Cancel once the body is being written to its temporary file.
                while not list(out.glob(".0.png.*.part")):
                    await anyio.wait_all_tasks_blocked()
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
        assert scope.cancelled_caught
    assert list(out.iterdir()) == []
