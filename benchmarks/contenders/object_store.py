"""This package's batch runner writing into object storage: ``s3://`` on a local S3 server
(moto's, started here as its own process), the journal kept in the bucket as segments.

Reports what the object-store journal costs: the journal's PUTs per task (``journal_puts_per_task``,
the group-committed segments, compaction included), the images' (``image_puts_per_task``), and how
long a submission waits for its intent to be in the bucket before its POST (``durable_p50_ms``,
``durable_p95_ms``). The contender's own CPU (``own_cpu_s``) leaves out the S3 server's."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import boto3

from benchmarks._spec import RunReport, emit, load_spec
from benchmarks.contenders.ours import jobs, tally
from novita_async import NovitaClient
from novita_async.batch import BatchOptions, BatchRunner

BUCKET = "novita-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server as a process of its own; its endpoint, once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def main() -> None:
    spec = load_spec()
    report = RunReport()
    with s3_server() as endpoint, tempfile.TemporaryDirectory() as staging:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            AWS_ALLOW_HTTP="true",
            NOVITA_ASYNC_STAGING=staging,
        )
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        waits: list[float] = []
        async with NovitaClient(max_connections=spec.concurrency + 16) as client:
            runner = BatchRunner(
                client,
                f"s3://{BUCKET}/bench",
                BatchOptions(concurrency=spec.concurrency, rate=spec.rate),
            )
            mirror = runner.folder.mirror
            assert mirror is not None
            durable: Callable[[], Awaitable[None]] = mirror.durable

            async def timed_durable() -> None:
                started = time.perf_counter()
                await durable()
                waits.append(time.perf_counter() - started)

            # The flow takes the mirror's durable() when the run starts: time each call.
            mirror.durable = timed_durable  # type: ignore[method-assign]
            await tally(runner, jobs(spec), report)
        tasks = max(1, runner.summary.tasks)
        report.figures.update(
            journal_puts_per_task=round(mirror.segments_written / tasks, 3),
            image_puts_per_task=round(runner.summary.images / tasks, 3),
            durable_p50_ms=round(percentile(waits, 0.5) * 1000, 2),
            durable_p95_ms=round(percentile(waits, 0.95) * 1000, 2),
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report.figures["own_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
