"""``novita-async run``: a job file through the batch runner, with progress, summary and gallery.

SIGINT and SIGTERM cancel the run; the batch runner then records what is in flight and closes, and
the command exits with 130. Rerunning the same command resumes from the journal.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.to_thread

from .._client import NovitaClient
from .._exceptions import ValidationError
from ..batch import BatchRunner, BatchSummary, Job, JobInputError
from ._commands import make_client
from ._gallery import write_gallery
from ._jobfile import InputFetcher, JobLine, LineError, count_lines, read_job_file
from ._parser import request_fields
from ._progress import BatchProgress

__all__ = ["INTERRUPTED", "execute_batch", "format_summary", "run", "until_signalled"]

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


def _runner_kwargs(options: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "retry_failed": bool(getattr(options, "retry_failed", False)),
        "fail_fast": bool(getattr(options, "fail_fast", False)),
    }
    for flag, name in (
        ("concurrency", "concurrency"),
        ("rate", "rate"),
        ("journal", "journal_path"),
    ):
        value = getattr(options, flag, None)
        if value is not None:
            kwargs[name] = Path(value) if name == "journal_path" else value
    return kwargs


async def execute_batch(
    client: NovitaClient,
    jobs: AsyncIterator[Job | LineError],
    out_dir: Path,
    options: argparse.Namespace,
    progress: BatchProgress,
) -> BatchSummary:
    """Run ``jobs`` (line errors included, as failed jobs) and return the runner's summary."""
    runner = BatchRunner(client, out_dir, on_event=progress.on_event, **_runner_kwargs(options))
    async with runner.run(_as_jobs(jobs, progress)) as outcomes:
        async for _ in outcomes:
            pass
    return runner.summary


def _unrunnable(error: LineError) -> Job:
    # A line that cannot become a job still gets its failed line in results.jsonl, with the line
    # number and field in the message, so the file holds one line per line of the job file.
    return Job.failed(error.id, JobInputError("INVALID_JOB_LINE", str(error)))


async def _as_jobs(
    items: AsyncIterator[Job | LineError], progress: BatchProgress
) -> AsyncIterator[Job]:
    async for item in items:
        if isinstance(item, LineError):
            progress.note(f"invalid job: {item}")
            yield _unrunnable(item)
        else:
            yield item


async def _job_lines(
    path: Path, defaults: Mapping[str, Any], fetcher: InputFetcher, prompts: dict[str, str]
) -> AsyncIterator[Job | LineError]:
    async for item in read_job_file(path, defaults, fetcher):
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
            prompts.setdefault(item.id, "")
            yield item


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
    jobs_path = Path(ns.jobs)
    if not await anyio.Path(jobs_path).is_file():
        raise ValidationError("JOBS.jsonl", str(jobs_path), "must name an existing job file")
    out = Path(ns.out)
    defaults = request_fields(ns)
    total = await anyio.to_thread.run_sync(count_lines, jobs_path)
    prompts: dict[str, str] = {}
    async with (
        make_client(ns) as client,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session,
    ):
        fetcher = InputFetcher(plain_session, out / ".novita-inputs")
        with BatchProgress(total, plain=ns.no_progress) as progress:
            lines = _job_lines(jobs_path, defaults, fetcher, prompts)
            summary, interrupted = await until_signalled(
                lambda: execute_batch(client, lines, out, ns, progress)
            )
    gallery = await anyio.to_thread.run_sync(lambda: write_gallery(out, prompts))
    if interrupted or summary is None:
        print(f"interrupted; rerun the same command to resume. Gallery so far: {gallery}")
        return INTERRUPTED
    print(format_summary(summary))
    print(f"results: {out / 'results.jsonl'}\ngallery: {gallery}")
    return 0 if summary.failed == 0 else 1
