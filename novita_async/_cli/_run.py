"""``novita-async run``: a job file through the batch runner, with progress, summary and gallery.

The arguments are read once into a :class:`RunSettings` (the batch flags into its
:class:`BatchOptions`); everything below takes those typed values.

Exit statuses (the ``EXIT_*`` constants): 0 every job succeeded; 1 some jobs failed (for their own
reason, or retryable ones the summary explains); 2 bad usage or invalid input, before anything was
sent; 3 the run stopped for a run-level cause (:class:`RunStoppedError`: the key, the account, the
endpoint, this machine, a long outage), named in one line with its fix; 4 the run spent its
``--max-tasks`` budget; 130 interrupted. ``--dry-run`` exits 0 when every line can run, 1 when
some cannot.

Signals: the first SIGINT or SIGTERM stops the run (nothing new is submitted; submissions awaiting
their answer get ``stop_grace`` seconds). Later ones never kill the process, which would abandon
those submissions silently and make a rerun pay for them again: the second says how many are still
awaiting their answer and keeps waiting, the third abandons them (each recorded
``SUBMIT_OUTCOME_UNKNOWN``) and the command exits with 130. Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .. import (
    ConfigurationError,
    LocalIOError,
    NovitaError,
    RunStoppedError,
    ValidationError,
)
from ..batch import (
    BatchOptions,
    BatchRunner,
    BatchSummary,
    InvalidJob,
    Job,
    JobInputError,
    is_run_output,
)
from ._commands import make_client
from ._dry_run import print_dry_run
from ._gallery import write_gallery
from ._jobfile import InputFetcher, JobLine, count_lines, read_job_file
from ._parser import options_from_args, request_fields
from ._progress import BatchProgress
from ._run_report import ReportTo, RunReport, StopReport

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
    "format_summary",
    "real_error",
    "report_end",
    "run",
    "run_batch",
    "until_signalled",
    "write_gallery_if_possible",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = INTERRUPTED = 130
_T = TypeVar("_T")


# The error worth showing first when a task group gathered several: the run's own verdict, then
# this machine's, then the user's input, then the rest; a cancellation one failure caused in
# another task says nothing.
_MOST_TELLING: tuple[type[BaseException], ...] = (
    SystemExit,
    KeyboardInterrupt,
    RunStoppedError,
    LocalIOError,
    ValidationError,
    ConfigurationError,
    NovitaError,
    Exception,
)


def _leaves(error: BaseException) -> Iterable[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _rank(error: BaseException) -> int:
    if isinstance(error, asyncio.CancelledError):
        return len(_MOST_TELLING) + 1
    kinds = (n for n, kind in enumerate(_MOST_TELLING) if isinstance(error, kind))
    return next(kinds, len(_MOST_TELLING))


def real_error(error: BaseException) -> BaseException:
    """What went wrong: ``error`` itself, or out of the exception groups task groups wrap errors
    in, the one leaf that tells most (the first of the most telling kind)."""
    leaves = list(_leaves(error))
    return min(leaves, key=_rank) if leaves else error


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


class _Signals:
    """What each SIGINT/SIGTERM does to a run: stop it, say what it waits for, abandon that."""

    def __init__(self, runner: BatchRunner | None, say: Callable[[str], object]) -> None:
        self.runner = runner
        self.say = say
        self.count = 0

    def _awaiting(self) -> int:
        return 0 if self.runner is None else self.runner.awaiting_answers

    def handle(self, stop: anyio.CancelScope) -> None:
        self.count += 1
        awaiting = self._awaiting()
        if self.count == 1:
            stop.cancel()
            waiting = ""
            if awaiting and self.runner is not None:
                them = _plural(awaiting, "submission", "submissions")
                waiting = f"; {them} awaiting an answer get {self.runner.options.stop_grace:g}s"
            self.say(
                f"stopping: nothing new is submitted{waiting} (press Ctrl-C again to see what "
                "the run still waits for)"
            )
        elif self.count == 2 and awaiting:
            them = _plural(awaiting, "submission is", "submissions are")
            self.say(
                f"{them} still awaiting the answer that records the task; waiting for "
                f"{'it' if awaiting == 1 else 'them'} so that no task is paid for twice "
                "(press Ctrl-C again to abandon them; they will be reported as unknown outcome)"
            )
        elif awaiting and self.runner is not None:
            self.runner.abandon_submissions()
            them = _plural(awaiting, "submission", "submissions")
            self.say(
                f"abandoning {them} awaiting an answer: each is recorded SUBMIT_OUTCOME_UNKNOWN "
                "(a task may exist and be billed; the summary says what to do)"
            )
        else:
            self.say("no submission awaits its answer; the run is writing its journal and results")


async def until_signalled(
    body: Callable[[], Awaitable[_T]],
    runner: BatchRunner | None = None,
    *,
    say: Callable[[str], object] = print,
) -> tuple[_T | None, bool]:
    """Run ``body`` until it returns or SIGINT/SIGTERM stops it; (its result, interrupted).

    The first signal cancels ``body``; the signals are listened to until ``body`` has returned,
    so later ones never kill the process: the second tells (``say``) how many of ``runner``'s
    submissions are still awaiting their answer, the third abandons them (see the module's
    docstring). An exception ``body`` raises comes out as itself (:func:`real_error`), not
    wrapped in an exception group.
    """
    outcome: list[_T] = []
    failure: list[Exception] = []
    signals = _Signals(runner, say)
    stop = anyio.CancelScope()

    async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            task_status.started()  # from here on, no signal reaches the default handler
            async for _ in received:
                signals.handle(stop)

    async with anyio.create_task_group() as group:
        await group.start(watch)
        with stop:
            try:
                outcome.append(await body())
            except Exception as exc:  # raised below, out of this task group
                failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise real_error(failure[0])
    return (outcome[0] if outcome else None), signals.count > 0


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
    dry: bool = False
    """Decide what the run would do, and send nothing (``--dry-run``)."""
    report: ReportTo = attrs.field(factory=ReportTo)
    """Where the run's JSON report goes (``--summary-json``, ``--json``)."""

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> RunSettings:
        return cls(
            jobs=Path(ns.jobs),
            out=Path(ns.out),
            request_defaults=request_fields(ns),
            options=options_from_args(ns),
            plain=ns.no_progress,
            dry=bool(getattr(ns, "dry_run", False)),
            report=ReportTo.from_args(ns),
        )


