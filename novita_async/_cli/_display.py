"""What a person reads: the progress of a run, its summary, one line per error, exit statuses.

Every printed line passes through :func:`printable` once, whole: a newline in a job id or a
message (which could forge lines), an escape sequence or a bidirectional override shows as Python
writes it (``a\\nb``, ``\\x1b[2J``, ``\\u202e``); letters of any script and emoji stay. Files keep
the text itself. The progress display is drawn from :class:`BatchEvent` objects only: a rich bar
on a terminal, log lines elsewhere; a run's pause or stop shows under the bar while it holds.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from collections.abc import Callable, Iterable
from typing import IO, Self

import aiohttp
import anyio
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .. import (
    ConfigurationError,
    LocalIOError,
    NovitaError,
    RunStoppedError,
    StorageError,
    ValidationError,
)
from .._failures import exit_status, is_network_error
from ..batch import BatchEvent, BatchEventKind, BatchSummary, JournalDamagedError

# --- text a terminal shows as it is ----------------------------------------------------------

# Format characters that join emoji and shape scripts, and do nothing else on a terminal.
_JOINERS = frozenset("\u200c\u200d")


def _shown(char: str) -> str:
    if char.isprintable() or char in _JOINERS or unicodedata.category(char) == "Zs":
        return char
    # repr's own escape for it: \n, \t, \x1b, \u202e (never a quote: those are printable).
    return repr(char)[1:-1]


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as it is (see the module's docstring)."""
    if text.isprintable():  # nearly always: no copy
        return text
    return "".join(_shown(char) for char in text)


def printable_lines(lines: Iterable[str]) -> str:
    """``lines``, each made :func:`printable`, joined by newlines: a block of output whose line
    breaks are only its own."""
    return "\n".join(printable(line) for line in lines)


