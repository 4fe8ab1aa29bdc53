"""``novita-async run``: a job file through the batch runner, with progress, summary and gallery.

The arguments are read once into a :class:`RunSettings` (the batch flags into its
:class:`BatchOptions`); everything below takes those typed values.

Exit statuses (the ``EXIT_*`` constants): 0 every job succeeded; 1 some jobs failed (for their own
reason, or retryable ones the summary explains); 2 bad usage or invalid input, before anything was
sent; 3 the run stopped for a run-level cause (:class:`RunStoppedError`: the key, the account, the
endpoint, this machine, a long outage), named in one line with its fix; 4 the run spent its
``--max-tasks`` budget; 130 interrupted. ``--dry-run`` exits 0 when every line can run, 1 when
some cannot.

Signals: see :mod:`._signals`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .. import (
    LocalIOError,
    RunStoppedError,
    StorageError,
    ValidationError,
)
from ..batch import (
    BatchOptions,
    BatchRunner,
    BatchSummary,
    InvalidJob,
    Job,
    JobInputError,
    Output,
    is_run_output,
    open_output,
)
from ..batch._journal import JOURNAL_NAME
from ._commands import make_client
from ._dry_run import print_dry_run
from ._gallery import write_gallery
from ._jobfile import InputFetcher, JobLine, count_lines, read_job_file
from ._printable import printable, printable_lines
from ._progress import BatchProgress
from ._request_flags import request_fields
from ._run_report import ReportTo, RunReport, StopReport
from ._signals import plural, until_signalled

__all__ = [
    "EXIT_BUDGET",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "INTERRUPTED",
    "RunEnd",
    "RunSettings",
    "end_in_output",
    "format_summary",
    "report_end",
    "run",
    "run_batch",
    "write_gallery_if_possible",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = INTERRUPTED = 130
_T = TypeVar("_T")


@attrs.frozen
class RunSettings:
    """What ``novita-async run`` was asked to do, read from its arguments once."""

    jobs: Path
    """The job file."""
    out: Path
    """The output folder: images, ``results.jsonl``, the journal and the gallery (for an
    object-store ``--out``, the local staging folder the run works in)."""
    request_defaults: Mapping[str, Any]
    """The request fields the flags set, as API-named fields: defaults for every line."""
    options: BatchOptions
    plain: bool
    """Plain log lines instead of a progress bar."""
    dry: bool = False
    """Decide what the run would do, and send nothing (``--dry-run``)."""
    report: ReportTo = attrs.field(factory=ReportTo)
    """Where the run's JSON report goes (``--summary-json``, ``--json``)."""
    destination: Output | None = None
    """Where ``--out`` points: the folder, or an object store (None: ``out`` itself)."""
    assets_url: str | None = None
    """The asset upload URL (``--assets-url``; None: ``NOVITA_ASSETS_URL`` or the service's),
    which decides the uploads a dry run counts as saved."""

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> RunSettings:
        options: BatchOptions = ns.batch_options  # built once, from every flag, by parse_args
        # A URL the package cannot write is refused here, before anything is sent.
        destination = open_output(ns.out, staging_dir=options.staging_dir)
        return cls(
            jobs=Path(ns.jobs),
            out=destination.local_dir,
            destination=destination,
            request_defaults=request_fields(ns),
            options=options,
            plain=ns.no_progress,
            dry=bool(getattr(ns, "dry_run", False)),
            report=ReportTo.from_args(ns),
            assets_url=ns.assets_url,
        )


@attrs.frozen
class RunEnd:
    """How a batch run ended: its summary, and whether a signal or a run-level cause stopped it."""

    summary: BatchSummary
    interrupted: bool = False
    stopped: RunStoppedError | None = None

    def reaching(self, lines: JobLinesRead) -> RunEnd:
        """This end, its summary counting the job file's jobs the run never read."""
        not_reached = max(lines.total - lines.read, 0)
        return attrs.evolve(self, summary=attrs.evolve(self.summary, not_reached=not_reached))

    @property
    def status(self) -> int:
        """The command's exit status."""
        if self.stopped is not None:
            return EXIT_BUDGET if self.stopped.reason == "BUDGET_REACHED" else EXIT_STOPPED
        if self.interrupted:
            return EXIT_INTERRUPTED
        clean = self.summary.failed == 0 and self.summary.not_finished == 0
        return EXIT_OK if clean else EXIT_FAILED


async def run_batch(
    runner: BatchRunner,
    jobs: Iterable[Job] | AsyncIterable[Job | InvalidJob],
    progress: BatchProgress,
) -> RunEnd:
    """Run ``jobs`` through ``runner`` until they end, a signal stops them or the run stops."""
    try:
        summary, interrupted = await until_signalled(
            lambda: runner.run_all(jobs), runner, say=progress.note
        )
    except RunStoppedError as stop:
        return RunEnd(stop.summary or runner.summary, stopped=stop)
    return RunEnd(summary or runner.summary, interrupted=interrupted)


