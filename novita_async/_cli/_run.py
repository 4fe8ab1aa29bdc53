"""``novita-async run``: a job file through a batch runner (here, or in Ray shards), with
progress, summary, gallery and an optional JSON report; ``--dry-run`` sends nothing.

Signals: the first SIGINT or SIGTERM stops the run (nothing new is submitted; submissions awaiting
their answer get ``stop_grace`` seconds). Later ones never kill the process, which would abandon
those submissions silently and make a rerun pay for them again: the second says how many still
await their answer, the third abandons them (each recorded ``SUBMIT_OUTCOME_UNKNOWN``) and the
command exits with 130. Rerunning the same command resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .. import (
    ConfigurationError,
    ExitStatus,
    InstantIDRequest,
    LocalIOError,
    NovitaError,
    RunStoppedError,
    StorageError,
    ValidationError,
)
from .._config import ENV_API_KEY, scrub
from .._converter import converter
from .._failures import run_exit_status
from .._files import looks_like_url, write_atomically
from ..batch import (
    JOURNAL_NAME,
    RESULTS_NAME,
    BatchRunner,
    BatchSummary,
    DryRun,
    InvalidJob,
    Job,
    Output,
    count_jobs,
    dry_run,
    is_run_output,
    open_output,
    read_job_lines,
    read_jobs,
)
from ._display import (
    BatchProgress,
    describe_error,
    format_summary,
    plural,
    printable,
    printable_lines,
)
from ._gallery import CardInputs, write_gallery
from ._settings import ReportTo, RunSettings

INSTANT_ID = InstantIDRequest.task


async def run(settings: RunSettings) -> int:
    # A URL the package cannot write is refused here, before anything is sent.
    destination = open_output(settings.out, staging_dir=settings.options.staging_dir)
    if not await anyio.Path(settings.jobs).is_file():
        raise ValidationError("JOBS.jsonl", str(settings.jobs), "must name an existing job file")
    await anyio.to_thread.run_sync(_check_places, settings, destination)
    if settings.task_defaults.refused:  # a flag's value some task refuses: has the file one?
        tasks = await _tasks_in(settings.jobs)
        settings.task_defaults.check(tasks, str(settings.jobs))
    if settings.dry_run:
        return await _dry_run(settings, destination)
    if (ray := settings.ray) is None:
        client = settings.connection.client()  # no key: refused now, before anything is read
    else:
        try:
            from ..ray import run_sharded  # Ray is optional: imported only when asked for
        except ImportError as exc:
            raise ConfigurationError(
                f"--ray needs Ray: pip install 'novita-async[ray]' ({exc})"
            ) from None
    # Counted first, one line at a time: a run that stops early says how many it never reached.
    total = await anyio.to_thread.run_sync(count_jobs, settings.jobs)
    read = [0]
    prompts: dict[str, str] = {}
    # With the report on stdout, stdout holds nothing else.
    stream = sys.stderr if settings.report.stdout else None
    with BatchProgress(total, plain=settings.plain, stream=stream) as progress:
        jobs = job_lines(
            settings, destination.local_dir / ".novita-inputs", prompts, progress.note, read
        )
        if ray is None:
            async with client:
                runner = BatchRunner(
                    client, destination, settings.options, on_event=progress.on_event
                )
                end = await until_end(lambda: runner.run_all(jobs), progress, runner)
        else:
            shard_jobs = [job async for job in jobs]
            config = settings.connection.config()
            # Ray prints its processes' lines (a raylet's warning, a worker's death) on
            # sys.stdout until ray.shutdown: they belong on stderr, stdout keeps the run's own.
            with contextlib.redirect_stdout(sys.stderr):
                end = await until_end(
                    lambda: run_sharded(
                        shard_jobs,
                        destination,
                        settings.options,
                        shards=ray.shards,
                        connection=config,
                        address=ray.address,
                        on_event=progress.on_event,
                    ),
                    progress,
                )
            # Every job went to a shard; those no shard read were not reached.
            read[0] = end.summary.jobs + end.summary.not_finished
        reached = attrs.evolve(end.summary, not_reached=max(total - read[0], 0))
        end = attrs.evolve(end, summary=reached)
        if (shard := settings.options.shard) is not None:
            # One shard run by hand: OUT's results gather every shard's, as they stand.
            await destination.merge_shard_results(shard.count)
        try:
            inputs = await gallery_inputs(settings.jobs, destination)
        except OSError as exc:  # the job file gone meanwhile: cards without their inputs
            progress.note(f"the gallery shows no input images: {exc}")
            inputs = {}
        results, gallery = await _publish_gallery(destination, prompts, progress, inputs)
    return report_end(end, results, gallery, settings.report)


@attrs.frozen
class RunEnd:
    """How a batch run ended: its summary, and whether a signal or a run-level cause stopped it."""

    summary: BatchSummary
    interrupted: bool = False
    stopped: RunStoppedError | None = None

    @property
    def status(self) -> int:
        """The command's exit status."""
        summary = self.summary
        return run_exit_status(
            failed=summary.failed,
            not_finished=summary.not_finished,
            stopped=self.stopped,
            interrupted=self.interrupted,
        )


