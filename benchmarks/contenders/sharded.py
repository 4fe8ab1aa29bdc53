"""This package's batch runner as ``spec.shards`` shards on a local Ray instance
(``novita_async.ray.run_sharded``), the same jobs and the same total rate and concurrency as the
one-process contender.

Ray's processes (its servers and the shard actors' workers) are not this process's children that
the harness waits for, so their CPU would be missing from the harness's figure: the contender adds
up the CPU of every process under it (Ray's included) just before Ray shuts down, and reports it as
``ray_cpu_s``, with the seconds Ray took to start (``ray_start_s``)."""

from __future__ import annotations

import asyncio
import time

import psutil
import ray

from benchmarks._spec import RunReport, emit, load_spec
from benchmarks.contenders.ours import jobs
from novita_async.batch import BatchEvent, BatchEventKind, BatchOptions
from novita_async.ray import run_sharded


def tree_cpu_seconds() -> float:
    """User + system CPU of this process and every process under it, alive now."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def main() -> None:
    spec = load_spec()
    report = RunReport()
    shards = spec.shards or 2

    def on_progress(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUCCEEDED and not event.replayed:
            report.success()
        elif event.kind is BatchEventKind.FAILED and not event.replayed:
            report.failure(event.reason or "failed")

    started = time.monotonic()
    ray.init(num_cpus=max(2, shards), include_dashboard=False, log_to_driver=False)
    report.figures["ray_start_s"] = round(time.monotonic() - started, 3)
    try:
        await run_sharded(
            jobs(spec),
            spec.out_dir,
            # The same jobs in flight in all as the one process has.
            BatchOptions(concurrency=max(1, spec.concurrency // shards), rate=spec.rate),
            shards=shards,
            on_event=on_progress,
        )
        report.figures["ray_cpu_s"] = round(tree_cpu_seconds(), 3)
    finally:
        ray.shutdown()
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
