"""Runs of the v3 image tasks (txt2img, img2img, inpainting, upscale), mixed with InstantID, through
the one runner: each endpoint paced on its own, each job's task in its records, resumes that pay
nothing twice, failures that stay a job's own, and webhooks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import S3Bucket

from novita_async._models import (
    Img2ImgRequest,
    InpaintingRequest,
    Txt2ImgRequest,
    UpscaleRequest,
)
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    Job,
    read_status,
)
from novita_async.batch._journal import JOURNAL_NAME, RESULTS_NAME
from novita_async.testing import EmulatedNovita

from .conftest import make_job

Images = Callable[[int], Path]


def v3_job(job_id: str, task: str, images: Images, n: int = 0, image_num: int = 1) -> Job:
    """A job of ``task``; its prompt (or, for upscale, its input) differs from every other job's,
    so the emulator's duplicate count means "the same job paid twice"."""
    base: dict[str, Any] = {"model_name": "m.safetensors", "prompt": f"{task} {job_id}"}
    if task == "txt2img":
        return Job(id=job_id, request=Txt2ImgRequest(**base, image_num=image_num))
    if task == "img2img":
        request = Img2ImgRequest(**base, image_num=image_num)
        return Job(id=job_id, request=request, inputs={"image": images(n)})
    if task == "inpainting":
        request = InpaintingRequest(**base, image_num=image_num)
        return Job(id=job_id, request=request, inputs={"image": images(n), "mask_image": images(0)})
    assert task == "upscale"
    request = UpscaleRequest(model_name="4x-UltraSharp", scale_factor=2)
    return Job(id=job_id, request=request, inputs={"image": images(100 + n)})


def mixed_jobs(images: Images, each: int = 2) -> list[Job]:
    jobs: list[Job] = []
    for n in range(each):
        jobs.append(make_job(f"id{n}", images(1), images(2)))
        jobs += [v3_job(f"{task}{n}", task, images, n) for task in _V3]
    return jobs


_V3 = ("txt2img", "img2img", "inpainting", "upscale")


def journal(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / JOURNAL_NAME).read_bytes().splitlines()]


def results(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / RESULTS_NAME).read_bytes().splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


# --- each job's task in its records -------------------------------------------------------------