async def job_lines(
    settings: RunSettings,
    cache_dir: Path,
    prompts: dict[str, str],
    note: Callable[[str], object] | None,
    read: list[int] | None = None,
) -> AsyncIterator[Job | InvalidJob]:
    """The job file's jobs, inputs named by URL fetched into ``cache_dir`` (``note``: told of
    each invalid line; ``read[0]``: counts the lines the run took)."""
    jobs = read_jobs(
        settings.jobs, task_defaults=settings.task_defaults.fields, cache_dir=cache_dir
    )
    async for job in jobs:
        if read is not None:
            read[0] += 1
        if isinstance(job, InvalidJob):
            # A line that cannot become a job still gets its failed line in results.jsonl, with
            # the line number and field in the message: one result line per job-file line.
            prompts.setdefault(job.id, "")
            if note is not None:
                note(f"invalid job: {job.error}")
        else:
            prompts[job.id] = getattr(job.request, "prompt", "")
        yield job


async def _job_objects(path: Path) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Each job-file line that is a JSON object: its task, its id as a run names it, and the
    object, the request unread (the run reads it; these are for what comes around it)."""
    async for job_id, line in read_job_lines(path):
        if line and isinstance(task := line.get("task", INSTANT_ID), str):
            yield task, job_id, line


async def _tasks_in(path: Path) -> Counter[str]:
    """The job file's lines by task."""
    return Counter([task async for task, _, _ in _job_objects(path)])


async def gallery_inputs(jobs: Path, destination: Output) -> dict[str, CardInputs]:
    """The task and input images (``image``, ``mask_image``) of each v3 job of the job file, for
    its card: a file linked relative to OUT (of a local run only: a store's page is elsewhere),
    a URL as a link."""
    local = not looks_like_url(destination.url)
    # Both absolute, so relpath below is only arithmetic on their text (no getcwd).
    out = Path(await anyio.Path(destination.local_dir).absolute())
    base = Path(await anyio.Path(jobs).absolute()).parent
    found: dict[str, CardInputs] = {}
    async for task, job_id, line in _job_objects(jobs):
        if task == INSTANT_ID:
            continue
        links: list[tuple[str, str, str | None]] = []
        for name in ("image", "mask_image"):
            if not isinstance(source := line.get(name), str) or not source:
                continue
            if looks_like_url(source):
                links.append((name, source, source))
            elif local:  # a relative path is the job file's
                shown = os.path.relpath(base / source, out)  # noqa: ASYNC240 (see above)
                links.append((name, source, shown))
            else:
                links.append((name, source, None))
        found[job_id] = CardInputs(task, tuple(links))
    return found


def _wrong_kind(path: Path) -> str | None:
    """Why ``path`` cannot be the file the run makes of it, if so."""
    if path.is_dir():
        return "must be a file (it names a folder)"
    # The nearest thing that exists on the way must be a folder, for the run to make the rest.
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot be made: {above} is a file, not a folder"
    return None


