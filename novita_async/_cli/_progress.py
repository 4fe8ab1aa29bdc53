"""Progress of a batch run, drawn from its events: a rich bar on a terminal, log lines elsewhere.

Events about the run rather than a job (``PAUSED``, ``CONTINUED``, ``STOPPED``) show as a status
line under the bar while they hold, and as a line of their own in the log.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import IO, Self

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

from ..batch import BatchEvent, BatchEventKind
from ._printable import printable

__all__ = ["RUN_EVENTS", "BatchProgress", "Tally", "run_status"]

RUN_EVENTS = frozenset({BatchEventKind.PAUSED, BatchEventKind.CONTINUED, BatchEventKind.STOPPED})
"""Events about the whole run (their ``job_id`` is empty)."""


def run_status(event: BatchEvent) -> str:
    """One line for a run event: its message, named by its kind unless the message does so."""
    text = event.message or event.reason or ""
    line = text if event.kind.value in text else f"{event.kind.value}: {text}".rstrip(": ")
    return printable(line)


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
    """Turns :class:`BatchEvent` objects into a progress bar, or into plain lines.

    Plain lines (one per ended job, plus retries and the run's pauses and stops) are used when
    ``plain`` is true or ``stream`` is not a terminal, so a log file gets readable text instead of
    cursor movements. Each plain line starts with the seconds since ``__enter__`` on ``clock``
    (anyio's, so it must be entered inside the event loop unless another clock is given).
    """

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: BatchEvent) -> None:
        if event.kind in RUN_EVENTS:
            self._run_event(event)
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

    def _run_event(self, event: BatchEvent) -> None:
        text = run_status(event)
        if self._progress is None:
            self._line(text)
            return
        # The pause or stop stays under the bar while it holds; the log above keeps each one.
        self._show_status(None if event.kind is BatchEventKind.CONTINUED else event, text)
        self.note(text)

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
