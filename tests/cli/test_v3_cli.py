"""The command line and the v3 image tasks (txt2img, img2img, inpainting, upscale): ``generate
--task``, the request flags' per-task defaults and checks, the dry run's counts by task and the
account's balance, the gallery's cards of v3 jobs, and ``status`` over a mixed run. Each command
runs as a subprocess against an emulator process; what the emulator received is read from its
stats (tasks per route, and no field it does not know)."""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import served

from novita_async import _spec
from novita_async._cli._commands import format_status, task_counts
from novita_async._cli._gallery import CardInputs, render_gallery
from novita_async._cli._settings import GenerateSettings, RunSettings, parse
from novita_async.batch import read_status

from .conftest import EmulatorProcess, cli, emulator_process
from .test_run import job, write_jobs

MODEL = _spec.RECOMMENDED_MODEL
ROUTES = ("txt2img", "img2img", "inpainting", "upscale")


def delta(emulator: EmulatorProcess, before: dict[str, Any]) -> dict[str, int]:
    """Tasks created per route since ``before`` (the emulator's stats then)."""
    now, then = emulator.stats()["submissions_by_route"], before["submissions_by_route"]
    return {r: now[r] - then.get(r, 0) for r in now if now[r] != then.get(r, 0)}


def sizes(paths: list[Path]) -> list[tuple[int, int]]:
    found = []
    for path in paths:
        with Image.open(path) as image:
            found.append(image.size)
    return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def picture_server(pictures: Path) -> Iterator[str]:
    """The pictures folder over HTTP on loopback: its base URL."""
    handler = functools.partial(_Quiet, directory=str(pictures))
    with served(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


# --- generate --task -----------------------------------------------------------------------------


GENERATE = {
    "txt2img": (["--model", MODEL, "--prompt", "a lighthouse", "--width", "128", "--height",
                 "192", "--image-num", "2"], [(128, 192)] * 2),
    "img2img": (["--model", MODEL, "--prompt", "a painting", "--image", "{pictures}/beach.png",
                 "--width", "160", "--height", "128", "--strength", "0.4"], [(160, 128)]),
    "inpainting": (["--model", MODEL, "--prompt", "a hat", "--image", "{pictures}/ada.png",
                    "--mask-image", "{pictures}/grace.png", "--mask-blur", "8", "--image-num",
                    "3"], [(64, 64)] * 3),
    "upscale": (["--upscale-model", "RealESRNet_x4plus", "--image", "{pictures}/forest.png",
                 "--scale-factor", "2.5"], [(160, 160)]),
}  # fmt: skip


@pytest.mark.parametrize("task", list(GENERATE))
def test_generate_each_task(
    task: str, tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    args, expected = GENERATE[task]
    before = emulator.stats()
    out = tmp_path / "out"
    words = [arg.format(pictures=pictures) for arg in args]
    done = cli("generate", "--task", task, *words, "--out", str(out), env=emulator.env)
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.splitlines()]
    assert sizes(files) == expected
    assert all(path.parent == out for path in files)
    task_id = re.search(rf"submitted task (\S+) \({task}\)", done.stderr)
    assert task_id is not None, done.stderr
    assert all(path.name.startswith(f"{task_id[1]}-") for path in files)
    assert delta(emulator, before) == {task: 1}  # one task, on its own endpoint
    assert emulator.stats()["unknown_fields"] == {}
    assert emulator.stats()["uploads"] == before["uploads"]  # inline inputs: no asset upload


def test_generate_img2img_from_a_url(
    tmp_path: Path, picture_server: str, emulator: EmulatorProcess
) -> None:
    before = emulator.stats()
    done = cli(
        "generate", "--task", "img2img", "--model", MODEL, "--prompt", "p", "--image",
        f"{picture_server}/beach.png", "--out", str(tmp_path), env=emulator.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sizes([Path(line) for line in done.stdout.splitlines()]) == [(512, 512)]
    assert delta(emulator, before) == {"img2img": 1}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--task", "txt2img", "--model", "m", "--prompt", "p", "--face", "f.png"],
         "argument --face: not an input of --task txt2img"),
        (["--task", "img2img", "--model", "m", "--prompt", "p"],
         "argument --image: required by --task img2img"),
        (["--task", "img2img", "--model", "m", "--prompt", "p", "--image", "a.png",
          "--mask-image", "b.png"], "argument --mask-image: not an input of --task img2img"),
        (["--task", "inpainting", "--model", "m", "--prompt", "p", "--image", "a.png"],
         "argument --mask-image: required by --task inpainting"),
        (["--prompt", "p", "--ref", "r.png"], "argument --face: required by --task instant-id"),
        (["--prompt", "p", "--face", "f.png", "--ref", "r.png", "--image", "a.png"],
         "argument --image: not an input of --task instant-id"),
        (["--prompt", "p", "--face", "f.png", "--ref", "r.png", "--scale-factor", "2"],
         "argument --scale-factor: not a field of --task instant-id (it is for: upscale)"),
        (["--task", "upscale", "--image", "a.png", "--width", "256"],
         "argument --width: not a field of --task upscale"),
        (["--task", "upscale", "--image", "a.png"], "argument --upscale-model:"),
        (["--task", "upscale", "--image", "a.png", "--upscale-model", "RealESRNet_x4plus",
          "--scale-factor", "1"], "argument --scale-factor: 1.0 is not allowed: must be a number "
         "greater than 1 and at most 4 (--task upscale)"),
        (["--task", "txt2img", "--prompt", "p"], "argument --model:"),
        (["--task", "txt2img", "--model", "m"], "argument --prompt:"),
        (["--task", "txt2img", "--model", "m", "--prompt", "p", "--image-num", "9"],
         "argument --image-num: 9 is not allowed: must be in [1, 8]"),
        (["--prompt", "p", "--face", "f.png", "--ref", "r.png", "--image-num", "5"],
         "argument --image-num: 5 is not allowed: must be in [1, 4]"),
        (["--prompt", "p", "--face", "f.png", "--ref", "r.png", "--sampler", "FlowMatchEuler"],
         "argument --sampler: 'FlowMatchEuler' is not allowed"),
    ],
)  # fmt: skip
def test_generate_usage_is_checked_per_task(
    args: list[str], said: str, emulator: EmulatorProcess
) -> None:
    before = emulator.stats()
    done = cli("generate", *args, env=emulator.env)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and done.stderr.count("\n") == 1
    assert emulator.stats()["submissions"] == before["submissions"]