def _check_places(settings: RunSettings, destination: Output) -> None:
    """Refuse, as bad usage before anything is sent, an output folder or a journal this machine
    cannot make (found when the run opens them: a run-level stop with nothing to rerun), and a
    job file the run would write over."""
    try:
        destination.check_usable()
    except ValidationError as exc:
        raise ValidationError("--out", exc.value, exc.allowed) from None
    journal = settings.options.journal_path
    if journal is not None and (why := _wrong_kind(journal)) is not None:
        raise ValidationError("--journal", str(journal), why)
    if is_run_output(settings.jobs, destination.local_dir) or (
        journal is not None and journal.resolve() == settings.jobs.resolve()
    ):
        raise ValidationError(
            "JOBS.jsonl",
            str(settings.jobs),
            "is a file the run writes (in the output folder, or the journal): move it elsewhere",
        )


# --- the end: gallery and report ---------------------------------------------------------------


async def write_gallery_if_possible(
    out: Path,
    prompts: Mapping[str, str],
    progress: BatchProgress,
    title: str | None = None,
    inputs: Mapping[str, CardInputs] | None = None,
) -> Path | None:
    """``index.html``, or a note and None if this machine refuses it: a full disk must not hide
    the run's own account of what happened."""
    try:
        return await anyio.to_thread.run_sync(
            lambda: write_gallery(out, prompts, title=title, inputs=inputs)
        )
    except (OSError, LocalIOError) as exc:
        progress.note(f"the gallery could not be written: {exc}")
        return None


async def _publish_gallery(
    destination: Output,
    prompts: Mapping[str, str],
    progress: BatchProgress,
    inputs: Mapping[str, CardInputs],
) -> tuple[str, str | None]:
    """Where the results and the gallery are (for a store, written in staging and uploaded
    beside the images: its links are relative)."""
    title = f"{destination.url.rpartition('/')[2]} results"
    page = await write_gallery_if_possible(destination.local_dir, prompts, progress, title, inputs)
    gallery: str | None = None
    if page is not None:
        try:
            gallery = await destination.publish_file(page, page.name)
        except StorageError as exc:
            progress.note(f"the gallery could not be uploaded: {exc}")
    return destination.location(RESULTS_NAME), gallery


@attrs.frozen
class StopReport:
    """The run-level cause that stopped a run (``DISK_FULL``...), and the line naming its fix."""

    reason: str
    message: str


@attrs.frozen(kw_only=True)
class RunReport:
    """How ``novita-async run`` ended (``--summary-json``, written atomically; ``--json``)."""

    exit_status: int
    summary: BatchSummary | None = None  # None if the command ended before its run did:
    stop: StopReport | None = None
    error: str | None = None  # then this says why (bad usage, a damaged journal...)
    results: str | None = None
    gallery: str | None = None


def _write_report(to: ReportTo, report: RunReport) -> None:
    """Write ``report`` where it is wanted; the file first, so that a scheduler reading stdout
    to its end finds the file in place."""
    if to.path is None and not to.stdout:
        return
    text = scrub(json.dumps(converter.unstructure(report), indent=2), *to.secrets) + "\n"
    if to.path is not None:
        write_atomically(to.path, [text.encode()])
    if to.stdout:
        sys.stdout.write(text)
        sys.stdout.flush()


def report_error(to: ReportTo, exit_status: int, message: str) -> None:
    """Report a command that ended before its run did; a report that cannot be written is said
    on stderr, the command's error stays the one to show."""
    try:
        _write_report(to, RunReport(exit_status=exit_status, error=message))
    except (OSError, LocalIOError) as exc:
        with contextlib.suppress(OSError):
            message = f"novita-async: the run report could not be written: {exc}"
            print(printable(message), file=sys.stderr)


