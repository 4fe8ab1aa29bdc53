"""A batch run into ``s3://`` (moto's server on loopback) against the emulator: images, results
and the journal in the bucket; intents stored before their POSTs; a large image in parts; the
store going away mid-run stops the run (no job failed) and a rerun continues."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from support import S3_SECRET, S3Bucket, create_bucket, s3_env

from novita_async import InstantIDRequest, NovitaClient, RunStoppedError
from novita_async.batch import BatchOptions, BatchRunner, Job, open_output
from novita_async.batch._outputs import MULTIPART_CHUNK, ObjectOutput
from novita_async.emulator import Emulator, EmulatorConfig


def png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def make_job(job_id: str, face: Path, ref: Path) -> Job:
    # Each job's prompt differs, so the emulator's duplicate count means "the same job twice".
    request = InstantIDRequest(prompt=f"portrait of {job_id}", width=128, height=128)
    return Job(id=job_id, face_images=[face], ref_images=[ref], request=request)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=5, task_base_seconds=0.0, image_mode="tiny")


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[NovitaClient]:
    async with NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as c:
        yield c


@pytest.fixture
def make_jobs(tmp_path: Path) -> Callable[[int], list[Job]]:
    faces = [tmp_path / f"face{n}.png" for n in range(3)]
    for n, face in enumerate(faces):
        face.write_bytes(png_bytes(n))

    def make(count: int) -> list[Job]:
        return [make_job(f"job{n:03d}", faces[n % 3], faces[(n + 1) % 3]) for n in range(count)]

    return make


async def served_image(client: NovitaClient, task_id: str, folder: Path) -> bytes:
    """The task's image as the service serves it, fetched again for comparison."""
    result = await client.get_task_result(task_id)
    [path] = await client.download_images(result, folder, stem=task_id)
    return path.read_bytes()


async def test_a_batch_lands_in_the_bucket(
    client: NovitaClient,
    emu: Emulator,
    s3_bucket: S3Bucket,
    make_jobs: Callable[[int], list[Job]],
    tmp_path: Path,
) -> None:
    runner = BatchRunner(client, s3_bucket.url("run"), BatchOptions(concurrency=4))
    summary = await runner.run_all(make_jobs(6))
    assert (summary.succeeded, summary.failed) == (6, 0)
    keys = s3_bucket.keys("run/")
    images = [k for k in keys if k.endswith(".png")]
    assert images == [f"run/job{n:03d}_0.png" for n in range(6)]
    results = s3_bucket.get("run/results.jsonl")
    assert results == (runner.out_dir / "results.jsonl").read_bytes()
    assert results.count(b'"succeeded"') == 6
    # One compacted segment holds the whole journal, equal to the staging copy.
    [segment] = [k for k in keys if k.startswith("run/.novita-journal/")]
    assert s3_bucket.get(segment) == (runner.out_dir / ".novita-journal.jsonl").read_bytes()
    assert not list(runner.out_dir.glob("*.png"))  # uploaded, then removed from staging
    for line in results.splitlines():
        record = json.loads(line)
        expected = await served_image(client, record["task_id"], tmp_path / "check")
        assert s3_bucket.get(f"run/{record['files'][0]}") == expected
    assert emu.stats().duplicate_submissions == 0
    assert repr(runner) == f"<BatchRunner out={s3_bucket.url('run')!r} concurrency=4>"


