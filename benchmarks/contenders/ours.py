"""This package's batch runner, fed lazily from a generator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from benchmarks._spec import RunReport, RunSpec, emit, load_spec
from novita_async import Extra, InstantIDRequest, NovitaClient
from novita_async.batch import BatchRunner, Job


def jobs(spec: RunSpec) -> Iterator[Job]:
    extra = Extra(response_image_type=spec.image_type)
    for index, face, ref in spec.job_inputs():
        yield Job(
            id=str(index),
            face_images=[face],
            ref_images=[ref],
            request=InstantIDRequest(
                prompt=f"benchmark job {index}",
                width=spec.width,
                height=spec.height,
                steps=spec.steps_for(index),
                seed=index,
                extra=extra,
            ),
        )


async def main() -> None:
    spec = load_spec()
    report = RunReport()
    async with NovitaClient(max_connections=spec.concurrency + 16) as client:
        runner = BatchRunner(client, spec.out_dir, concurrency=spec.concurrency, rate=spec.rate)
        async with runner.run(jobs(spec)) as outcomes:
            async for outcome in outcomes:
                if outcome.status == "succeeded":
                    report.success()
                else:
                    report.failure(outcome.error.reason if outcome.error else "failed")
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