async def test_a_mixed_run_names_each_v3_job_s_task_and_a_rerun_replays_it(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = mixed_jobs(images)
    summary = await BatchRunner(kit.client, out).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (10, 0)
    assert summary.jobs_by_task == {"instant-id": 2, **dict.fromkeys(sorted(_V3), 2)}
    stats = kit.stats()
    assert stats.submissions_by_route == {"submit": 2, **dict.fromkeys(_V3, 2)}
    rows = results(out)
    # InstantID's lines name no task, as 0.1.0 and 0.2.0 wrote them; the others name theirs.
    assert {job_id: row.get("task") for job_id, row in rows.items()} == {
        job.id: None if job.task == "instant-id" else job.task for job in jobs
    }
    for record in journal(out):
        if record["type"] in ("submitting", "submitted", "succeeded"):
            expected = next(job.task for job in jobs if job.id == record["id"])
            assert record.get("task", "instant-id") == expected
    before = (out / RESULTS_NAME).read_bytes()

    replayed: list[tuple[str, str]] = []
    runner = BatchRunner(kit.client, out)
    async with runner.run(jobs) as outcomes:
        async for outcome in outcomes:
            assert outcome.replayed
            replayed.append((outcome.job_id, outcome.task))
    assert sorted(replayed) == sorted((job.id, job.task) for job in jobs)
    assert kit.stats().submissions == 10  # nothing paid again
    assert (out / RESULTS_NAME).read_bytes() == before
    status = read_status(out, verify=True)
    assert (status.succeeded, status.images, status.images_damaged) == (10, 10, 0)
    assert status.jobs_by_task == {"instant-id": 2, **dict.fromkeys(_V3, 2)}


async def test_a_v3_job_of_many_images_saves_every_one(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [v3_job("t", "txt2img", images, image_num=3), v3_job("i", "img2img", images, 1, 2)]
    summary = await BatchRunner(kit.client, out).run_all(jobs)
    assert (summary.succeeded, summary.images) == (2, 5)
    rows = results(out)
    assert [len(rows[job_id]["files"]) for job_id in ("t", "i")] == [3, 2]
    assert all((out / name).is_file() for row in rows.values() for name in row["files"])


async def test_an_invalid_v3_line_fails_under_its_task(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    from novita_async.batch import read_jobs

    path = tmp_path / "jobs.jsonl"
    lines = [
        {"id": "bad", "task": "txt2img", "model_name": "m", "prompt": "x", "image_num": 99},
        {"id": "good", "task": "txt2img", "model_name": "m", "prompt": "y"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    summary = await BatchRunner(kit.client, out).run_all(read_jobs(path))
    assert (summary.succeeded, summary.failed) == (1, 1)
    rows = results(out)
    assert rows["bad"]["task"] == "txt2img" and rows["bad"]["error"]["reason"] == "INVALID_JOB_LINE"
    assert kit.stats().submissions_by_route == {"txt2img": 1}


# --- pacing per endpoint --------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_a_429_on_one_endpoint_pauses_only_its_jobs(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    """txt2img answers its first submission 429 (Retry-After 30 s): its jobs wait, holding no slot
    (two tasks in flight at most), while every img2img job is submitted and ends."""
    kit.faults.script("txt2img", ["429:30"])
    jobs: list[Job] = []
    for n in range(6):
        jobs += [v3_job(f"t{n}", "txt2img", images, n), v3_job(f"i{n}", "img2img", images, n)]
    events: list[BatchEvent] = []
    # One POST at a time: the first txt2img one is answered (429) before any other is sent.
    options = BatchOptions(concurrency=2, upload_concurrency=12, submit_concurrency=1)
    out = tmp_path / "out"
    summary = await BatchRunner(kit.client, out, options, on_event=events.append).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (12, 0)
    stats = kit.stats()
    assert stats.requests["txt2img"] == {"429": 1, "200": 6}
    assert stats.submissions_by_route == {"txt2img": 6, "img2img": 6}
    assert stats.duplicate_submissions == 0
    submitted = [r["id"][0] for r in journal(out) if r["type"] == "submitted"]
    # Every img2img task was made before any txt2img task: the pause held only txt2img.
    assert submitted == ["i"] * 6 + ["t"] * 6
    paused = [str(e.message) for e in events if e.kind is BatchEventKind.PAUSED]
    assert paused == [
        "submissions paused for 30.0s: rate limited on txt2img (429, Retry-After 30s)"
    ]


@pytest.mark.virtual_time
@pytest.mark.emulator(rate_limit_images_per_minute=4)
@pytest.mark.parametrize("capped", [True, False])
async def test_a_task_cap_keeps_its_endpoint_under_the_service_s_limit(
    kit: EmulatedNovita, images: Images, tmp_path: Path, capped: bool
) -> None:
    """The emulator allows 4 images a minute per endpoint. Six txt2img tasks of two images each
    under a cap of 4 a minute never meet a 429; uncapped they do. The three img2img images fit
    the limit uncapped."""
    jobs = [v3_job(f"t{n}", "txt2img", images, n, image_num=2) for n in range(6)]
    jobs += [v3_job(f"i{n}", "img2img", images, n) for n in range(3)]
    options = BatchOptions(task_rates={"txt2img": 4} if capped else {})
    summary = await BatchRunner(kit.client, tmp_path / "out", options).run_all(jobs)
    assert (summary.succeeded, summary.failed, summary.images) == (9, 0, 15)
    stats = kit.stats()
    assert stats.submissions_by_route == {"txt2img": 6, "img2img": 3}
    assert stats.requests["img2img"] == {"200": 3}
    if capped:
        assert stats.requests["txt2img"] == {"200": 6} and stats.rate_limited == 0
    else:
        assert stats.requests["txt2img"]["429"] > 0


@pytest.mark.virtual_time
async def test_a_cap_of_fewer_images_than_a_task_makes_sends_it_alone(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    jobs = [v3_job(f"t{n}", "txt2img", images, n, image_num=4) for n in range(3)]
    options = BatchOptions(task_rates={"txt2img": 2})
    summary = await BatchRunner(kit.client, tmp_path / "out", options).run_all(jobs)
    assert (summary.succeeded, summary.images) == (3, 12)


# --- resume, failures, webhooks -----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_a_mixed_run_left_early_resumes_paying_nothing_twice(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    """Left once six tasks are in flight (their polls held, so none ends first): the rerun follows
    those six and submits the nine others."""
    out = tmp_path / "out"
    jobs = mixed_jobs(images, each=3)
    kit.faults.hold("result")
    with anyio.CancelScope() as leave:

        def on_event(event: BatchEvent) -> None:
            if event.kind is BatchEventKind.SUBMITTED and kit.stats().submissions == 6:
                leave.cancel()

        options = BatchOptions(concurrency=6)
        await BatchRunner(kit.client, out, options, on_event=on_event).run_all(jobs)
    kit.faults.release("result")
    assert kit.stats().submissions == 6
    states = {r["id"]: r["type"] for r in journal(out) if "id" in r}
    assert sorted(states.values()) == ["submitted"] * 6  # in flight, for the rerun to follow

    again = await BatchRunner(kit.client, out).run_all(jobs)
    assert (again.succeeded, again.failed) == (15, 0)
    assert (again.resumed, again.submitted) == (6, 9)
    stats = kit.stats()
    assert stats.submissions == 15 and stats.duplicate_submissions == 0
    assert stats.submissions_by_route == {"submit": 3, **dict.fromkeys(_V3, 3)}
    rows = results(out)
    assert {job.id: rows[job.id].get("task", "instant-id") for job in jobs} == {
        job.id: job.task for job in jobs
    }


@pytest.mark.virtual_time
async def test_a_failed_v3_task_fails_its_job_alone_and_a_5xx_route_only_pauses(
    kit: EmulatedNovita, images: Images, tmp_path: Path
) -> None:
    kit.faults.fail_next_tasks(1, "task failed: no image")
    kit.faults.script("img2img", ["503", "503", "503", "503"])
    jobs = [v3_job("t0", "txt2img", images)]
    jobs += [v3_job(f"i{n}", "img2img", images, n) for n in range(3)]
    jobs += [v3_job("u0", "upscale", images)]
    options = BatchOptions(concurrency=1)
    summary = await BatchRunner(kit.client, tmp_path / "out", options).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (4, 1)
    assert summary.failures_by_reason == {"TASK_FAILED": 1}
    [failed] = [row for row in results(tmp_path / "out").values() if row["status"] == "failed"]
    assert failed["task"] == next(job.task for job in jobs if job.id == failed["id"])
    stats = kit.stats()
    assert stats.requests["img2img"]["503"] == 4
    assert stats.submissions_by_route == {"txt2img": 1, "img2img": 3, "upscale": 1}
    assert stats.duplicate_submissions == 0


@pytest.mark.virtual_time
@pytest.mark.emulator(task_base_seconds=0.3)
async def test_v3_tasks_end_by_webhook(kit: EmulatedNovita, images: Images, tmp_path: Path) -> None:
    options = BatchOptions(webhook_listen="127.0.0.1:0")
    jobs = mixed_jobs(images, each=2)
    summary = await BatchRunner(kit.client, tmp_path / "out", options).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (10, 0)
    stats = kit.stats()
    assert stats.webhooks["delivered"] == 10
    assert stats.count("result") == 0  # every end came by webhook: no poll at all


async def test_a_mixed_run_into_an_object_store_and_its_rerun(
    kit: EmulatedNovita, images: Images, s3_bucket: S3Bucket
) -> None:
    jobs = mixed_jobs(images)
    summary = await BatchRunner(kit.client, s3_bucket.url("run")).run_all(jobs)
    assert (summary.succeeded, summary.failed) == (10, 0)
    keys = s3_bucket.keys("run/")
    assert sorted(k for k in keys if k.endswith(".png")) == sorted(
        f"run/{job.id}_0.png" for job in jobs
    )
    lines = s3_bucket.get("run/results.jsonl").splitlines()
    tasks = {row["id"]: row.get("task") for row in map(json.loads, lines)}
    assert tasks == {job.id: None if job.task == "instant-id" else job.task for job in jobs}

    again = await BatchRunner(kit.client, s3_bucket.url("run")).run_all(jobs)
    assert (again.replayed, again.submitted) == (10, 0)
    assert kit.stats().submissions == 10 and kit.stats().duplicate_submissions == 0