@attrs.frozen
class RunEnd:
    """How a batch run ended: its summary, and whether a signal or a run-level cause stopped it."""

    summary: BatchSummary
    interrupted: bool = False
    stopped: RunStoppedError | None = None

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


async def job_lines(
    settings: RunSettings,
    fetcher: InputFetcher,
    prompts: dict[str, str],
    progress: BatchProgress,
    *,
    note_invalid: bool = True,
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
}
_OWN_FAULT = "each job's error is in results.jsonl; rerun with --retry-failed to run them again"


def format_summary(summary: BatchSummary) -> str:
    """The run's numbers on the first line, then a line for each kind of job left undone: what
    it means and the command that acts on it."""
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(summary.failures_by_reason.items()))
    failed = f"{summary.failed} failed" + (f" ({reasons})" if reasons else "")
    earlier = f", {summary.replayed} from an earlier run" if summary.replayed else ""
    lines = [
        f"{summary.jobs} jobs: {summary.succeeded} succeeded, {failed}{earlier}; "
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
            f"  {_plural(sum(own.values()), 'job', 'jobs')} failed for their own reason "
            f"({which}; {_OWN_FAULT})"
        )
    if summary.not_finished:
        why = "the run stopped" if summary.stopped else "the run ended before them"
        lines.append(f"  {summary.not_finished} not finished ({why}; rerun to continue)")
    return "\n".join(lines)


def report_end(
    end: RunEnd, results: Path, gallery: Path | None, report: ReportTo | None = None
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
            print(f"interrupted; rerun the same command to resume. Gallery so far: {shown}")
        else:
            print(f"results: {results}\ngallery: {shown}")
        sys.stdout.flush()
    if end.stopped is not None:
        raise end.stopped
    return end.status


async def run(ns: argparse.Namespace) -> int:
    settings = RunSettings.from_args(ns)
    if not await anyio.Path(settings.jobs).is_file():
        raise ValidationError("JOBS.jsonl", str(settings.jobs), "must name an existing job file")
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
    total = await anyio.to_thread.run_sync(count_lines, settings.jobs)
    prompts: dict[str, str] = {}
    async with (
        make_client(ns) as client,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session,
    ):
        fetcher = InputFetcher(plain_session, out / ".novita-inputs")
        # With the report on stdout, stdout holds nothing else.
        stream = sys.stderr if settings.report.stdout else None
        with BatchProgress(total, plain=settings.plain, stream=stream) as progress:
            runner = BatchRunner(client, out, settings.options, on_event=progress.on_event)
            lines = job_lines(settings, fetcher, prompts, progress)
            end = await run_batch(runner, lines, progress)
            gallery = await write_gallery_if_possible(out, prompts, progress)
    return report_end(end, out / "results.jsonl", gallery, settings.report)


async def _dry_run(settings: RunSettings) -> int:
    # No key and no client: nothing is sent to the API. Inputs named by URL are fetched to a
    # temporary folder (to check they are images), not into the output folder.
    with tempfile.TemporaryDirectory(prefix="novita-dry-run-") as cache:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as plain_session:
            fetcher = InputFetcher(plain_session, Path(cache))
            quiet = BatchProgress(0, plain=True, stream=sys.stderr)
            lines = job_lines(settings, fetcher, {}, quiet, note_invalid=False)
            ok = await print_dry_run(
                lines, settings.out, settings.options, as_json=settings.report.stdout
            )
    return EXIT_OK if ok else EXIT_FAILED