def test_generate_takes_an_unlisted_sampler_for_a_v3_task() -> None:
    settings = parse(["generate", "--task", "txt2img", "--model", "m", "--prompt", "p",
                      "--sampler", "FlowMatchEuler"])  # fmt: skip
    assert isinstance(settings, GenerateSettings)
    assert settings.request.task == "txt2img"
    assert settings.request.sampler_name == "FlowMatchEuler"


# --- run: per-task defaults, checked per task ----------------------------------------------------


def test_run_flags_are_defaults_only_for_the_tasks_with_their_fields() -> None:
    flags = ["--width", "256", "--scale-factor", "3", "--strength", "0.5", "--image-type", "jpeg",
             "--id-strength", "0.9"]  # fmt: skip
    settings = parse(["run", "j.jsonl", "--out", "o", *flags])
    assert isinstance(settings, RunSettings)
    extra = {"extra": {"response_image_type": "jpeg"}}
    assert settings.task_defaults.fields == {
        "instant-id": {"width": 256, "id_strength": 0.9, **extra},
        "txt2img": {"width": 256, **extra},
        "img2img": {"width": 256, "strength": 0.5, **extra},
        "inpainting": {"strength": 0.5, **extra},
        "upscale": {"scale_factor": 3.0, **extra},
    }
    assert settings.task_defaults.refused == {}


def test_a_value_no_task_allows_is_refused_at_once() -> None:
    for flag, value in (("--width", "5000"), ("--strength", "1.5"), ("--scale-factor", "9")):
        done = cli("run", "j.jsonl", "--out", "o", flag, value)
        assert done.returncode == 2
        assert f"argument {flag}: " in done.stderr and "is not allowed" in done.stderr


