"""``novita-async run``: a job file through the batch runner, with progress, summary and gallery.

The arguments are read once into a :class:`RunSettings` (the batch flags into its
:class:`BatchOptions`); everything below takes those typed values.

SIGINT and SIGTERM cancel the run; the batch runner then records what is in flight and closes, and
the command exits with 130. Rerunning the same command resumes from the journal.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.to_thread
import attrs

from .. import NovitaClient, ValidationError
from ..batch import (
    BatchOptions,
    BatchRunner,
    BatchSummary,
    InvalidJob,
    Job,
    JobInputError,
)
from ._commands import make_client
from ._gallery import write_gallery
from ._jobfile import InputFetcher, JobLine, count_lines, read_job_file
from ._parser import options_from_args, request_fields
from ._progress import BatchProgress

__all__ = [
    "INTERRUPTED",
    "RunSettings",
    "execute_batch",
    "format_summary",
    "run",
    "until_signalled",
]

INTERRUPTED = 130
_T = TypeVar("_T")


async def until_signalled(body: Callable[[], Awaitable[_T]]) -> tuple[_T | None, bool]:
    """Run ``body`` until it returns or SIGINT/SIGTERM arrives; (its result, interrupted)."""
    outcome: list[_T] = []
    interrupted = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        outcome.append(await body())
        group.cancel_scope.cancel()
    return (outcome[0] if outcome else None), interrupted


@attrs.frozen
class RunSettings:
    """What ``novita-async run`` was asked to do, read from its arguments once."""

    jobs: Path
    """The job file."""
    out: Path
    """The output folder: images, ``results.jsonl``, the journal and the gallery."""
    request_defaults: Mapping[str, Any]
    """The request fields the flags set, as API-named fields: defaults for every line."""
    options: BatchOptions
    plain: bool
    """Plain log lines instead of a progress bar."""

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> RunSettings:
        return cls(
            jobs=Path(ns.jobs),
            out=Path(ns.out),
            request_defaults=request_fields(ns),
            options=options_from_args(ns),
            plain=ns.no_progress,
        )


async def execute_batch(
    client: NovitaClient,
    jobs: Iterable[Job] | AsyncIterable[Job | InvalidJob],
    out_dir: Path,
    options: BatchOptions,
    progress: BatchProgress,
) -> BatchSummary:
    """Run ``jobs`` and return the runner's summary."""
    runner = BatchRunner(client, out_dir, options, on_event=progress.on_event)
    async with runner.run(jobs) as outcomes:
        async for _ in outcomes:
            pass
    return runner.summary


async def _job_lines(
    settings: RunSettings,
    fetcher: InputFetcher,
    prompts: dict[str, str],
    progress: BatchProgress,
) -> AsyncIterator[Job | InvalidJob]:
    async for item in read_job_file(settings.jobs, settings.request_defaults, fetcher):
        if isinstance(item, JobLine):
            prompts[item.id] = item.request.prompt
            yield Job(
                id=item.id,
                face_images=item.face_images,
                ref_images=item.ref_images,
                request=item.request,
                face_kps_images=item.face_kps_images,
            )
        else:
            # A line that cannot become a job still gets its failed line in results.jsonl, with
            # the line number and field in the message: one result line per job-file line.
            prompts.setdefault(item.id, "")
            progress.note(f"invalid job: {item}")
            yield InvalidJob(item.id, JobInputError("INVALID_JOB_LINE", str(item)))


def format_summary(summary: BatchSummary) -> str:
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(summary.failures_by_reason.items()))
    failed = f"{summary.failed} failed" + (f" ({reasons})" if reasons else "")
    earlier = f", {summary.replayed} from an earlier run" if summary.replayed else ""
    return (
        f"{summary.jobs} jobs: {summary.succeeded} succeeded, {failed}{earlier}; "
        f"{summary.images} images in {summary.wall_seconds:.1f}s "
        f"({summary.images_per_minute:.0f}/min), {summary.requests_per_task:.1f} requests per task"
    )


async def run(ns: argparse.Namespace) -> int:
    settings = RunSettings.from_args(ns)
    if not await anyio.Path(settings.jobs).is_file():
        raise ValidationError("JOBS.jsonl", str(settings.jobs), "must name an existing job file")
    out = settings.out
    total = await anyio.to_thread.run_sync(count_lines, settings.jobs)
    prompts: dict[str, str] = {}
    async with (
        make_client(ns) as client,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session,
    ):
        fetcher = InputFetcher(plain_session, out / ".novita-inputs")
        with BatchProgress(total, plain=settings.plain) as progress:
            lines = _job_lines(settings, fetcher, prompts, progress)
            summary, interrupted = await until_signalled(
                lambda: execute_batch(client, lines, out, settings.options, progress)
            )
    gallery = await anyio.to_thread.run_sync(lambda: write_gallery(out, prompts))
    if interrupted or summary is None:
        print(f"interrupted; rerun the same command to resume. Gallery so far: {gallery}")
        return INTERRUPTED
    print(format_summary(summary))
    print(f"results: {out / 'results.jsonl'}\ngallery: {gallery}")
    return 0 if summary.failed == 0 else 1