class PrintableFormatter(logging.Formatter):
    """Log lines through :func:`printable` (a traceback, with ``--debug``, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


# --- exit statuses (ExitStatus; mapped once, in _failures) -------------------------------------

# The reader of our output went away (``... | head -1``): end quietly as a Unix tool killed by
# SIGPIPE does, with 128 + SIGPIPE (not 0: the output was cut short, as ``set -o pipefail`` tells).
EXIT_READER_GONE = 141


def describe_error(exc: BaseException) -> tuple[str, int]:
    """What went wrong, in one line, and the command's exit status for it."""
    status = exit_status(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", status
    if isinstance(exc, OSError) and not is_network_error(exc):
        exc = LocalIOError.from_os_error(exc, "a file operation")
    if isinstance(exc, ValidationError):
        return f"{exc.field}: {exc.value!r} is not allowed: {exc.allowed}", status
    if isinstance(exc, ConfigurationError | JournalDamagedError):
        return str(exc), status  # a damaged journal's message names the repair command
    if isinstance(exc, RunStoppedError):
        return f"run stopped: {exc}", status
    if isinstance(exc, LocalIOError | StorageError):
        # The run's own place (this disk, the bucket) failed: a plain rerun continues.
        return f"{exc.reason}: {exc}", status
    if isinstance(exc, NovitaError | OSError | aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}", status
    return f"unexpected {type(exc).__name__}: {exc}", status


# --- the summary -------------------------------------------------------------------------------

UNKNOWN_ADVICE = (
    "a task may exist and be billed; look before paying again: rerun with "
    "--retry-unknown-submits to submit them anyway"
)
# What a job that ended with this reason needs, and the command that acts on it.
_ADVICE = {
    "SUBMIT_OUTCOME_UNKNOWN": UNKNOWN_ADVICE,
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


# --- the progress display ----------------------------------------------------------------------

# Events about the whole run (their ``job_id`` is empty).
RUN_EVENTS = frozenset({BatchEventKind.PAUSED, BatchEventKind.CONTINUED, BatchEventKind.STOPPED})


class Tally:
    """Jobs by stage, from the events seen so far."""

    def __init__(self) -> None:
        self.submitted = 0
        self.done = 0
        self.failed = 0
        self._in_flight: set[str] = set()

    @property
    def running(self) -> int:
        return len(self._in_flight)

    @property
    def ended(self) -> int:
        return self.done + self.failed

    def count(self, event: BatchEvent) -> bool:
        """Count ``event``; true when it ended a job."""
        if event.kind in (BatchEventKind.SUBMITTED, BatchEventKind.RESUMED):
            if event.job_id not in self._in_flight:
                self._in_flight.add(event.job_id)
                self.submitted += 1
            return False
        if event.kind not in (BatchEventKind.SUCCEEDED, BatchEventKind.FAILED):
            return False
        self._in_flight.discard(event.job_id)
        if event.kind is BatchEventKind.SUCCEEDED:
            self.done += 1
        else:
            self.failed += 1
        return True

    def __str__(self) -> str:
        return (
            f"submitted {self.submitted} running {self.running} "
            f"done {self.done} failed {self.failed}"
        )


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("--/min" if speed is None else f"{speed * 60:,.0f}/min", "cyan")


class _Bar(Progress):
    """The bar, with the run's status (a pause, a stop) on a line under it while one holds."""

    status: Text | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        status = self.status  # read once: the refresh thread draws while the run changes it
        if status is not None:
            yield status


class BatchProgress:
    """:class:`BatchEvent` objects as a progress bar, or as plain lines (one per ended job, retry,
    pause or stop) when ``plain`` or ``stream`` is not a terminal. Each plain line starts with the
    seconds since ``__enter__`` on ``clock`` (anyio's: entered inside the event loop)."""

    def __init__(
        self,
        total: int | None,
        *,
        plain: bool = False,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ):
        self.tally = Tally()
        self.total = total
        self._stream = stream or sys.stdout
        self.plain = plain or not self._stream.isatty()
        self._clock = clock
        self._started = 0.0
        self._progress: _Bar | None = None
        self._task: TaskID | None = None
        self._paused = False
        self._reader_gone = False

    def __enter__(self) -> Self:
        self._started = self._clock()
        if not self.plain:
            self._progress = _Bar(
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tally]}"),
                _RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("jobs", total=self.total, tally=str(self.tally))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: BatchEvent) -> None:
        if event.kind in RUN_EVENTS:
            # Its message, named by its kind unless the message does so.
            text = event.message or event.reason or ""
            if event.kind.value not in text:
                text = f"{event.kind.value}: {text}".rstrip(": ")
            text = printable(text)
            if self._progress is not None:
                # The pause or stop stays under the bar while it holds; the log keeps each one.
                self._show_status(None if event.kind is BatchEventKind.CONTINUED else event, text)
            self.note(text)
            return
        ended = self.tally.count(event)
        if self._progress is not None and self._task is not None:
            if self._paused and event.kind is BatchEventKind.SUBMITTED:
                # Submissions go on, so the pause is over (a 429's ends without an event).
                self._show_status(None)
            self._progress.update(self._task, completed=self.tally.ended, tally=str(self.tally))
        elif ended:
            self._line(self._describe(event))
        elif event.kind is BatchEventKind.RETRIED:
            self._line(f"retrying {event.job_id}: {event.reason or 'error'}")

    def _show_status(self, event: BatchEvent | None, text: str = "") -> None:
        assert self._progress is not None
        self._paused = event is not None and event.kind is BatchEventKind.PAUSED
        style = "yellow" if self._paused else "bold red"
        self._progress.status = None if event is None else Text(text, style)

    def note(self, text: str) -> None:
        """A line above the bar (or in the log)."""
        if self._progress is not None:
            self._progress.console.print(printable(text), markup=False, highlight=False)
        else:
            self._line(text)

    def _describe(self, event: BatchEvent) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        head = f"[{self.tally.ended}{of}] {event.kind.value:<9} {event.job_id}"
        if event.kind is BatchEventKind.SUCCEEDED:
            files = len(event.files)
            earlier = ", from an earlier run" if event.replayed else ""
            return f"{head} ({files} image{'s' if files != 1 else ''}{earlier})"
        return f"{head}: {event.reason or 'error'}: {event.message or ''}".rstrip(": ")

    def _line(self, text: str) -> None:
        if self._reader_gone:
            return
        elapsed = self._clock() - self._started
        try:
            # One line each: an id or a message cannot break it, or forge another.
            print(f"{elapsed:7.1f}s {printable(text)}", file=self._stream, flush=True)
        except BrokenPipeError:
            # Nobody reads these lines any more (``run ... | head -1``): the run goes on, its
            # work is OUT, not them; the command's end meets the closed pipe and exits 141.
            self._reader_gone = True
