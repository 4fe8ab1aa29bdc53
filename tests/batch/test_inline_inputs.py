"""A v3 task's inline input images: checked against the endpoint's limits when the job is prepared
(nothing sent for a refused one), base64-encoded once per content for the time of a submission
only, within a budget of bytes held at once, given back on cancellation, and never written into
a journal, a result, a log line or a repr."""

from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from PIL import Image

from novita_async import NovitaClient, ValidationError
from novita_async._models import Img2ImgRequest, InpaintingRequest, UpscaleRequest
from novita_async.batch import BatchOptions, BatchRunner, Job
from novita_async.batch._inputs import (
    InputEncoder,
    InputReader,
    PreparedImage,
    PreparedJob,
    base64_length,
)
from novita_async.batch._jobs import JobInputError, JobOutcome
from novita_async.emulator import Emulator

BASE = {"model_name": "m.safetensors", "prompt": "a cat"}
MiB = 1024 * 1024


def picture(size: tuple[int, int] = (16, 12), shade: int = 0, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade % 256, 120, 80)).save(buffer, format=kind)
    return buffer.getvalue()


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def sparse_png(path: Path, length: int) -> Path:
    """A PNG header, then a hole up to ``length`` bytes: reading it whole would take for ever
    (a terabyte of zeros), so a test that ends proves it was refused from its size."""
    path.write_bytes(picture())
    os.truncate(path, length)
    return path


def img2img(job_id: str, image: Path | bytes, **fields: Any) -> Job:
    fields = {**BASE, "prompt": f"a cat {job_id}", "width": 128, "height": 128, **fields}
    request = Img2ImgRequest(**fields)
    return Job(id=job_id, request=request, inputs={"image": image})


async def run(
    client: NovitaClient, out: Path, jobs: list[Job], **options: Any
) -> dict[str, JobOutcome]:
    runner = BatchRunner(client, out, BatchOptions(**options))
    async with runner.run(jobs) as outcomes:
        return {outcome.job_id: outcome async for outcome in outcomes}


def all_text(out: Path) -> str:
    """Everything the run wrote that is text: the journal and the results."""
    return "".join(
        path.read_text() for path in out.rglob("*") if path.suffix in (".jsonl", ".json")
    )


# --- limits, when a job is prepared ---------------------------------------------------------


