"""Reading inputs: each file content hashed once, however many jobs name it at once; what is not
a regular file refused before it is opened."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from novita_async import NovitaClient
from novita_async.batch import BatchOptions, BatchRunner, _inputs
from novita_async.batch._inputs import InputReader
from novita_async.batch._jobs import JobInputError
from novita_async.emulator import Emulator

from .conftest import make_job, png_bytes


async def test_a_file_many_jobs_name_at_once_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    face, scene = tmp_path / "face.png", tmp_path / "scene.png"
    face.write_bytes(png_bytes(1))
    scene.write_bytes(png_bytes(2))
    read: list[str] = []
    real_hash_file = _inputs.hash_file

    def counting_hash_file(path: str) -> tuple[str, str | None]:
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


def not_a_file(kind: str, tmp_path: Path) -> Path:
    """A path that names a FIFO, a directory or a device."""
    if kind == "FIFO":
        path = tmp_path / "face.png"
        os.mkfifo(path)
        return path
    if kind == "directory":
        path = tmp_path / "face.png"
        path.mkdir()
        return path
    return Path(os.devnull)


KINDS = ["FIFO", "directory", "character device"]


@pytest.mark.timeout(10)  # opening a FIFO would wait for a writer for ever
@pytest.mark.parametrize("kind", KINDS)
async def test_an_input_that_is_not_a_regular_file_is_refused_unopened(
    tmp_path: Path, kind: str
) -> None:
    path = not_a_file(kind, tmp_path)
    scene = tmp_path / "scene.png"
    scene.write_bytes(png_bytes(2))
    job = make_job("j1", scene, path)
    with pytest.raises(JobInputError) as caught:
        await InputReader().prepare(job)
    assert caught.value.reason == "INPUT_NOT_A_FILE"
    assert str(caught.value) == f"input {str(path)!r} is not a regular file (a {kind})"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("read", [_inputs.hash_file, _inputs.read_file], ids=["hash", "read"])
def test_reading_an_input_that_became_something_else_refuses_it(
    tmp_path: Path, kind: str, read: Callable[[str], object]
) -> None:
    # What the upload reads later, after the path was checked: it is checked again.
    path = not_a_file(kind, tmp_path)
    with pytest.raises(JobInputError, match=f"is not a regular file \\(a {kind}\\)") as caught:
        read(str(path))
    assert caught.value.reason == "INPUT_NOT_A_FILE"


@pytest.mark.timeout(30)  # opening the FIFO would wait for a writer for ever
async def test_a_run_fails_the_job_whose_face_is_a_fifo_and_runs_the_others(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    jobs = [make_job("good", images(1), images(2)), make_job("piped", pipe, images(2))]
    runner = BatchRunner(client, tmp_path / "out", BatchOptions(concurrency=2))
    async with runner.run(jobs) as outcomes:
        ended = {outcome.job_id: outcome async for outcome in outcomes}
    assert ended["good"].ok
    error = ended["piped"].error
    assert error is not None and error.reason == "INPUT_NOT_A_FILE"
    assert error.message == f"input {str(pipe)!r} is not a regular file (a FIFO)"
    stats = emu.stats()
    assert stats.submissions == 1 and stats.uploads == 2  # nothing sent for the piped job
