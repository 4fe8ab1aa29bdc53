"""This machine's file system, not the network: a full disk, a read-only mount, a name too long,
an input that is not a file. Each is named for what it is, never retried, and leaves no file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import SmallFileSystem

from novita_async import (
    InstantIDRequest,
    LocalIOError,
    NovitaClient,
    TaskResult,
    ValidationError,
)
from novita_async._files import write_all, write_atomically
from novita_async.emulator import Emulator

from .conftest import FAST_POLL, EventLog, big_image_task


def temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.part")]


async def finished_task(client: NovitaClient, face: Path) -> TaskResult:
    asset = await client.upload_asset(face)
    task_id = await client.submit_instant_id(
        InstantIDRequest(prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset])
    )
    return await client.wait_for_task(task_id, poll=FAST_POLL)


@pytest.mark.parametrize("full_before", [True, False], ids=["full", "fills-up-mid-body"])
async def test_a_download_onto_a_full_disk_is_disk_full_sent_once_and_leaves_nothing(
    small_fs: SmallFileSystem, face_png: Path, events: EventLog, full_before: bool
) -> None:
    # Three times the file system's size: the body cannot fit even when the disk starts empty.
    async with big_image_task(face_png, 3 * SmallFileSystem.SIZE) as (emu, client, result):
        if full_before:
            small_fs.fill()
        dest = small_fs.path / "out" / "0.png"
        with pytest.raises(LocalIOError) as caught:
            await client.download_image(result.images[0], dest, on_event=events.append)
        assert emu.stats().count("image") == 1  # not retried: another GET cannot free the disk
    assert caught.value.reason == "DISK_FULL"
    assert "writing image 0.png failed: No space left on device" in str(caught.value)
    assert caught.value.path == str(dest)
    assert not dest.exists()
    assert temporary_files(small_fs.path) == []
    assert [e.error for e in events.of("error", "image")] == ["DISK_FULL"]
    assert events.of("retry") == []


async def test_a_name_too_long_for_the_file_system_is_named_so(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished_task(client, face_png)
    name = "é" * 150 + ".png"  # 304 bytes of UTF-8; file systems allow 255
    with pytest.raises(LocalIOError) as caught:
        await client.download_image(result.images[0], tmp_path / name)
    assert caught.value.reason == "NAME_TOO_LONG"
    assert emu.stats().count("image") == 1
    assert [p.name for p in tmp_path.iterdir()] == [face_png.name]  # noqa: ASYNC240


@pytest.mark.parametrize("folder", [".", "new"], ids=["existing-folder", "folder-to-create"])
async def test_a_read_only_file_system_is_named_so(
    small_fs: SmallFileSystem,
    client: NovitaClient,
    emu: Emulator,
    face_png: Path,
    folder: str,
) -> None:
    result = await finished_task(client, face_png)
    small_fs.read_only()
    with pytest.raises(LocalIOError) as caught:
        await client.download_image(result.images[0], small_fs.path / folder / "0.png")
    assert caught.value.reason == "READ_ONLY_FILE_SYSTEM"
    assert emu.stats().count("image") == 1
    assert list(small_fs.path.iterdir()) == []


def test_an_atomic_write_onto_a_full_disk_is_disk_full_and_keeps_the_old_file(
    small_fs: SmallFileSystem,
) -> None:
    target = small_fs.path / "results.jsonl"
    target.write_bytes(b"old\n")
    small_fs.fill()
    with pytest.raises(LocalIOError) as caught:
        write_atomically(target, [b"new\n" * 1000])
    assert caught.value.reason == "DISK_FULL"
    assert "writing results.jsonl failed" in str(caught.value)
    assert target.read_bytes() == b"old\n"
    assert temporary_files(small_fs.path) == []


def test_a_record_the_disk_has_no_room_for_is_not_left_half_written(
    small_fs: SmallFileSystem,
) -> None:
    path = small_fs.path / "journal.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        write_all(fd, b'{"first": 1}\n', path=path)
        small_fs.fill()
        # The file's last page still has room for part of this record, not all of it.
        with pytest.raises(LocalIOError) as caught:
            write_all(fd, b'{"second": "' + b"x" * 10_000 + b'"}\n', path=path)
        assert caught.value.reason == "DISK_FULL"
        assert str(path) in str(caught.value)
        (small_fs.path / "filler").unlink()  # space again: the next record joins no torn one
        write_all(fd, b'{"third": 3}\n', path=path)
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"first": 1}\n{"third": 3}\n'


@pytest.mark.timeout(10)  # opening a FIFO would wait for a writer for ever
@pytest.mark.parametrize("kind", ["FIFO", "directory", "character device"])
async def test_an_upload_from_something_that_is_not_a_file_is_refused_unopened(
    client: NovitaClient, emu: Emulator, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "face.png"
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path(os.devnull)
    with pytest.raises(ValidationError, match=f"must be a regular file, not a {kind}") as caught:
        await client.upload_asset(path)
    assert caught.value.field == "source"
    assert emu.stats().uploads == 0
