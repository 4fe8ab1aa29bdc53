"""Job files: each line a job or an error naming its line and field; URLs fetched without auth."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from novita_async import LoRA
from novita_async.batch import InvalidJob, Job, read_jobs
from novita_async.batch._jobs import count_jobs as count_lines

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "a.png").write_bytes(PNG)
    (tmp_path / "ref.png").write_bytes(PNG)
    return tmp_path


def write_lines(folder: Path, lines: list[Any]) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


async def read_all(path: Path, defaults: dict[str, Any] | None = None) -> list[Any]:
    return [item async for item in read_jobs(path, defaults=defaults)]


JOB = {"face_images": ["faces/a.png"], "ref_images": ["ref.png"], "prompt": "p"}


async def test_valid_lines_become_jobs_with_defaults_under_line_fields(folder: Path) -> None:
    path = write_lines(folder, [
        {**JOB, "id": "first", "steps": 30},
        "",
        {**JOB, "ref_images": "ref.png", "extra": {"enable_nsfw_detection": True}},
        {**JOB, "id": 7, "loras": [{"model_name": "l", "strength": 0.5}]},
    ])  # fmt: skip
    defaults = {"steps": 10, "width": 512, "extra": {"response_image_type": "jpeg"}}
    first, third, fourth = await read_all(path, defaults)
    assert isinstance(first, Job) and first.id == "first"
    assert first.request.steps == 30 and first.request.width == 512
    assert first.face_images == (folder / "faces" / "a.png",)
    assert third.id == "3"  # the line number (blank line 2 counts)
    assert third.ref_images == (folder / "ref.png",)
    assert third.request.extra is not None
    assert third.request.extra.response_image_type == "jpeg"  # merged key by key
    assert third.request.extra.enable_nsfw_detection is True
    assert fourth.id == "7" and fourth.request.loras == (LoRA("l", 0.5),)
    assert count_lines(path) == 3


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"face_images": ["faces/a.png"], broken', None, "not valid JSON"),
        ("[1, 2]", None, "JSON object"),
        ({**JOB, "widht": 512}, "widht", "unknown field"),
        ({**JOB, "width": 4096}, "width", "[128, 2048]"),
        ({**JOB, "width": "512"}, "width", "integer"),
        ({**JOB, "sampler_name": "Fast"}, "sampler_name", "must be one of"),
        ({**JOB, "loras": [{"model_name": "a", "strength": 1}, {"model_name": "b"}]},
         "loras[1].strength", "required"),
        ({**JOB, "extra": {"response_image_type": "gif"}}, "extra.response_image_type", "png"),
        ({**JOB, "extra": {"colour": 1}}, "extra.colour", "unknown field"),
        ({**JOB, "extra": {"webhook": {"urll": "https://x"}}}, "extra.webhook.urll",
         "unknown field"),
        ({**JOB, "loras": [{"model_name": "a", "strenght": 1}]}, "loras[0].strenght",
         "unknown field"),
        ({**JOB, "loras": {"model_name": "a"}}, "loras", "must be a list"),
        ({**JOB, "extra": "jpeg"}, "extra", "must be an object"),
        ({**JOB, "controlnet": {"units": [{"model_name": "c", "strength": "1",
                                           "preprocessor": "canny"}]}},
         "controlnet.units[0].strength", "finite number"),
        ({**JOB, "extra": {"enable_nsfw_detection": "yes"}}, "extra.enable_nsfw_detection",
         "true or false"),
        ({**JOB, "face_images": ["faces/missing.png"]}, "face_images[0]", "no such file"),
        ({**JOB, "ref_images": []}, "ref_images", "non-empty"),
        ({k: v for k, v in JOB.items() if k != "face_images"}, "face_images", "required"),
        ({k: v for k, v in JOB.items() if k != "prompt"}, "prompt", "required"),
        ({**JOB, "face_image_assets_ids": ["x"]}, "face_image_assets_ids", "not asset ids"),
        ({**JOB, "id": ["x"]}, "id", "non-empty string"),
        ({**JOB, "face_kps_images": ["ref.png", "ref.png"]}, "face_kps_images", "one file per"),
    ],
)  # fmt: skip
async def test_bad_line_names_line_and_field_and_the_rest_go_on(
    folder: Path, line: Any, field: str | None, words: str
) -> None:
    path = write_lines(folder, [{**JOB, "id": "before"}, line, {**JOB, "id": "after"}])
    before, error, after = await read_all(path)
    assert isinstance(error, InvalidJob) and error.error.reason == "INVALID_JOB_LINE"
    where = "line 2" + (f", field {field}" if field else "") + ": "
    assert str(error.error).startswith(where)
    assert words in str(error.error).removeprefix(where)
    assert isinstance(before, Job) and isinstance(after, Job)
    assert after.id == "after"


@pytest.mark.timeout(30)  # opening a FIFO would wait for a writer for ever
@pytest.mark.parametrize("kind", ["FIFO", "directory"])
async def test_an_input_that_is_not_a_regular_file_is_the_lines_error_unopened(
    folder: Path, kind: str
) -> None:
    odd = folder / "faces" / "odd.png"
    if kind == "FIFO":
        os.mkfifo(odd)
    else:
        odd.mkdir()
    path = write_lines(folder, [{**JOB, "id": "odd", "face_images": ["faces/odd.png"]}, JOB])
    error, job = await read_all(path)
    assert isinstance(error, InvalidJob)
    assert (
        str(error.error) == f"line 1, field face_images[0]: is not a regular file (a {kind}): {odd}"
    )
    assert isinstance(job, Job)


async def test_the_count_of_jobs_is_the_number_of_jobs_read(folder: Path) -> None:
    # A byte-order mark, a line of Unicode spaces and one of ASCII ones are all blank.
    path = folder / "jobs.jsonl"
    job = json.dumps(JOB).encode()
    blank = "\u00a0\u2003".encode()
    path.write_bytes(b"\xef\xbb\xbf\n" + job + b"\n" + blank + b"\n \t\r\n" + job + b"\n" + job)
    assert count_lines(path) == len(await read_all(path)) == 3


async def test_a_byte_order_mark_is_not_part_of_the_first_line(folder: Path) -> None:
    path = write_lines(folder, [{**JOB, "id": "first"}, JOB])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Notepad saves "UTF-8"
    first, second = await read_all(path)
    assert isinstance(first, Job) and first.id == "first"
    assert isinstance(second, Job) and second.id == "2"  # the mark added no line


async def test_null_fields_take_the_models_defaults(folder: Path) -> None:
    path = write_lines(folder, [{**JOB, "width": None, "seed": None, "extra": None}])
    (job,) = await read_all(path)
    assert isinstance(job, Job)
    assert (job.request.width, job.request.seed, job.request.extra) == (1024, None, None)


async def test_error_keeps_the_line_id(folder: Path) -> None:
    path = write_lines(folder, [{**JOB, "id": "named", "steps": 0}])
    (error,) = await read_all(path)
    assert isinstance(error, InvalidJob) and error.id == "named"
    assert str(error.error).startswith("line 1, field steps: ")


async def test_url_inputs_are_fetched_once_without_credentials(folder: Path) -> None:
    seen: list[dict[str, str]] = []

    async def image(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.path.endswith("missing.png"):
            return web.Response(status=404)
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/face.png?sig=secret"
        path = write_lines(folder, [
            {**JOB, "face_images": [url]},
            {**JOB, "face_images": [url]},
            {**JOB, "ref_images": [f"http://127.0.0.1:{port}/missing.png"]},
        ])  # fmt: skip
        cache = folder / "out" / ".inputs"
        first, second, third = [x async for x in read_jobs(path, cache_dir=cache)]
    finally:
        await runner.cleanup()
    assert isinstance(first, Job) and isinstance(second, Job)
    assert first.face_images == second.face_images
    face = first.face_images[0]
    assert isinstance(face, Path) and face.read_bytes() == PNG
    assert isinstance(third, InvalidJob)
    assert str(third.error).startswith("line 3, field ref_images[0]: ")
    assert "404" in str(third.error) and "secret" not in str(third.error)
    assert len(seen) == 2  # the second job found the cached copy
    assert not any("Authorization" in headers for headers in seen)
    assert not list((folder / "out" / ".inputs").glob(".*.part"))
