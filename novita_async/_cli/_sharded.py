"""``novita-async run JOBS --out DIR --ray --shards K``: a job file through :mod:`..ray`.

The job file is read here (the driver), each job sent to the shard its id hashes to; the shards'
events feed the one progress display, and the gallery is written from the merged
``results.jsonl`` (for an object-store ``--out``, in the driver's staging folder, then uploaded
beside the images). Exit statuses and signals as ``run`` (see :mod:`._run`): the first signal stops
every shard cleanly (each resumes from its journal on the next run).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import aiohttp
import anyio

from .. import ClientConfig, ConfigurationError, RunStoppedError, Timeouts
from ..batch import BatchSummary, InvalidJob, Job, open_output
from ._jobfile import InputFetcher, count_lines
from ._progress import BatchProgress
from ._run import JobLinesRead, RunEnd, RunSettings, end_in_output, job_lines
from ._signals import until_signalled

__all__ = ["run_on_ray"]


async def run_on_ray(ns: argparse.Namespace, settings: RunSettings) -> int:
    try:
        from ..ray import run_sharded
    except ImportError as exc:
        raise ConfigurationError(
            f"--ray needs Ray: pip install 'novita-async[ray]' ({exc})"
        ) from None
    destination = settings.destination or open_output(settings.out)
    out = settings.out
    total = await anyio.to_thread.run_sync(count_lines, settings.jobs)
    prompts: dict[str, str] = {}
    timeouts = None if ns.download_timeout is None else Timeouts(download_total=ns.download_timeout)
    stream = sys.stderr if settings.report.stdout else None
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session:
        fetcher = InputFetcher(plain_session, out / ".novita-inputs")
        with BatchProgress(total, plain=settings.plain, stream=stream) as progress:
            jobs: list[Job | InvalidJob] = [
                job async for job in job_lines(settings, fetcher, prompts, progress)
            ]

            async def body() -> BatchSummary:
                # Ray prints what its processes tell the driver (a raylet's warning, a worker's
                # death) on sys.stdout, looked up at each print, until ray.shutdown (which
                # run_sharded calls): stderr is where such lines belong, and stdout then holds
                # only the run's own output (with --json, only the document). The progress
                # display took its stream before this.
                with contextlib.redirect_stdout(sys.stderr):
                    return await run_sharded(
                        jobs,
                        destination,
                        settings.options,
                        shards=ns.shards,
                        connection=ClientConfig.resolve(
                            ns.api_key,
                            base_url=ns.base_url,
                            assets_url=ns.assets_url,
                            timeouts=timeouts,
                        ),
                        address=ns.ray_address,
                        on_event=progress.on_event,
                    )

            try:
                summary, interrupted = await until_signalled(body, say=progress.note)
                end = RunEnd(summary or BatchSummary(interrupted=True), interrupted=interrupted)
            except RunStoppedError as stop:
                end = RunEnd(stop.summary or BatchSummary(), stopped=stop)
            # Every job went to a shard; those no shard read were not reached.
            taken = end.summary.jobs + end.summary.not_finished
            end = end.reaching(JobLinesRead(total, read=taken))
            return await end_in_output(end, destination, prompts, progress, settings.report)
