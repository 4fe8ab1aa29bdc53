"""Ray shards run the v3 image tasks as any other: a mixed run's merged results name each job's
task, and a 429 one shard sees on one endpoint holds every shard's submissions there, and only
there."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import ray
from PIL import Image

from novita_async import ClientConfig, InstantIDRequest
from novita_async._models import Img2ImgRequest, Txt2ImgRequest, UpscaleRequest
from novita_async.batch import Job
from novita_async.batch._pacing import RunGate
from novita_async.emulator import EmulatorProcess
from novita_async.ray import PermitsProxy, RatePermits, run_sharded

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _mixed(count: int) -> list[Job]:
    jobs: list[Job] = []
    for n in range(count):
        base = {"model_name": "m.safetensors", "prompt": f"job {n}"}
        face = InstantIDRequest(prompt=f"portrait {n}", width=128, height=128)
        jobs += [
            Job(id=f"id{n}", face_images=[_png(n)], ref_images=[_png(n + 50)], request=face),
            Job(id=f"t{n}", request=Txt2ImgRequest(**base, image_num=2)),
            Job(id=f"i{n}", request=Img2ImgRequest(**base), inputs={"image": _png(n + 100)}),
            Job(
                id=f"u{n}",
                request=UpscaleRequest(model_name="4x-UltraSharp", scale_factor=2),
                inputs={"image": _png(n + 150)},
            ),
        ]
    return jobs


async def test_a_sharded_mixed_run_names_each_job_s_task(local_ray: None, tmp_path: Path) -> None:
    jobs = _mixed(4)
    with EmulatorProcess("--seed", "1", "--image-mode", "tiny", "--task-seconds", "0") as emulator:
        env = emulator.env
        connection = ClientConfig.resolve(
            api_key=env["NOVITA_API_KEY"],
            base_url=env["NOVITA_BASE_URL"],
            assets_url=env["NOVITA_ASSETS_URL"],
        )
        out = tmp_path / "out"
        summary = await run_sharded(jobs, out, shards=2, connection=connection)
        assert (summary.succeeded, summary.failed, summary.images) == (16, 0, 20)
        assert summary.jobs_by_task == {
            "img2img": 4, "instant-id": 4, "txt2img": 4, "upscale": 4
        }  # fmt: skip
        stats = emulator.stats()
        assert stats["submissions_by_route"] == {"submit": 4, "txt2img": 4, "img2img": 4,
                                                 "upscale": 4}  # fmt: skip
        assert stats["duplicate_submissions"] == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    tasks = {line["id"]: line.get("task") for line in lines}
    assert tasks == {job.id: None if job.task == "instant-id" else job.task for job in jobs}


async def test_a_429_one_shard_sees_holds_that_endpoint_for_every_shard_and_no_other(
    local_ray: None,
) -> None:
    permits = RatePermits.remote(None)  # type: ignore[attr-defined]
    one = RunGate(permits=PermitsProxy(permits), retry_after_cap=3600.0)
    other = RunGate(permits=PermitsProxy(permits), retry_after_cap=3600.0)
    assert one.rate_limited(3600.0, "txt2img") == 3600.0  # this gate's 429, told to the permits
    while (await permits.counts.remote())["pauses"] == 0:
        pass
    with anyio.fail_after(60):  # an hour's pause would hold it past this
        await other.wait(endpoint="img2img")
    with anyio.move_on_after(0.5) as held:
        await other.wait(endpoint="txt2img")  # the other gate knows of no pause itself
    assert held.cancelled_caught
    assert await permits.counts.remote() == {"granted": 1, "pauses": 1}
    ray.kill(permits)
