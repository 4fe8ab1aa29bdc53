"""Issue 23's "done when", through the command line as a user runs it (``python -m novita_async
run JOBS --out OUT --no-progress``) against the testing kit's emulator process.

A 60-job file mixes the five task types (InstantID lines without ``task``, txt2img, img2img,
inpainting, upscale), its input images (drawn here with Pillow) named by paths relative to the
job file. It runs end to end: every image is of the size its task implies, each endpoint receives
its jobs once, and no field the emulator does not know is sent. Then the same command killed with
SIGKILL in the middle and run again: every job succeeds and nothing is paid twice.

The kill lands at a moment read from the journal, never after a sleep: the emulator lets the
first few image downloads through and parks every later one, so the run fills its
``--concurrency`` slots with tasks whose POST was answered (a job holds its slot from submission
to its last image) and can send no other POST. The kill comes once the journal shows exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from PIL import Image

from novita_async.testing import emulator_process

JOURNAL = ".novita-journal.jsonl"
MODEL = "sd_xl_base_1.0.safetensors"
ROUTES = {  # a job's task -> the emulator's name for its submission route
    "instant-id": "submit",
    "txt2img": "txt2img",
    "img2img": "img2img",
    "inpainting": "inpainting",
    "upscale": "upscale",
}
PER_TASK = 12  # jobs of each task type: 60 in all


@attrs.frozen
class Expected:
    """What one job must leave in OUT: its task, how many images, each of this size."""

    task: str
    images: int
    size: tuple[int, int]


def picture(
    path: Path, size: tuple[int, int], colour: tuple[int, int, int], mode: str = "RGB"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path, "PNG")


def write_jobs(
    folder: Path, image_counts: tuple[int, ...] = (1, 2)
) -> tuple[Path, dict[str, Expected]]:
    """``folder/jobs/jobs.jsonl`` (its inputs under ``folder/jobs/inputs/``, named relative to
    it), the lines of the five tasks interleaved, ``image_num`` taken in turn from
    ``image_counts``; what each job must produce."""
    base = folder / "jobs"
    inputs = base / "inputs"
    # Inputs shared by many jobs, as a real batch has them: two faces, two scenes, three photos
    # with a mask each, four small pictures to upscale.
    for n in range(2):
        picture(inputs / f"face{n}.png", (96, 96), (200, 150 + 40 * n, 120))
        picture(inputs / f"scene{n}.png", (128, 96), (40, 90 + 60 * n, 200))
    photos = [(160, 128), (200, 136), (144, 144)]
    for n, size in enumerate(photos):
        picture(inputs / f"photo{n}.png", size, (90, 30 * n, 60))
        picture(inputs / f"mask{n}.png", size, (255, 255, 255), mode="L")
    smalls = [(40, 32), (48, 40), (64, 48), (32, 24)]
    for n, size in enumerate(smalls):
        picture(inputs / f"small{n}.png", size, (10 * n, 200, 90))
    factors = (2, 3, 4, 2.5, 1.5)  # exact on the smalls' sizes (the emulator rounds)

    lines: list[dict[str, Any]] = []
    expected: dict[str, Expected] = {}
    for n in range(PER_TASK):
        width, height = 128 + 16 * (n % 4), 128 + 32 * (n % 3)
        count = image_counts[n % len(image_counts)]
        lines.append({  # InstantID: no "task"
            "id": f"iid-{n}", "face_images": [f"inputs/face{n % 2}.png"],
            "ref_images": [f"inputs/scene{n % 2}.png"], "prompt": f"portrait {n}",
            "width": width, "height": height, "image_num": count,
        })  # fmt: skip
        expected[f"iid-{n}"] = Expected("instant-id", count, (width, height))
        lines.append({
            "id": f"txt-{n}", "task": "txt2img", "model_name": MODEL, "prompt": f"a lighthouse {n}",
            "width": height, "height": width, "image_num": count,
        })  # fmt: skip
        expected[f"txt-{n}"] = Expected("txt2img", count, (height, width))
        lines.append({
            "id": f"img-{n}", "task": "img2img", "model_name": MODEL, "prompt": f"in oil {n}",
            "width": width, "height": width, "image": f"inputs/photo{n % 3}.png",
            "strength": 0.6, "image_num": count,
        })  # fmt: skip
        expected[f"img-{n}"] = Expected("img2img", count, (width, width))
        lines.append({
            "id": f"inp-{n}", "task": "inpainting", "model_name": MODEL, "prompt": f"a boat {n}",
            "image": f"inputs/photo{n % 3}.png", "mask_image": f"inputs/mask{n % 3}.png",
            "mask_blur": 4, "image_num": count,
        })  # fmt: skip
        expected[f"inp-{n}"] = Expected("inpainting", count, photos[n % 3])
        small, factor = smalls[n % 4], factors[n % 5]
        lines.append({
            "id": f"up-{n}", "task": "upscale", "model_name": "RealESRNet_x4plus",
            "image": f"inputs/small{n % 4}.png", "scale_factor": factor,
        })  # fmt: skip
        upscaled = (int(small[0] * factor), int(small[1] * factor))
        expected[f"up-{n}"] = Expected("upscale", 1, upscaled)
    jobs = base / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return jobs, expected


def command(jobs: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
            "--no-progress", *options]  # fmt: skip


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def output_problems(out: Path, expected: dict[str, Expected]) -> list[str]:
    """Every job succeeded with its images in OUT, each a PNG of the size its task implies."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    problems = []
    if sorted(row["id"] for row in rows) != sorted(expected):
        problems.append(f"results.jsonl holds {len(rows)} lines, not one per job")
    for row in rows:
        job = expected[row["id"]]
        if row["status"] != "succeeded":
            problems.append(f"{row['id']}: {row['status']} {row['error']}")
            continue
        if len(row["files"]) != job.images:
            problems.append(f"{row['id']}: {len(row['files'])} images, not {job.images}")
        for name in row["files"]:
            with Image.open(out / name) as image:
                if image.size != job.size or image.format != "PNG":
                    problems.append(f"{name}: {image.format} {image.size}, not PNG {job.size}")
    return problems


