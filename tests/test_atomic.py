"""Files written whole or not at all, with ordinary permissions."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from novita_async import LocalIOError
from novita_async._files import (
    file_digest,
    remove_stale_temp_files,
    stream_to_file,
    write_all,
    write_atomically,
)


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "results.jsonl", [b"a", b"b"])
    finally:
        os.umask(umask)
    target = tmp_path / "results.jsonl"
    assert target.read_bytes() == b"ab"
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "index.html"
    target.write_bytes(b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new, half"
        raise OSError(errno.ENOSPC, "disk full")

    # The file system's error, named as this machine's (a full disk on a real one: see
    # tests/client/test_local_files.py).
    with pytest.raises(LocalIOError, match=r"writing index\.html failed: disk full") as caught:
        write_atomically(target, chunks())
    assert caught.value.reason == "DISK_FULL"
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_an_atomic_write_into_a_missing_folder_is_a_local_error(tmp_path: Path) -> None:
    with pytest.raises(LocalIOError) as caught:
        write_atomically(tmp_path / "missing" / "index.html", [b"x"])
    assert caught.value.path == str(tmp_path / "missing" / "index.html")
    assert list(tmp_path.iterdir()) == []


def test_write_all_names_a_failed_write_as_local(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "journal.jsonl", os.O_RDONLY | os.O_CREAT)  # not open for writing
    try:
        with pytest.raises(LocalIOError, match=r"journal\.jsonl") as caught:
            write_all(fd, b"record\n", path=tmp_path / "journal.jsonl")
        with pytest.raises(LocalIOError, match=f"appending a record failed.*descriptor {fd}"):
            write_all(fd, b"record\n")
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EBADF


def test_stale_temporary_files_are_removed_and_nothing_else(
    tmp_path: Path, exited_pid: int
) -> None:
    dead = exited_pid
    (tmp_path / f".a_0.png.{dead}-4.part").write_bytes(b"half an image")
    (tmp_path / f".results.jsonl.{dead}-5.part").write_bytes(b"half a line")
    keep = ["a_0.png", "results.jsonl", ".novita-journal.jsonl", "notes.part"]
    # A writer still alive (here: this process) is not interrupted.
    keep.append(f".b_0.png.{os.getpid()}-6.part")
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".inputs.{dead}-1.part").mkdir()  # a folder named like a temporary file stays

    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, f".inputs.{dead}-1.part"])
    assert remove_stale_temp_files(tmp_path / "missing") == 0


async def test_a_stream_is_written_whole_into_a_folder_it_makes(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    target = tmp_path / "cache" / "input.png"
    assert await stream_to_file(chunks(), target, doing="saving input") == 4
    assert target.read_bytes() == b"abcd"
    assert file_digest(target) == (4, hashlib.sha256(b"abcd").hexdigest())
    assert os.listdir(target.parent) == ["input.png"]


async def test_a_stream_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "input.png"
    target.write_bytes(b"old")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"new, half"
        raise ConnectionResetError("the network's, not this machine's")

    # The source's own error passes as it is: only the file operations are local.
    with pytest.raises(ConnectionResetError):
        await stream_to_file(chunks(), target, doing="saving input")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["input.png"]
