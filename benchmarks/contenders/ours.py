"""This package's batch runner, fed lazily from a generator; with ``webhooks`` in the spec, each
task's end comes by webhook to a receiver on a free loopback port, polls only catching lost ones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from benchmarks._spec import RunReport, RunSpec, emit, load_spec
from novita_async import Extra, InstantIDRequest, NovitaClient
from novita_async.batch import BatchEvent, BatchEventKind, BatchOptions, BatchRunner, Job


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

    def on_event(event: BatchEvent) -> None:
        # Told as the last image is renamed into place: the moment the end is on disk.
        if event.kind is BatchEventKind.SUCCEEDED and event.task_id and not event.replayed:
            report.saved(event.task_id)

    async with NovitaClient(max_connections=spec.concurrency + 16) as client:
        options = BatchOptions(
            concurrency=spec.concurrency,
            rate=spec.rate,
            webhook_listen="127.0.0.1:0" if spec.webhooks else None,
        )
        # No hook where no one reads it: the throughput scenario measures the bare runner.
        runner = BatchRunner(
            client, spec.out_dir, options, on_event=on_event if spec.end_to_disk else None
        )
        await tally(runner, jobs(spec), report)
    emit(report)


async def tally(runner: BatchRunner, jobs: Iterable[Job], report: RunReport) -> None:
    """Run ``jobs``, each outcome counted in ``report`` as it comes."""
    async with runner.run(jobs) as outcomes:
        async for outcome in outcomes:
            if outcome.status == "succeeded":
                report.success()
            else:
                report.failure(outcome.error.reason if outcome.error else "failed")


if __name__ == "__main__":
    asyncio.run(main())