@pytest.mark.timeout(60)  # reading the terabyte file would never end
async def test_inputs_outside_the_limits_fail_their_own_job_and_nothing_is_sent_for_them(
    client: NovitaClient, emu: Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = written(folder / "good.png", picture((40, 30)))
    wide = written(folder / "wide.png", picture((2049, 8)))
    gif = written(folder / "anim.gif", b"GIF89a not an image the API takes")
    huge = sparse_png(folder / "huge.png", 1 << 40)
    over_by_one = sparse_png(folder / "over.png", 10 * MiB + 1)
    mask = written(folder / "mask.png", picture((30, 40)))
    jobs = [
        img2img("good", good),
        Job(id="wide", request=UpscaleRequest(model_name="4x-UltraSharp"), inputs={"image": wide}),
        img2img("gif", gif),
        img2img("huge", huge),
        img2img("over-by-one", over_by_one),
        Job(
            id="mask",
            request=InpaintingRequest(**{**BASE, "prompt": "mask"}),
            inputs={"image": good, "mask_image": mask},
        ),
        img2img("bytes", b"\x89PNG\r\n\x1a\n but no header after it"),
    ]
    before = emu.stats().submissions_by_route
    ended = await run(client, tmp_path / "out", jobs, concurrency=8)

    assert ended["good"].ok
    errors = {job_id: outcome.error for job_id, outcome in ended.items() if job_id != "good"}
    reasons = {job_id: error.reason for job_id, error in errors.items() if error is not None}
    assert reasons == {
        "wide": "INPUT_TOO_LARGE",
        "gif": "INVALID_IMAGE",
        "huge": "INPUT_TOO_LARGE",
        "over-by-one": "INPUT_TOO_LARGE",
        "mask": "INPUT_SIZE_MISMATCH",
        "bytes": "INVALID_IMAGE",
    }
    messages = {job_id: error.message for job_id, error in errors.items() if error is not None}
    # Each names the task, the input, the file, what was found and the limit.
    assert (
        messages["wide"]
        == f"upscale input 'image' {str(wide)!r} is 2049x8: must be at most 2048x2048"
    )
    assert (
        messages["gif"] == f"img2img input 'image' {str(gif)!r}: must be a PNG, JPEG or WebP image"
    )
    assert messages["huge"] == (
        f"img2img input 'image' {str(huge)!r} is {1 << 40} bytes: must be at most 10485760 bytes"
    )
    assert f"is {10 * MiB + 1} bytes: must be at most 10485760 bytes" in messages["over-by-one"]
    assert messages["mask"] == (
        f"inpainting input 'mask_image' {str(mask)!r} is 30x40: "
        "must have the resolution of image (40x30)"
    )
    assert messages["bytes"].startswith("img2img input 'image' <")
    assert "has no width and height" in messages["bytes"]
    # Only the good job reached the service.
    after = emu.stats().submissions_by_route
    assert {route: after[route] - before.get(route, 0) for route in after} == {"img2img": 1}


async def test_a_file_many_v3_jobs_name_is_read_once_and_checked_for_each_slot(
    tmp_path: Path,
) -> None:
    # 12 MiB: within inpainting's 30 MB, over img2img's 10 MB.
    image = written(tmp_path / "big.png", picture((64, 64)) + b"\0" * (12 * MiB))
    reader = InputReader()
    inpaint = InpaintingRequest(**{**BASE, "prompt": "x"})
    prepared: list[PreparedJob] = []

    async def one(n: int) -> None:
        job = Job(id=f"j{n}", request=inpaint, inputs={"image": image, "mask_image": image})
        prepared.append(await reader.prepare(job))

    async with anyio.create_task_group() as group:
        for n in range(200):
            group.start_soon(one, n)
    assert reader.reads == 1
    assert len({job.fingerprint for job in prepared}) == 1
    [(_, first), (_, second)] = prepared[0].inputs
    assert first == second and first.nbytes == image.stat().st_size and first.size == (64, 64)
    # The same file for img2img: over its limit, refused from the size already known.
    with pytest.raises(JobInputError, match="must be at most 10485760 bytes") as caught:
        await reader.prepare(img2img("small-limit", image))
    assert caught.value.reason == "INPUT_TOO_LARGE"
    assert reader.reads == 1


@pytest.mark.timeout(60)  # reading the terabyte file would never end
async def test_the_client_refuses_a_file_over_the_limit_from_its_size(
    client: NovitaClient, emu: Emulator, tmp_path: Path
) -> None:
    huge = sparse_png(tmp_path / "huge.png", 1 << 40)
    with pytest.raises(ValidationError, match="must be at most 31457280 bytes") as caught:
        await client.submit(UpscaleRequest(model_name="4x-UltraSharp"), images={"image": huge})
    assert caught.value.field == "image"
    assert f"huge.png: {1 << 40} bytes" in str(caught.value)
    assert emu.stats().submissions == 0


async def test_a_jpeg_whose_frame_comes_after_long_metadata_is_measured_from_its_file(
    tmp_path: Path,
) -> None:
    # Three 64 KiB comment segments before the frame header: found by seeking, not by reading.
    jpeg = picture((33, 21), kind="JPEG")
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + b"c" * 65533
    path = written(tmp_path / "meta.jpg", jpeg[:2] + comment * 3 + jpeg[2:])
    job = Job(id="j", request=UpscaleRequest(model_name="4x-UltraSharp"), inputs={"image": path})
    [(_, image)] = (await InputReader().prepare(job)).inputs
    assert image.size == (33, 21) and image.content_type == "image/jpeg"


# --- the encoder --------------------------------------------------------------------------------


async def prepared(source: Path | bytes) -> PreparedImage:
    (image,) = await InputReader().images((source,))
    return image


def inputs(image: PreparedImage, name: str = "image") -> tuple[tuple[str, PreparedImage], ...]:
    return ((name, image),)


async def test_one_content_sent_by_many_jobs_at_once_is_read_and_encoded_once(
    tmp_path: Path,
) -> None:
    data = picture((20, 20), shade=5)
    image = await prepared(written(tmp_path / "a.png", data))
    encoder = InputEncoder()
    inside = anyio.Event()
    seen: list[str] = []

    async def job(*, task_status: TaskStatus[None]) -> None:
        async with encoder.encoded(inputs(image)) as encoded:
            seen.append(encoded["image"])
            task_status.started()
            await inside.wait()

    async with anyio.create_task_group() as group:
        for _ in range(60):
            await group.start(job)
        # 60 jobs inside at once, one content held once.
        assert encoder.in_use == encoder.held == base64_length(len(data))
        inside.set()
    assert seen == [base64.b64encode(data).decode()] * 60
    assert encoder.reads == 1 and encoder.in_use == 0
    # Kept, unused, while its room is not needed: the next job reads nothing.
    async with encoder.encoded(inputs(image)) as encoded:
        assert encoded["image"] == seen[0]
    assert encoder.reads == 1


async def test_an_input_named_twice_in_one_job_is_encoded_and_counted_once() -> None:
    data = picture(shade=9)
    image = await prepared(data)
    encoder = InputEncoder(base64_length(len(data)))
    async with encoder.encoded((("image", image), ("mask_image", image))) as encoded:
        assert encoded["image"] is encoded["mask_image"]
        assert encoder.in_use == base64_length(len(data))
    assert encoder.reads == 1


class Jobs:
    """Jobs each entering :meth:`InputEncoder.encoded` with one content and staying inside until
    let go, to look at what the encoder holds in between."""

    def __init__(self, encoder: InputEncoder, group: anyio.abc.TaskGroup) -> None:
        self.encoder = encoder
        self.group = group
        self.inside: dict[str, anyio.Event] = {}  # job -> its "leave now"
        self.entered: list[str] = []
        self.most_inside = 0
        self.errors: dict[str, BaseException] = {}
        self._told = 0  # how many of ``entered`` next_entered has told
        self._changed = anyio.Event()

    def start(self, job_id: str, image: PreparedImage) -> anyio.CancelScope:
        scope = anyio.CancelScope()

        async def job() -> None:
            with scope:
                try:
                    async with self.encoder.encoded(inputs(image)):
                        leave = self.inside[job_id] = anyio.Event()
                        self.entered.append(job_id)
                        self.most_inside = max(self.most_inside, len(self.inside))
                        self._changed.set()
                        await leave.wait()
                        del self.inside[job_id]
                except Exception as exc:
                    self.errors[job_id] = exc

        self.group.start_soon(job)
        return scope

    async def next_entered(self) -> str:
        while len(self.entered) <= self._told:
            changed = self._changed = anyio.Event()
            await changed.wait()
        self._told += 1
        return self.entered[self._told - 1]

    def let_go(self, job_id: str) -> None:
        self.inside[job_id].set()


async def test_the_budget_bounds_the_base64_held_at_once() -> None:
    contents = [await prepared(picture((24, 24), shade=n)) for n in range(20)]
    lengths = {image.sha256: base64_length(image.nbytes) for image in contents}
    encoder = InputEncoder(3 * max(lengths.values()))
    async with anyio.create_task_group() as group:
        jobs = Jobs(encoder, group)
        for n, image in enumerate(contents):
            jobs.start(f"j{n}", image)
        for _ in range(3):
            await jobs.next_entered()
        for n in range(20):
            # Three inside at a time (fewer at the end), the others waiting their turn in order.
            await anyio.wait_all_tasks_blocked()
            assert len(jobs.inside) == min(3, 20 - n)
            assert encoder.held <= encoder.budget
            jobs.let_go(f"j{n}")
            if n + 3 < 20:
                assert await jobs.next_entered() == f"j{n + 3}"
    # The first three read at once, done in any order; then one in for each one out, in order.
    assert sorted(jobs.entered[:3]) == ["j0", "j1", "j2"]
    assert jobs.entered[3:] == [f"j{n}" for n in range(3, 20)]
    assert jobs.most_inside == 3
    assert encoder.peak <= encoder.budget and encoder.in_use == 0 and encoder.reads == 20


async def test_an_input_larger_than_the_whole_budget_goes_alone() -> None:
    small, other = await prepared(picture(shade=1)), await prepared(picture(shade=2))
    big = await prepared(picture((400, 300), shade=3))
    encoder = InputEncoder(base64_length(big.nbytes) // 2)
    async with anyio.create_task_group() as group:
        jobs = Jobs(encoder, group)
        jobs.start("small", small)
        assert await jobs.next_entered() == "small"
        jobs.start("big", big)
        jobs.start("other", other)
        await anyio.wait_all_tasks_blocked()
        # The big one waits for the small one to leave; the next one waits its turn behind it.
        assert list(jobs.inside) == ["small"]
        jobs.let_go("small")
        assert await jobs.next_entered() == "big"
        await anyio.wait_all_tasks_blocked()
        assert list(jobs.inside) == ["big"] and encoder.in_use == base64_length(big.nbytes)
        jobs.let_go("big")
        assert await jobs.next_entered() == "other"
        jobs.let_go("other")
    assert encoder.peak == base64_length(big.nbytes) > encoder.budget
    assert encoder.held <= encoder.budget  # the big one is not kept once it is unused


async def test_a_job_cancelled_while_it_waits_gives_back_its_place() -> None:
    first, second, third = [await prepared(picture(shade=n)) for n in (1, 2, 3)]
    encoder = InputEncoder(base64_length(first.nbytes))
    async with anyio.create_task_group() as group:
        jobs = Jobs(encoder, group)
        jobs.start("first", first)
        assert await jobs.next_entered() == "first"
        waiting = jobs.start("second", second)
        await anyio.wait_all_tasks_blocked()
        waiting.cancel()  # cancelled while it waits for room
        jobs.start("third", third)
        await anyio.wait_all_tasks_blocked()
        assert list(jobs.inside) == ["first"]
        jobs.let_go("first")
        assert await jobs.next_entered() == "third"
        jobs.let_go("third")
    assert jobs.entered == ["first", "third"] and not jobs.errors
    assert encoder.in_use == 0 and encoder.held <= encoder.budget and encoder.reads == 2


async def test_a_job_cancelled_inside_gives_back_its_budget() -> None:
    one, two = await prepared(picture(shade=1)), await prepared(picture(shade=2))
    encoder = InputEncoder(base64_length(one.nbytes))
    async with anyio.create_task_group() as group:
        jobs = Jobs(encoder, group)
        scope = jobs.start("one", one)
        assert await jobs.next_entered() == "one"
        jobs.start("two", two)
        await anyio.wait_all_tasks_blocked()
        assert list(jobs.inside) == ["one"]
        scope.cancel()
        assert await jobs.next_entered() == "two"
        assert encoder.in_use == base64_length(two.nbytes) and encoder.held <= encoder.budget
        jobs.let_go("two")
    assert encoder.in_use == 0


async def test_a_job_cancelled_before_its_read_ends_leaves_nothing_behind(tmp_path: Path) -> None:
    image = await prepared(written(tmp_path / "a.png", picture(shade=4)))
    encoder = InputEncoder()
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled before its read could end
        async with encoder.encoded(inputs(image)):
            pytest.fail("a cancelled job got its inputs")
    assert encoder.held == encoder.in_use == 0 and encoder.reads == 0
    async with encoder.encoded(inputs(image)) as encoded:  # read by the next job, whole
        assert base64.b64decode(encoded["image"]) == picture(shade=4)


async def test_a_changed_file_is_input_changed_and_another_source_of_its_content_still_reads(
    tmp_path: Path,
) -> None:
    data = picture(shade=6)
    path = written(tmp_path / "a.png", data)
    from_file, from_bytes = await prepared(path), await prepared(data)
    assert from_file.sha256 == from_bytes.sha256
    path.write_bytes(picture(shade=7))  # same length, another content
    encoder = InputEncoder()
    with pytest.raises(JobInputError, match="changed while in use") as caught:
        async with encoder.encoded(inputs(from_file)):
            pytest.fail("a changed file was sent")
    assert caught.value.reason == "INPUT_CHANGED"
    assert encoder.held == encoder.in_use == 0  # no half-entry a later job would wait on

    outcome: dict[str, Any] = {}

    async def send(name: str, image: PreparedImage) -> None:
        try:
            async with encoder.encoded(inputs(image)) as encoded:
                outcome[name] = base64.b64decode(encoded["image"])
        except JobInputError as exc:
            outcome[name] = exc.reason

    async with anyio.create_task_group() as group:  # both at once: one's failure, not both's
        group.start_soon(send, "file", from_file)
        group.start_soon(send, "bytes", from_bytes)
    assert outcome == {"file": "INPUT_CHANGED", "bytes": data}
    path.write_bytes(picture(shade=6) + b"grown")  # another length: refused unread past it
    with pytest.raises(JobInputError, match="changed while in use"):
        async with InputEncoder().encoded(inputs(from_file)):
            pass


async def test_bytes_inputs_are_encoded_and_never_shown() -> None:
    data = picture(shade=8)
    image = await prepared(data)
    encoder = InputEncoder()
    text = base64.b64encode(data).decode()
    async with encoder.encoded(inputs(image)) as encoded:
        assert encoded == {"image": text}
        for shown in (repr(encoder), repr(image), repr(encoder._contents)):
            assert text[:24] not in shown and repr(data)[:24] not in shown
    assert f"<{len(data)} bytes>" in repr(image)


# --- whole runs ---------------------------------------------------------------------------------


async def test_sixty_jobs_sending_one_file_read_and_encode_it_once_and_write_no_base64(
    client: NovitaClient,
    emu: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = picture((48, 32), shade=11)
    image = written(tmp_path / "shared.png", data)
    jobs = [img2img(f"j{n:02d}", image) for n in range(60)]
    with caplog.at_level(logging.DEBUG):
        ended = await run(client, tmp_path / "out", jobs, concurrency=60)
    assert all(outcome.ok for outcome in ended.values()) and len(ended) == 60
    assert emu.stats().submissions_by_route == {"img2img": 60}
    encodings = [r for r in caplog.records if "read and encoded" in r.getMessage()]
    assert len(encodings) == 1
    text = base64.b64encode(data).decode()
    for written_text in (caplog.text, all_text(tmp_path / "out"), repr(list(ended.values()))):
        assert text[:40] not in written_text
        assert text[-40:] not in written_text


async def test_a_run_of_bytes_inputs_sends_them_inline(
    client: NovitaClient, emu: Emulator, tmp_path: Path
) -> None:
    image, mask = picture((40, 30), shade=1), picture((40, 30), shade=2)
    jobs = [
        Job(id="up", request=UpscaleRequest(model_name="4x-UltraSharp"), inputs={"image": image}),
        Job(
            id="paint",
            request=InpaintingRequest(**{**BASE, "prompt": "p"}),
            inputs={"image": image, "mask_image": mask},
        ),
    ]
    ended = await run(client, tmp_path / "out", jobs, max_inline_bytes=1)
    assert all(outcome.ok for outcome in ended.values())
    assert emu.stats().submissions_by_route == {"upscale": 1, "inpainting": 1}
    assert base64.b64encode(image).decode()[:40] not in all_text(tmp_path / "out")