def per_route(expected: dict[str, Expected]) -> dict[str, int]:
    return dict(Counter(ROUTES[job.task] for job in expected.values()))


def journal_records(out: Path) -> list[dict[str, Any]]:
    """The journal's complete lines (one torn by the kill is not a record yet)."""
    path = out / JOURNAL
    raw = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in raw.splitlines(keepends=True) if line.endswith(b"\n")]


def records_of(records: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    by_job: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("type") == kind:
            by_job.setdefault(record["id"], []).append(record)
    return by_job


def test_a_mixed_file_of_the_five_tasks_runs_end_to_end(tmp_path: Path) -> None:
    jobs, expected = write_jobs(tmp_path)
    assert len(expected) == 5 * PER_TASK == 60
    out = tmp_path / "out"
    with emulator_process() as emulator:
        env = {**os.environ, **emulator.env}
        done = run(command(jobs, out), env)
        stats = emulator.stats()
        # The same command again: every job is replayed from the journal, nothing is sent.
        again = run(command(jobs, out), env)
        sent_again = emulator.stats()["submissions"] - stats["submissions"]
    said = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, said
    assert "60 jobs: 60 succeeded, 0 failed" in done.stdout, said
    assert output_problems(out, expected) == []
    # Each endpoint received its jobs, once each; nothing it does not know was sent.
    assert stats["submissions_by_route"] == per_route(expected) == {
        "submit": 12, "txt2img": 12, "img2img": 12, "inpainting": 12, "upscale": 12,
    }  # fmt: skip
    assert stats["submissions"] == 60 and stats["duplicate_submissions"] == 0
    assert stats["unknown_fields"] == {}
    # The journal names an input by its hash only: no base64 of an image in it.
    journal = (out / JOURNAL).read_text(encoding="utf-8")
    assert "base64" not in journal and "iVBORw0KGgo" not in journal
    assert again.returncode == 0, again.stdout + again.stderr
    assert "60 from an earlier run" in again.stdout and sent_again == 0, again.stdout


# The kill: the first OK_IMAGES downloads go through, every later one is parked for a day (the
# emulator's shutdown ends them), so CONCURRENCY answered tasks end up holding every slot. Every
# job of this run makes one image: once OK_IMAGES jobs have ended, every OK download went to a job
# that ended, so the jobs holding the slots wait on parked downloads and nothing moves any more.
CONCURRENCY = 4
OK_IMAGES = 12
PARKED = 400  # more than the run can ask for: it stops asking once its slots are full
WATCH_INTERVAL = 0.005
WATCH_LIMIT = 120.0


def every_slot_holds_an_answered_task(out: Path) -> Callable[[], bool]:
    """True once OK_IMAGES jobs ended (each with its one image: no job can end after them) and
    CONCURRENCY others hold a task whose submission the journal recorded answered, with no
    submission unanswered: no POST can be on its way, and none can start."""

    def held() -> bool:
        records = journal_records(out)
        ended = records_of(records, "succeeded").keys() | records_of(records, "failed").keys()
        submitted = records_of(records, "submitted").keys()
        intents = records_of(records, "submitting").keys()
        return (
            len(ended) == OK_IMAGES
            and len(submitted - ended) == CONCURRENCY
            and intents <= submitted
        )

    return held


def watch(process: subprocess.Popen[bytes], condition: Callable[[], bool]) -> None:
    """Look at the journal until ``condition`` holds; the run must not end first."""
    deadline = time.monotonic() + WATCH_LIMIT
    while not condition():
        assert process.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(WATCH_INTERVAL)  # a file has no change notification in the stdlib: look again


def test_killed_with_sigkill_mid_run_a_plain_rerun_pays_nothing_twice(tmp_path: Path) -> None:
    jobs, expected = write_jobs(tmp_path, image_counts=(1,))
    out = tmp_path / "out"
    argv = command(jobs, out, "--concurrency", str(CONCURRENCY))
    with emulator_process() as emulator:
        env = {**os.environ, **emulator.env}
        emulator.set_faults("image", script=["ok"] * OK_IMAGES + [f"delay:{86_400}"] * PARKED)
        logs = tmp_path / "first.log"
        with logs.open("wb") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                watch(process, every_slot_holds_an_answered_task(out))
                process.send_signal(signal.SIGKILL)
            finally:
                if process.poll() is None:  # the watch failed: end the run, report why
                    process.kill()
                code = process.wait(timeout=60)
        assert code == -signal.SIGKILL, logs.read_text()

        records = journal_records(out)
        submitted = records_of(records, "submitted")
        ended = records_of(records, "succeeded").keys()
        cut_off = {job: rows[0]["task_id"] for job, rows in submitted.items() if job not in ended}
        assert len(cut_off) == CONCURRENCY and 0 < len(ended) < len(expected)
        stats = emulator.stats()
        # Every task the emulator created is in the journal: the kill cut no answer off.
        assert stats["submissions"] == len(submitted) < len(expected)

        # A plain rerun of the same command, the emulator's downloads back to normal.
        emulator.clear_faults()
        rerun = run(argv, env)
        stats = emulator.stats()
    said = f"--- stdout\n{rerun.stdout}\n--- stderr\n{rerun.stderr}"
    assert rerun.returncode == 0, said
    assert output_problems(out, expected) == []
    # Nothing paid twice: each endpoint created exactly its jobs' tasks over both runs.
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions_by_route"] == per_route(expected)
    assert stats["submissions"] == len(expected)
    assert stats["unknown_fields"] == {}
    # The journal: one submission per job, the cut-off tasks followed (not submitted again),
    # and results.jsonl naming the task each job was submitted as.
    records = journal_records(out)
    submitted = records_of(records, "submitted")
    assert sorted(submitted) == sorted(expected)
    assert all(len(rows) == 1 for rows in submitted.values()), submitted
    assert all(len(rows) == 1 for rows in records_of(records, "submitting").values())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    task_of = {row["id"]: row["task_id"] for row in rows}
    assert task_of == {job: records[0]["task_id"] for job, records in submitted.items()}
    assert {job: task_of[job] for job in cut_off} == cut_off
    assert len(set(task_of.values())) == len(expected)
