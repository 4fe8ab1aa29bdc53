"""The mixed-task scenario through this package's batch runner: one generator of ``Job`` values
of five request types, one runner, as a user of the package would write it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from benchmarks._mixed import GUIDANCE, IMAGE_TYPE, STEPS, MixedJob, mixed_jobs
from benchmarks._spec import RunReport, RunSpec, emit, load_spec
from benchmarks.contenders.ours import tally

# Not yet exported from ``novita_async`` on this branch (issue 23's client work does that).
from novita_async import (
    Extra,
    Img2ImgRequest,
    InpaintingRequest,
    InstantIDRequest,
    NovitaClient,
    Txt2ImgRequest,
    UpscaleRequest,
)
from novita_async.batch import BatchOptions, BatchRunner, Job


def job(mixed: MixedJob, extra: Extra) -> Job:
    common = {
        "model_name": mixed.model,
        "prompt": mixed.prompt,
        "image_num": mixed.image_num,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "sampler_name": mixed.sampler,
        "seed": mixed.index,
        "extra": extra,
    }
    size = {"width": mixed.width, "height": mixed.height}
    if mixed.task == "txt2img":
        return Job(id=mixed.id, request=Txt2ImgRequest(**common, **size))
    if mixed.task == "img2img":
        request = Img2ImgRequest(**common, **size)
        return Job(id=mixed.id, request=request, inputs={"image": mixed.image})
    if mixed.task == "inpainting":
        inputs = {"image": mixed.image, "mask_image": mixed.mask}
        return Job(id=mixed.id, request=InpaintingRequest(**common), inputs=inputs)
    if mixed.task == "upscale":
        request = UpscaleRequest(model_name=mixed.model, scale_factor=2, extra=extra)
        return Job(id=mixed.id, request=request, inputs={"image": mixed.image})
    request = InstantIDRequest(**common, **size)
    return Job(id=mixed.id, face_images=[mixed.image], ref_images=[mixed.ref], request=request)


def jobs(spec: RunSpec) -> Iterator[Job]:
    extra = Extra(response_image_type=IMAGE_TYPE)
    return (job(mixed, extra) for mixed in mixed_jobs(spec))


async def main() -> None:
    spec = load_spec()
    report = RunReport()
    async with NovitaClient(max_connections=spec.concurrency + 16) as client:
        runner = BatchRunner(client, spec.out_dir, BatchOptions(concurrency=spec.concurrency))
        await tally(runner, jobs(spec), report)
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