def test_a_value_one_task_refuses_is_refused_for_a_file_with_that_task(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    # image_num 6 and an unlisted sampler: fine for txt2img, not for InstantID.
    v3 = {"id": "t", "task": "txt2img", "prompt": "p", "model_name": MODEL}
    flags = ["--image-num", "6", "--sampler", "FlowMatchEuler"]
    before = emulator.stats()
    jobs = write_jobs(tmp_path, [v3, job("ada", "beach", id="a"), job("ada", "forest", id="b")])
    for extra in ([], ["--dry-run"]):
        done = cli("run", str(jobs), "--out", str(tmp_path / "out"), *flags, *extra,
                   env=emulator.env)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "argument --image-num: 6 is not allowed: must be in [1, 4], for instant-id " \
               "requests (2 lines of" in done.stderr  # fmt: skip
    assert emulator.stats()["submissions"] == before["submissions"]
    assert emulator.stats()["uploads"] == before["uploads"]
    # Without the InstantID lines, the same flags run: six images of an unlisted sampler.
    only = write_jobs(tmp_path, [v3])
    done = cli("run", str(only), "--out", str(tmp_path / "out2"), "--no-progress", *flags,
               env=emulator.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out2" / "results.jsonl").read_text())
    assert len(result["files"]) == 6
    assert delta(emulator, before) == {"txt2img": 1}


# --- the dry run: counts by task, the balance with a key ------------------------------------------


def mixed_jobs(folder: Path, source: str = "pictures/beach.png") -> Path:
    return write_jobs(folder, [
        job("ada", "beach", id="a", image_num=2),
        job("grace", "forest", id="b"),
        {"id": "t", "task": "txt2img", "prompt": "a lighthouse", "model_name": MODEL,
         "image_num": 3},
        {"id": "i", "task": "img2img", "prompt": "a painting", "model_name": MODEL,
         "image": source},
        {"id": "p", "task": "inpainting", "prompt": "a hat", "model_name": MODEL,
         "image": "pictures/ada.png", "mask_image": "pictures/grace.png", "image_num": 2},
        {"id": "u", "task": "upscale", "model_name": "4x-UltraSharp",
         "image": "pictures/forest.png"},
    ])  # fmt: skip


BY_TASK = (
    "by task: instant-id 2 tasks (3 images), txt2img 1 task (3 images), img2img 1 task "
    "(1 image), inpainting 1 task (2 images), upscale 1 task (1 image)"
)


def test_dry_run_without_a_key_counts_by_task_and_reads_no_balance(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = mixed_jobs(tmp_path)
    before = emulator.stats()
    env = {"NOVITA_API_KEY": "", "NOVITA_BASE_URL": emulator.base_url}
    done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "6 tasks and 10 images would be paid for" in done.stdout
    assert BY_TASK in done.stdout
    assert "balance" not in done.stdout + done.stderr
    assert emulator.stats()["requests"] == before["requests"]  # not one request
    assert not (tmp_path / "out").exists()


def test_dry_run_with_a_key_shows_the_balance(tmp_path: Path, pictures: Path) -> None:
    jobs = mixed_jobs(tmp_path)
    with emulator_process("--credit-balance", "1234567") as emulator:
        before = emulator.stats()
        done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run",
                   env=emulator.env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert BY_TASK in done.stdout
        assert "account balance: $123.4567" in done.stdout
        report = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run", "--json",
                     "--no-progress", env=emulator.env)  # fmt: skip
        assert report.returncode == 0, report.stderr
        shown = json.loads(report.stdout)
        assert shown["balance_usd"] == 123.4567
        assert shown["tasks_by_type"] == {"instant-id": 2, "txt2img": 1, "img2img": 1,
                                          "inpainting": 1, "upscale": 1}  # fmt: skip
        assert shown["images_by_type"]["instant-id"] == 3 and shown["images"] == 10
        stats = emulator.stats()
        # Two GET /v3/user, nothing else: no upload, no task.
        assert stats["submissions"] == before["submissions"] == 0
        assert stats["uploads"] == 0
        assert {route for route in stats["requests"]} <= {"user"}, stats["requests"]


def test_a_failed_balance_read_is_a_warning(tmp_path: Path, pictures: Path) -> None:
    jobs = mixed_jobs(tmp_path)
    with emulator_process("--api-key", "the-right-key") as emulator:
        env = {**emulator.env, "NOVITA_API_KEY": "a-wrong-key"}
        done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run", env=env)
        assert done.returncode == 0, done.stderr  # the dry run's answer stands
        assert BY_TASK in done.stdout and "account balance" not in done.stdout
        warning = [line for line in done.stderr.splitlines() if "balance" in line]
        assert len(warning) == 1 and warning[0].startswith("warning: ")
        assert "a-wrong-key" not in done.stdout + done.stderr
        as_json = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run", "--json",
                      env=env)  # fmt: skip
        assert as_json.returncode == 0, as_json.stderr
        shown = json.loads(as_json.stdout)
        assert "balance_usd" not in shown and shown["balance_error"] == warning[0].split(": ", 2)[2]
        assert emulator.stats()["submissions"] == 0


# --- the gallery and status of a mixed run --------------------------------------------------------


def test_mixed_run_gallery_and_status(
    tmp_path: Path, pictures: Path, picture_server: str, emulator: EmulatorProcess
) -> None:
    url = f"{picture_server}/beach.png?size=64&x=<b>"
    jobs = mixed_jobs(tmp_path, source=url)
    out = tmp_path / "out"
    before = emulator.stats()
    done = cli("run", str(jobs), "--out", str(out), "--no-progress", env=emulator.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert delta(emulator, before) == {"submit": 2, **{route: 1 for route in ROUTES}}
    assert emulator.stats()["unknown_fields"] == {}

    page = (out / "index.html").read_text(encoding="utf-8")
    cards = dict(re.findall(r'<article class="card [^"]*" id="job-([^"]+)">(.*?)</article>', page))
    assert set(cards) == {"a", "b", "t", "i", "p", "u"}
    for job_id, task in (("t", "txt2img"), ("i", "img2img"), ("p", "inpainting"),
                         ("u", "upscale")):  # fmt: skip
        assert f"<dt>task</dt><dd>{task}</dd>" in cards[job_id]
    assert "<dt>task</dt>" not in cards["a"] + cards["b"]  # InstantID cards as before
    assert 'class="inputs"' not in cards["a"] + cards["t"]  # no input image to show
    # Files linked relative to OUT, shown; a URL only linked, escaped.
    assert '<img src="../pictures/ada.png"' in cards["p"]
    assert '<img src="../pictures/grace.png"' in cards["p"]
    assert "<figcaption>mask_image</figcaption>" in cards["p"]
    assert '<img src="../pictures/forest.png"' in cards["u"]
    assert f'<a href="{html.escape(url)}" rel="noreferrer">' in cards["i"]
    assert "<b>" not in cards["i"] and "<img" not in cards["i"].split('class="inputs"')[1]
    for link in re.findall(r'<img src="([^"]+)"', page):
        assert (out / link).is_file(), link

    # status: the mixed run, and its results by task (the lines of a v3 job name their task,
    # InstantID's name none, as in 0.2.0).
    tasks = {
        line["id"]: line.get("task") for line in map(json.loads, jobs.read_text().splitlines())
    }
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {line["id"]: line.get("task") for line in lines} == tasks
    shown = cli("status", str(out))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"succeeded\s+6\s+\(10 images on disk", shown.stdout), shown.stdout
    assert "by task (results.jsonl):" in shown.stdout
    for task, count in (("instant-id", 2), ("txt2img", 1), ("upscale", 1)):
        assert re.search(rf"\n    {task}\s+{count}  \({count} succeeded\)", shown.stdout)
    as_json = json.loads(cli("status", str(out), "--json").stdout)
    assert as_json["tasks"] == {
        "instant-id": {"succeeded": 2},
        **{route: {"succeeded": 1} for route in ROUTES},
    }
    assert as_json["succeeded"] == 6


def test_gallery_escapes_a_v3_card() -> None:
    record = {"id": "x", "status": "succeeded", "files": ["x_0.png"], "task": "img2img"}
    inputs = CardInputs("img2img", (
        ("image", 'in"<put>.png', 'a dir/in"<put>.png'),
        ("mask_image", "javascript://x", "javascript://x"),
        ("image", "s3 path", None),
    ))  # fmt: skip
    page = render_gallery([record], {"x": "<i>prompt</i>"}, inputs={"x": inputs})
    assert "<put>" not in page and "<i>prompt" not in page
    assert '<img src="a%20dir/in%22%3Cput%3E.png"' in page
    assert 'href="javascript' not in page  # shown as text, never a link
    assert "<figcaption>mask_image: javascript://x</figcaption>" in page
    assert "<figcaption>image: s3 path</figcaption>" in page
    # Without inputs, the card says its task from results.jsonl.
    assert "<dt>task</dt><dd>img2img</dd>" in render_gallery([record])


def test_status_says_nothing_by_task_when_no_line_names_one(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps({"id": "a", "status": "failed"}) + "\n")
    assert task_counts(tmp_path / "results.jsonl") == {}
    status = read_status(str(tmp_path))
    assert "by task" not in format_status(status, {})
    counts = {"instant-id": {"failed": 1}, "upscale": {"succeeded": 2}}
    text = format_status(status, counts)
    assert re.search(r"\n    upscale +2  \(2 succeeded\)", text), text


def test_an_unlisted_sampler_is_warned_about_once_per_run(tmp_path: Path) -> None:
    lines = [{"id": f"t{n}", "task": "txt2img", "prompt": "p", "model_name": MODEL}
             for n in range(5)]  # fmt: skip
    jobs = write_jobs(tmp_path, lines)
    env = {"NOVITA_API_KEY": ""}
    done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--dry-run", "--sampler",
               "FlowMatchEuler", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "by task: txt2img 5 tasks (5 images)" in done.stdout
    warned = [line for line in done.stderr.splitlines() if "FlowMatchEuler" in line]
    assert len(warned) == 1 and "not one of the documented samplers" in warned[0]


def test_a_v3_input_inside_out_is_refused(tmp_path: Path, pictures: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old_0.png").write_bytes((pictures / "ada.png").read_bytes())
    lines = [
        {"id": "u", "task": "upscale", "model_name": "4x-UltraSharp", "image": "out/old_0.png"},
        {"id": "v", "task": "upscale", "model_name": "4x-UltraSharp", "image": "pictures/ada.png"},
    ]
    jobs = write_jobs(tmp_path, lines)
    done = cli("run", str(jobs), "--out", str(out), "--dry-run", env={"NOVITA_API_KEY": ""})
    assert done.returncode == 1, done.stderr
    assert "1 tasks and 1 images would be paid for" in done.stdout
    assert re.search(r"u: INPUT_IS_OUTPUT: input '.*old_0.png' is a file this run", done.stdout)


def test_every_example_of_generate_help_runs(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    """Each example command of ``generate --help``, as printed, in a folder holding the files
    it names: it succeeds, with an image of the size its flags say, on its task's route."""
    shown = cli("generate", "--help")
    text = shown.stdout.split("examples:\n", 1)[1].replace("\\\n", " ")
    examples = [shlex.split(line) for line in text.splitlines() if line.strip()]
    assert [words[:2] for words in examples] == [["novita-async", "generate"]] * 5
    for name, source in (("me", "ada"), ("scene", "beach"), ("photo", "forest"), ("mask", "grace")):
        (tmp_path / f"{name}.png").write_bytes((pictures / f"{source}.png").read_bytes())
    expected = {"instant-id": (1024, 1024), "txt2img": (768, 512), "img2img": (512, 512),
                "inpainting": (64, 64), "upscale": (128, 128)}  # fmt: skip
    for words in examples:
        task = words[words.index("--task") + 1] if "--task" in words else "instant-id"
        before = emulator.stats()
        done = cli(*words[1:], "--out", "out", env=emulator.env, cwd=tmp_path)
        assert done.returncode == 0, (words, done.stderr)
        files = [tmp_path / line for line in done.stdout.splitlines()]
        assert sizes(files) == [expected[task]], words
        assert delta(emulator, before) == {"submit" if task == "instant-id" else task: 1}
    assert emulator.stats()["unknown_fields"] == {}