def report_end(
    end: RunEnd, results: Path | str, gallery: Path | str | None, report: ReportTo | None = None
) -> int:
    """Print how the run ended (as text, or as the JSON ``report`` asks for); its exit status.
    A run-level stop is raised again, for the command's one error line and exit status."""
    report = report or ReportTo()
    stop = end.stopped
    _write_report(
        report,
        RunReport(
            exit_status=end.status,
            summary=end.summary,
            stop=None if stop is None else StopReport(stop.reason, str(stop)),
            results=str(results),
            gallery=None if gallery is None else str(gallery),
        ),
    )
    if not report.stdout:
        print(format_summary(end.summary))
        shown = "not written" if gallery is None else str(gallery)
        if end.interrupted and stop is None:
            print(
                printable(f"interrupted; rerun the same command to resume. Gallery so far: {shown}")
            )
        else:
            print(printable_lines([f"results: {results}", f"gallery: {shown}"]))
        sys.stdout.flush()
    if stop is not None:
        raise stop
    return end.status


# --- the dry run -------------------------------------------------------------------------------


async def _dry_run(settings: RunSettings, destination: Output) -> int:
    """What a run would do and pay for, each line decided as the run would, with no key, nothing
    sent and nothing written in the output (URL inputs are fetched to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="novita-dry-run-") as cache:
        out = destination.local_dir
        stored: dict[str, int] | None = None
        scratch = Path(cache) / "out" / JOURNAL_NAME
        if (mirror := destination.journal_mirror(scratch)) is not None:
            # The store's journal, read into a scratch folder: nothing is written to the store;
            # with the staging copy, as the run would read it (a wiped prefix's jobs restored).
            out = scratch.parent
            staged = anyio.Path(destination.local_dir / JOURNAL_NAME)
            if await staged.is_file():
                await anyio.Path(out).mkdir(parents=True)
                await anyio.Path(scratch).write_bytes(await staged.read_bytes())
            await mirror.pull()
            stored = await destination.sizes()  # where its images are
        lines = job_lines(settings, Path(cache), {}, None)
        assets_url = settings.connection.assets_url
        plan = await dry_run(lines, out, settings.options, stored=stored, assets_url=assets_url)
    balance, failure = await _balance(settings)
    if failure is not None:  # the dry run's answer stands without it
        print(printable(f"warning: the account's balance could not be read: {failure}"),
              file=sys.stderr)  # fmt: skip
    if settings.report.stdout:
        report = converter.unstructure(plan)
        if balance is not None:
            report["balance_usd"] = balance
        elif failure is not None:
            report["balance_error"] = failure
        print(json.dumps(report, indent=2))
    else:
        print(format_dry_run(plan, settings.options.rate, balance))
    return ExitStatus.OK if plan.ok else ExitStatus.FAILED


async def _balance(settings: RunSettings) -> tuple[float | None, str | None]:
    """The account's balance in dollars with a key (``GET /v3/user``, nothing paid), or why it
    could not be read; nothing without a key (a dry run needs none)."""
    if not (settings.connection.api_key or os.environ.get(ENV_API_KEY)):
        return None, None
    try:
        async with settings.connection.client() as client:
            return await client.balance(), None
    except Exception as exc:  # any failure: a warning, the dry run's counts stand
        message, _ = describe_error(exc)
        return None, scrub(message, *settings.secrets)


def format_dry_run(plan: DryRun, rate: float | None, balance: float | None = None) -> str:
    lines = [
        "dry run: nothing was sent",
        f"{plan.jobs} jobs: {plan.done} already done, {plan.failed} failed earlier (left alone; "
        f"--retry-failed runs them again), {plan.to_submit} to submit, {plan.to_follow} "
        f"submitted earlier to follow, {plan.unknown} of unknown outcome, {plan.changed} "
        "changed since their task was made"
        + (
            f", {plan.to_restore} with images missing to fetch again from their tasks (free)"
            if plan.to_restore
            else ""
        ),
        f"{plan.to_submit} tasks and {plan.images} images would be paid for; "
        f"{plan.uploads} distinct files would be uploaded",
    ]
    if plan.tasks_by_type:
        lines.append(
            "by task: "
            + ", ".join(
                f"{task} {plural(count, 'task', 'tasks')} "
                f"({plural(plan.images_by_type.get(task, 0), 'image', 'images')})"
                for task, count in plan.tasks_by_type.items()
            )
        )
    if balance is not None:
        lines.append(f"account balance: ${balance:,.4f} (GET /v3/user; nothing was paid)")
    if plan.seconds is not None:
        lines.append(f"at --rate {rate:g}: about {plan.seconds:.1f}s of submissions")
    if plan.problems:
        lines.append(f"{len(plan.problems)} jobs cannot run as given:")
        lines += [f"  {p.job_id}: {p.reason}: {p.message}" for p in plan.problems]
    return printable_lines(lines)


# --- signals, and the one error worth showing out of a task group's ------------------------------

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


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _rank(error: BaseException) -> int:
    if isinstance(error, asyncio.CancelledError):
        return len(_MOST_TELLING) + 1
    kinds = (n for n, kind in enumerate(_MOST_TELLING) if isinstance(error, kind))
    return next(kinds, len(_MOST_TELLING))


def real_error(error: BaseException) -> BaseException:
    """What went wrong: ``error`` itself, or out of the exception groups task groups wrap errors
    in, the one leaf that tells most (the first of the most telling kind)."""
    return min(_leaves(error), key=_rank)


async def until_end(
    body: Callable[[], Awaitable[BatchSummary]],
    progress: BatchProgress,
    runner: BatchRunner | None = None,
) -> RunEnd:
    """How ``body`` (a run, here or on Ray) ended: by itself, by a signal or by a run-level stop.

    The signals are listened to until ``body`` has returned (see the module's docstring); only a
    local ``runner`` can say what awaits an answer. Another exception ``body`` raises comes out
    as itself (:func:`real_error`), not wrapped in an exception group.
    """
    summary: BatchSummary | None = None
    failure: Exception | None = None
    signals = 0
    stop = anyio.CancelScope()
    say = progress.note

    def handle() -> None:
        nonlocal signals
        signals += 1
        awaiting = 0 if runner is None else runner.awaiting_answers
        if signals == 1:
            stop.cancel()
            waiting = ""
            if awaiting and runner is not None:
                them = plural(awaiting, "submission", "submissions")
                waiting = f"; {them} awaiting an answer get {runner.options.stop_grace:g}s"
            say(
                f"stopping: nothing new is submitted{waiting} (press Ctrl-C again to see what "
                "the run still waits for)"
            )
        elif signals == 2 and awaiting:
            them = plural(awaiting, "submission is", "submissions are")
            say(
                f"{them} still awaiting the answer that records the task; waiting for "
                f"{'it' if awaiting == 1 else 'them'} so that no task is paid for twice "
                "(press Ctrl-C again to abandon them; they will be reported as unknown outcome)"
            )
        elif awaiting and runner is not None:
            runner.abandon_submissions()
            them = plural(awaiting, "submission", "submissions")
            say(
                f"abandoning {them} awaiting an answer: each is recorded SUBMIT_OUTCOME_UNKNOWN "
                "(a task may exist and be billed; the summary says what to do)"
            )
        else:
            say("no submission awaits its answer; the run is writing its journal and results")

    async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            task_status.started()  # from here on, no signal reaches the default handler
            async for _ in received:
                handle()

    async with anyio.create_task_group() as group:
        await group.start(watch)
        with stop:
            try:
                summary = await body()
            except Exception as exc:  # raised below, out of this task group
                failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        error = real_error(failure)
        if not isinstance(error, RunStoppedError):
            raise error
        fallback = runner.summary if runner is not None else BatchSummary()
        return RunEnd(error.summary or fallback, stopped=error)
    if summary is None:  # the first signal cancelled it
        summary = runner.summary if runner is not None else BatchSummary(interrupted=True)
    return RunEnd(summary, interrupted=signals > 0)