async def test_each_intent_is_stored_before_its_post_and_puts_are_shared(
    client: NovitaClient,
    emu: Emulator,
    s3_bucket: S3Bucket,
    make_jobs: Callable[[int], list[Job]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = make_jobs(50)
    by_prompt = {job.request.prompt: job.id for job in jobs}
    stored_first: list[bool] = []
    post = client._submit_body

    def stored_journal() -> bytes:
        segments = s3_bucket.keys("run/.novita-journal/")
        return b"".join(s3_bucket.get(key) for key in segments)

    async def checked_post(endpoint: str, body: dict[str, Any], **kwargs: Any) -> str:
        # At the moment the POST is about to go: is the job's intent in the bucket?
        job_id = by_prompt[body["prompt"]]
        # boto3 blocks: in a thread, or the run's loop would stall at every POST.
        stored = await anyio.to_thread.run_sync(stored_journal)
        stored_first.append(f'"type":"submitting","id":"{job_id}"'.encode() in stored)
        return await post(endpoint, body, **kwargs)

    monkeypatch.setattr(client, "_submit_body", checked_post)
    runner = BatchRunner(
        client, s3_bucket.url("run"), BatchOptions(concurrency=20, submit_concurrency=20)
    )
    summary = await runner.run_all(jobs)
    assert summary.succeeded == 50
    assert stored_first == [True] * 50
    mirror = runner.folder.mirror
    assert mirror is not None
    # Group commit: intents of submissions waiting together went up in one PUT (the final
    # compaction and the timed flushes are counted too).
    assert mirror.segments_written < 50
    print(
        f"journal segments written for 50 submissions at concurrency 20: {mirror.segments_written}"
    )
    assert emu.stats().submissions == 50


@pytest.mark.emulator(image_size_bytes=2 * MULTIPART_CHUNK + 1234)
async def test_a_large_image_goes_up_in_parts(
    client: NovitaClient, s3_bucket: S3Bucket, make_jobs: Callable[[int], list[Job]], tmp_path: Path
) -> None:
    runner = BatchRunner(client, s3_bucket.url("big"))
    summary = await runner.run_all(make_jobs(1))
    assert summary.succeeded == 1
    [outcome_line] = s3_bucket.get("big/results.jsonl").splitlines()
    record = json.loads(outcome_line)
    key = f"big/{record['files'][0]}"
    stored = s3_bucket.get(key)
    assert len(stored) == 2 * MULTIPART_CHUNK + 1234
    assert stored == await served_image(client, record["task_id"], tmp_path / "check")
    assert s3_bucket.etag(key).endswith("-3")  # a multipart upload's ETag: 3 parts


@pytest.fixture
def own_s3_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """An S3 server of this test's own, to stop and start again (moto keeps its buckets)."""
    import moto.server as moto_server

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in s3_env(endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOVITA_ASYNC_STAGING", str(tmp_path / "staging"))
    holder = {"server": server, "port": port, "endpoint": endpoint}
    try:
        yield holder
    finally:
        holder["server"].stop()


@pytest.mark.emulator(task_base_seconds=0.2)
async def test_the_store_going_away_stops_the_run_and_a_rerun_continues(
    client: NovitaClient,
    emu: Emulator,
    own_s3_server: dict[str, Any],
    make_jobs: Callable[[int], list[Job]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = create_bucket(own_s3_server["endpoint"], "novita-outage")
    jobs = make_jobs(10)
    out = open_output(bucket.url("run"), retry_timeout=1.0)
    assert isinstance(out, ObjectOutput)
    caplog.set_level(logging.DEBUG)
    runner = BatchRunner(client, out, BatchOptions(concurrency=2))
    with pytest.raises(RunStoppedError) as stopped:
        async with runner.run(jobs) as outcomes:
            async for outcome in outcomes:
                assert outcome.ok
                if runner.summary.succeeded == 2:
                    await anyio.to_thread.run_sync(own_s3_server["server"].stop)
    assert stopped.value.reason.startswith("STORAGE_")
    assert "object store" in str(stopped.value)
    assert runner.summary.failed == 0  # the store's failure is the run's, no job's
    assert runner.summary.succeeded < 10

    import moto.server as moto_server

    server = moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=own_s3_server["port"], verbose=False
    )
    server.start()
    own_s3_server["server"] = server
    again = BatchRunner(client, out, BatchOptions(concurrency=2))
    summary = await again.run_all(jobs)
    assert summary.succeeded == 10 and summary.failed == 0
    assert sorted(k for k in bucket.keys("run/") if k.endswith(".png")) == [
        f"run/job{n:03d}_0.png" for n in range(10)
    ]
    assert emu.stats().duplicate_submissions == 0
    assert emu.stats().submissions == 10
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert S3_SECRET not in logged and S3_SECRET not in repr(stopped.value)
