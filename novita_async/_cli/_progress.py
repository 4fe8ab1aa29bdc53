"""Progress of a batch run, drawn from its events: a rich bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Self

from rich.console import Console
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

__all__ = ["BatchProgress", "Tally"]


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


class BatchProgress:
    """Turns :class:`BatchEvent` objects into a progress bar, or into plain lines.

    Plain lines (one per ended job, plus retries) are used when ``plain`` is true or ``stream`` is
    not a terminal, so a log file gets readable text instead of cursor movements.
    """

    def __init__(self, total: int | None, *, plain: bool = False, stream: IO[str] | None = None):
        self.tally = Tally()
        self.total = total
        self._stream = stream or sys.stdout
        self.plain = plain or not self._stream.isatty()
        self._started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if not self.plain:
            self._progress = Progress(
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
        ended = self.tally.count(event)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.tally.ended, tally=str(self.tally))
        elif ended:
            self._line(self._describe(event))
        elif event.kind is BatchEventKind.RETRIED:
            self._line(f"retrying {event.job_id}: {event.reason or 'error'}")

    def note(self, text: str) -> None:
        """A line above the bar (or in the log)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
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
        elapsed = time.monotonic() - self._started
        print(f"{elapsed:7.1f}s {text}", file=self._stream, flush=True)
