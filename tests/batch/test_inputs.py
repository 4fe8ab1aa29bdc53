"""Reading inputs: each file content hashed once, however many jobs name it at once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from novita_async.batch import _inputs
from novita_async.batch._inputs import InputReader

from .conftest import png_bytes


async def test_a_file_many_jobs_name_at_once_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    face, scene = tmp_path / "face.png", tmp_path / "scene.png"
    face.write_bytes(png_bytes(1))
    scene.write_bytes(png_bytes(2))
    read: list[str] = []
    real_hash_file = _inputs.hash_file

    def counting_hash_file(path: str) -> tuple[str, bytes]:
        read.append(path)
        return real_hash_file(path)

    monkeypatch.setattr(_inputs, "hash_file", counting_hash_file)
    reader = InputReader()
    prepared: list[tuple[_inputs.PreparedImage, ...]] = []

    async def one() -> None:
        prepared.append(await reader.images((face, scene)))

    async with anyio.create_task_group() as group:
        for _ in range(50):  # the jobs a run starts together
            group.start_soon(one)
    assert sorted(read) == [str(face), str(scene)]
    assert len({images for images in prepared}) == 1  # every job sees the same hashes
    assert prepared[0][0].content_type == "image/png"


async def test_a_file_that_changes_is_read_again(tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    face.write_bytes(png_bytes(1))
    reader = InputReader()
    (first,) = await reader.images((face,))
    face.write_bytes(png_bytes(3) + b"\0" * 7)  # another size: another stat key
    (second,) = await reader.images((face,))
    assert first.sha256 != second.sha256
