"""The mixed-task scenario through the official synchronous SDK (``novita-client``) in a thread
pool of the same width: what a user of the SDK would write for the same jobs.

Each job calls the SDK's own method for its task: ``txt2img_v3``, ``img2img_v3``, ``inpainting``
and ``instant_id`` (its asset host redirected, see :mod:`benchmarks.contenders.sdk`). The SDK has
no v3 upscale, so an upscale job posts the wrapped body with the SDK's own ``_post``, then waits
and downloads with its ``wait_for_task_v3`` and ``download_images``, as a user of the SDK would.
Each finished task's images are checked and saved as :mod:`benchmarks.contenders.sdk` does,
named as this package names them (``{id}_{n}.jpeg``) for the harness's check.
"""

from __future__ import annotations

import base64
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._mixed import GUIDANCE, IMAGE_TYPE, STEPS, MixedJob, mixed_jobs
from benchmarks.contenders.sdk import _MAGIC, sdk_client


def run_job(client: Any, job: MixedJob) -> Any:
    """The SDK's finished task of ``job``, its images downloaded."""
    from novita_client import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        CommonV3Extra,
    )
    from novita_client.utils import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        input_image_to_base64,
    )

    diffusion = {
        "model_name": job.model,
        "prompt": job.prompt,
        "image_num": job.image_num,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "sampler_name": job.sampler,
        "seed": job.index,
        "response_image_type": IMAGE_TYPE,
    }
    size = {"width": job.width, "height": job.height}
    if job.task == "txt2img":
        return client.txt2img_v3(**diffusion, **size)
    if job.task == "img2img":
        return client.img2img_v3(input_image=job.image, **diffusion, **size)
    if job.task == "inpainting":
        return client.inpainting(image=job.image, mask=job.mask, **diffusion)
    if job.task == "upscale":
        body = {
            "extra": CommonV3Extra(response_image_type=IMAGE_TYPE).to_dict(),
            "request": {
                "model_name": job.model,
                "image_base64": input_image_to_base64(job.image),
                "scale_factor": 2,
            },
        }
        answer = client._post("/v3/async/upscale", body)
        result = client.wait_for_task_v3(answer["task_id"])
        if result.task.status.name == "TASK_STATUS_SUCCEED":
            result.download_images()
        return result
    return client.instant_id(
        face_images=[job.image],
        ref_images=[job.ref],
        model_name=job.model,
        prompt=job.prompt,
        width=job.width,
        height=job.height,
        steps=STEPS,
        seed=job.index,
        guidance_scale=GUIDANCE,
        sampler_name=job.sampler,
        response_image_type=IMAGE_TYPE,
        controlnets=[],
        loras=[],
    )


def save(out_dir: str, job: MixedJob, result: Any) -> str | None:
    """Write the images of a finished task; or say why the job is not done."""
    if result.task.status.name != "TASK_STATUS_SUCCEED":
        return "task failed"
    encoded = result.images_encoded or []
    if len(encoded) != len(result.images or []):
        return "image missing"
    for n, text in enumerate(encoded):
        data = base64.b64decode(text)
        if not data.startswith(_MAGIC[IMAGE_TYPE]):
            return "not an image"
        with open(os.path.join(out_dir, f"{job.id}_{n}.{IMAGE_TYPE}"), "wb") as f:
            f.write(data)
    return None


def main() -> None:
    from benchmarks._spec import RunReport, emit, load_spec

    spec = load_spec()
    client = sdk_client()
    report = RunReport()
    report_lock = threading.Lock()
    os.makedirs(spec.out_dir, exist_ok=True)

    def one(job: MixedJob) -> None:
        try:
            problem = save(spec.out_dir, job, run_job(client, job))
        except Exception as exc:
            problem = type(exc).__name__
        with report_lock:  # the report is shared by the pool's threads
            if problem:
                report.failure(problem)
            else:
                report.success()

    with ThreadPoolExecutor(spec.concurrency) as pool:
        list(pool.map(one, mixed_jobs(spec)))
    emit(report)


if __name__ == "__main__":
    main()