async def write_gallery_if_possible(
    out: Path, prompts: Mapping[str, str], progress: BatchProgress, title: str | None = None
) -> Path | None:
    """``index.html``, or a note and None if this machine refuses it: a full disk must not hide
    the run's own account of what happened."""
    try:
        return await anyio.to_thread.run_sync(lambda: write_gallery(out, prompts, title=title))
    except (OSError, LocalIOError) as exc:
        progress.note(f"the gallery could not be written: {exc}")
        return None


@attrs.define
class JobLinesRead:
    """How many jobs the job file holds (``total``) and how many of them the run read."""

    total: int
    read: int = 0


async def job_lines(
    settings: RunSettings,
    fetcher: InputFetcher,
    prompts: dict[str, str],
    progress: BatchProgress,
    *,
    note_invalid: bool = True,
    counted: JobLinesRead | None = None,
) -> AsyncIterator[Job | InvalidJob]:
    async for item in read_job_file(settings.jobs, settings.request_defaults, fetcher):
        if counted is not None:
            counted.read += 1  # each item is yielded to the run, which takes it
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
            if note_invalid:
                progress.note(f"invalid job: {item}")
            yield InvalidJob(item.id, JobInputError("INVALID_JOB_LINE", str(item)))


# What a job that ended with this reason needs, and the command that acts on it.
_ADVICE = {
    "SUBMIT_OUTCOME_UNKNOWN": "a task may exist and be billed; look before paying again: rerun "
    "with --retry-unknown-submits to submit them anyway",
    "RETRIES_EXHAUSTED": "the service kept failing for them; rerun the same command to try again",
    "TASK_NOT_FOUND": "the service no longer knows their tasks; rerun with --retry-failed to "
    "submit them afresh",
    "INVALID_JOB_LINE": "lines of the job file that are not valid jobs, named above; fix them "
    "and rerun with --retry-failed",
    "OUTPUT_MISSING": "their images went missing from the output; a rerun with these jobs "
    "fetches them again from their tasks, at no cost",
    "OUTPUT_LOST": "their images are missing and the service no longer has their tasks; rerun "
    "with --retry-failed to pay for new ones",
}
_OWN_FAULT = "each job's error is in results.jsonl; rerun with --retry-failed to run them again"


def format_summary(summary: BatchSummary) -> str:
    """The run's numbers on the first line, then a line for each kind of job left undone: what
    it means and the command that acts on it."""
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(summary.failures_by_reason.items()))
    failed = f"{summary.failed} failed" + (f" ({reasons})" if reasons else "")
    earlier = f", {summary.replayed} from an earlier run" if summary.replayed else ""
    jobs = f"{summary.jobs} jobs"
    if summary.not_reached:
        # The file's jobs, not only those the run had read when it stopped.
        total = summary.jobs + summary.not_finished + summary.not_reached
        jobs = f"{summary.jobs} of {total} jobs ended"
    if summary.restored:
        earlier += f", {summary.restored} restored from their tasks"
    lines = [
        f"{jobs}: {summary.succeeded} succeeded, {failed}{earlier}; "
        f"{summary.images} images in {summary.wall_seconds:.1f}s "
        f"({summary.images_per_minute:.0f}/min), {summary.requests_per_task:.1f} requests per task"
    ]
    own = {r: n for r, n in summary.failures_by_reason.items() if r not in _ADVICE}
    for reason, advice in _ADVICE.items():
        if count := summary.failures_by_reason.get(reason, 0):
            lines.append(f"  {count} {reason} ({advice})")
    if own:
        which = ", ".join(f"{r}: {n}" for r, n in sorted(own.items()))
        lines.append(
            f"  {plural(sum(own.values()), 'job', 'jobs')} failed for their own reason "
            f"({which}; {_OWN_FAULT})"
        )
    why = "the run stopped" if summary.stopped else "the run ended before them"
    if summary.not_finished:
        lines.append(f"  {summary.not_finished} not finished ({why}; rerun to continue)")
    if summary.not_reached:
        lines.append(f"  {summary.not_reached} not reached ({why}; rerun to continue)")
    return printable_lines(lines)


def report_end(
    end: RunEnd, results: Path | str, gallery: Path | str | None, report: ReportTo | None = None
) -> int:
    """Print how the run ended (as text, or as the JSON ``report`` asks for); its exit status.
    A run-level stop is raised again, for the command's one error line (naming the cause and
    the fix) and its exit status."""
    report = report or ReportTo()
    report.write(
        RunReport(
            exit_status=end.status,
            summary=end.summary,
            stop=None if end.stopped is None else StopReport.of(end.stopped),
            results=str(results),
            gallery=None if gallery is None else str(gallery),
        )
    )
    if not report.stdout:
        print(format_summary(end.summary))
        shown = "not written" if gallery is None else str(gallery)
        if end.interrupted and end.stopped is None:
            print(
                printable(f"interrupted; rerun the same command to resume. Gallery so far: {shown}")
            )
        else:
            print(printable_lines([f"results: {results}", f"gallery: {shown}"]))
        sys.stdout.flush()
    if end.stopped is not None:
        raise end.stopped
    return end.status


def _wrong_kind(path: Path) -> str | None:
    """Why ``path`` cannot be the file the run makes of it, if so."""
    if path.is_dir():
        return "must be a file (it names a folder)"
    # The nearest thing that exists on the way must be a folder, for the run to make the rest.
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot be made: {above} is a file, not a folder"
    return None


def check_places(settings: RunSettings) -> None:
    """Refuse, as bad usage and before anything is sent, an output folder or a journal this
    machine cannot make: found only when the run opens them, they were a run-level stop (exit 3)
    with nothing to rerun."""
    try:
        (settings.destination or open_output(settings.out)).check_usable()
    except ValidationError as exc:
        raise ValidationError("--out", exc.value, exc.allowed) from None
    journal = settings.options.journal_path
    if journal is not None and (why := _wrong_kind(journal)) is not None:
        raise ValidationError("--journal", str(journal), why)


async def run(ns: argparse.Namespace) -> int:
    settings = RunSettings.from_args(ns)
    if not await anyio.Path(settings.jobs).is_file():
        raise ValidationError("JOBS.jsonl", str(settings.jobs), "must name an existing job file")
    await anyio.to_thread.run_sync(check_places, settings)
    out = settings.out
    journal = settings.options.journal_path
    if is_run_output(settings.jobs, out) or (
        journal is not None and journal.resolve() == settings.jobs.resolve()
    ):
        raise ValidationError(
            "JOBS.jsonl",
            str(settings.jobs),
            "is a file the run writes (in the output folder, or the journal): move it elsewhere",
        )
    if settings.dry:
        return await _dry_run(settings)
    if ns.ray:
        from ._sharded import run_on_ray  # Ray is optional: imported only when asked for

        return await run_on_ray(ns, settings)
    # Counted before the run, in a pass that holds one line at a time: a run that stops early
    # says how many jobs it never reached.
    lines_read = JobLinesRead(await anyio.to_thread.run_sync(count_lines, settings.jobs))
    total = lines_read.total
    prompts: dict[str, str] = {}
    async with (
        make_client(ns) as client,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session,
    ):
        fetcher = InputFetcher(plain_session, out / ".novita-inputs")
        # With the report on stdout, stdout holds nothing else.
        stream = sys.stderr if settings.report.stdout else None
        with BatchProgress(total, plain=settings.plain, stream=stream) as progress:
            destination = settings.destination or open_output(out)
            runner = BatchRunner(client, destination, settings.options, on_event=progress.on_event)
            lines = job_lines(settings, fetcher, prompts, progress, counted=lines_read)
            end = (await run_batch(runner, lines, progress)).reaching(lines_read)
            if (shard := settings.options.shard) is not None:
                # One shard run by hand: OUT's results gather every shard's, as they stand.
                await destination.merge_shard_results(shard.count)
            return await end_in_output(end, destination, prompts, progress, settings.report)


async def end_in_output(
    end: RunEnd,
    output: Output,
    prompts: Mapping[str, str],
    progress: BatchProgress,
    report: ReportTo,
) -> int:
    """The gallery written in the working folder and published beside the images (for a
    store, uploaded: its links are relative, so the page works wherever the store serves it);
    how the run ended."""
    title = f"{PurePosixPath(output.url).name} results"
    page = await write_gallery_if_possible(output.local_dir, prompts, progress, title)
    gallery: str | None = None
    if page is not None:
        try:
            gallery = await output.publish_file(page, page.name)
        except StorageError as exc:
            progress.note(f"the gallery could not be uploaded: {exc}")
    return report_end(end, output.location("results.jsonl"), gallery, report)


async def _dry_run(settings: RunSettings) -> int:
    # No key and no client: nothing is sent to the API. Inputs named by URL are fetched to a
    # temporary folder (to check they are images), not into the output folder.
    with tempfile.TemporaryDirectory(prefix="novita-dry-run-") as cache:
        out = settings.out
        stored: dict[str, int] | None = None
        output = settings.destination or open_output(out)
        # A store's journal, read into a scratch folder: nothing is written to the store.
        if (mirror := output.journal_mirror(Path(cache) / "out" / JOURNAL_NAME)) is not None:
            out = mirror.journal_path.parent
            # With the staging copy, as the run would read it (a wiped prefix's jobs restored).
            staged = anyio.Path(output.local_dir / JOURNAL_NAME)
            if await staged.is_file():
                await anyio.Path(out).mkdir(parents=True)
                await anyio.Path(mirror.journal_path).write_bytes(await staged.read_bytes())
            await mirror.pull()
            stored = await output.sizes()  # where its images are
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session:
            fetcher = InputFetcher(plain_session, Path(cache))
            quiet = BatchProgress(0, plain=True, stream=sys.stderr)
            lines = job_lines(settings, fetcher, {}, quiet, note_invalid=False)
            ok = await print_dry_run(
                lines,
                out,
                settings.options,
                as_json=settings.report.stdout,
                stored=stored,
                assets_url=settings.assets_url,
            )
    return EXIT_OK if ok else EXIT_FAILED
