"""What a run tells: progress events, the summary's counts, and the record of each job's end.

``on_event`` is called synchronously in the task where the thing happened; it should be quick. An
exception it raises is logged and swallowed: a broken progress bar must not lose a paid task.

A job's end is told in one order (:class:`Recorder`): the journal first (the source of truth),
then ``results.jsonl``, then the summary's counts and the event. A record that cannot be written
(the disk is full, the folder became read-only) stops the run: the job ends unrecorded and a rerun
continues it. A record written with the journal's reserve (the disk had no room left) stops the
run too, once that record is safe.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
import attrs

from .._exceptions import LocalIOError
from ._jobs import JobError, JobOutcome, JobStatus
from ._pacing import RunStopped

if TYPE_CHECKING:  # the journal and the results file sit above what a run tells
    from ._journal import Journal, ResultsFile
    from ._pacing import RunGate

__all__ = [
    "BatchEvent",
    "BatchEventHook",
    "BatchEventKind",
    "BatchSummary",
    "Recorder",
    "SummaryCounter",
    "emit",
    "failed_outcome",
]

logger = logging.getLogger("novita_async.batch")


class BatchEventKind(enum.StrEnum):
    QUEUED = "queued"
    """The job was read from the input."""
    UPLOADED = "uploaded"
    """Every input image of the job has an asset id (uploaded now or earlier)."""
    SUBMITTED = "submitted"
    """The task was created; ``task_id`` is set."""
    RESUMED = "resumed"
    """A task submitted by an earlier run is being followed again (no new submission)."""
    RUNNING = "running"
    """A poll saw the task queued or processing; ``progress_percent`` and ``eta`` when known."""
    RETRIED = "retried"
    """A step is being repeated; ``reason`` says why (RATE_LIMIT_EXCEEDED, IMAGE_URL_EXPIRED...)."""
    SUCCEEDED = "succeeded"
    """Every image is on disk; ``files`` lists them. ``replayed`` if it ended in an earlier run."""
    FAILED = "failed"
    """The job ended without images; ``reason`` and ``message`` say why."""
    PAUSED = "paused"
    """The run pauses (an outage, a 429); ``message`` says why and for how long. ``job_id`` is
    empty: this is about the run, not a job."""
    CONTINUED = "continued"
    """The service answers again after an outage; ``message`` says after how long."""
    STOPPED = "stopped"
    """The run stops for a run-level cause (the key, the account, the disk, a long outage):
    nothing more is submitted; ``reason`` and ``message`` say why and what to do."""


@attrs.frozen
class BatchEvent:
    kind: BatchEventKind
    job_id: str
    task_id: str | None = None
    progress_percent: float | None = None
    eta: float | None = None
    reason: str | None = None
    message: str | None = None
    files: tuple[str, ...] = ()
    replayed: bool = False


BatchEventHook = Callable[[BatchEvent], object]


def emit(hook: BatchEventHook | None, event: BatchEvent) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("batch on_event hook raised on a %s event; ignored", event.kind)


@attrs.frozen
class BatchSummary:
    """Counts of one run (``run`` or ``run_all``).

    ``succeeded`` and ``failed`` count every job of the input, including those ``replayed`` from an
    earlier run's journal. ``submitted`` counts tasks created by this run, ``resumed`` tasks of an
    earlier run followed again, ``restored`` jobs of an earlier run whose images were missing or
    damaged and were fetched again from their tasks (nothing paid), ``tasks`` the tasks this run
    saw end. ``http_requests`` counts the client calls the runner made, by route (``upload``,
    ``submit``, ``result``, ``image``); the client's own retries are not included (count those
    with the client's ``on_event``).
    ``requests_per_task`` divides the non-upload calls by ``tasks``. ``interrupted`` is true when
    the run was cancelled or stopped by ``fail_fast`` before every job ended. ``stopped`` is the
    reason of a run-level failure that stopped the run (``INVALID_API_KEY``, ``DISK_FULL``,
    ``OUTAGE``...). ``not_finished`` counts the jobs the run had read and left unrecorded (it
    stopped or was interrupted before they ended): a rerun continues them. ``not_reached`` counts
    the jobs of the input the run never read; the runner reads its input lazily and cannot know
    it, so it is 0 unless the caller, who knows the input's size, fills it in (the command does,
    from its job file). ``jobs + not_finished + not_reached`` is then the size of the input.
    """

    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    replayed: int = 0
    submitted: int = 0
    resumed: int = 0
    tasks: int = 0
    images: int = 0
    failures_by_reason: Mapping[str, int] = attrs.field(factory=dict)
    http_requests: Mapping[str, int] = attrs.field(factory=dict)
    wall_seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None
    not_finished: int = 0
    not_reached: int = 0
    restored: int = 0

    @property
    def images_per_minute(self) -> float:
        return 60.0 * self.images / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def requests_per_task(self) -> float:
        per_task = sum(n for route, n in self.http_requests.items() if route != "upload")
        return per_task / self.tasks if self.tasks else 0.0

    @property
    def polls_per_task(self) -> float:
        return self.http_requests.get("result", 0) / self.tasks if self.tasks else 0.0


# The counts a SummaryCounter keeps under the summary's own names.
_SAME_NAMES = ("jobs", "succeeded", "failed", "replayed", "submitted", "resumed", "tasks",
               "restored", "images", "interrupted", "stopped")  # fmt: skip


@attrs.define
class SummaryCounter:
    """Mutable tallies behind :class:`BatchSummary`."""

    started: float | None = None  # on anyio's clock, once the run starts
    finished: float | None = None
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    replayed: int = 0
    submitted: int = 0
    resumed: int = 0
    restored: int = 0
    tasks: int = 0
    images: int = 0
    failures: Counter[str] = attrs.field(factory=Counter)
    requests: Counter[str] = attrs.field(factory=Counter)
    interrupted: bool = False
    stopped: str | None = None
    taken: int = 0  # jobs the workers read from the input

    def start(self) -> None:
        self.started = anyio.current_time()

    def stop(self) -> None:
        self.finished = anyio.current_time()

    def count_outcome(self, outcome: JobOutcome) -> None:
        self.jobs += 1
        if outcome.replayed:
            self.replayed += 1
        if outcome.ok:
            self.succeeded += 1
        else:
            self.failed += 1
            self.failures[outcome.error.reason if outcome.error else "UNKNOWN"] += 1

    def snapshot(self) -> BatchSummary:
        wall = 0.0
        if self.started is not None:
            end = self.finished if self.finished is not None else anyio.current_time()
            wall = end - self.started
        return BatchSummary(
            **{name: getattr(self, name) for name in _SAME_NAMES},
            failures_by_reason=dict(self.failures),
            http_requests=dict(self.requests),
            wall_seconds=wall,
            # Whatever ended the run early (a stop, a cancellation), a job read is either
            # counted by its outcome or not finished.
            not_finished=max(self.taken - self.jobs, 0),
        )


def failed_outcome(
    job_id: str, error: BaseException, task_id: str | None, files: tuple[str, ...] = ()
) -> JobOutcome:
    return JobOutcome(
        job_id=job_id,
        status=JobStatus.FAILED,
        task_id=task_id,
        files=files,
        error=JobError.from_exception(error),
    )


@attrs.frozen
class Recorder:
    """Tells a job's end, in the order above."""

    journal: Journal
    results: ResultsFile
    counter: SummaryCounter
    gate: RunGate
    emit: Callable[..., None]

    def fail(
        self, job_id: str, error: BaseException, task_id: str | None, fingerprint: str | None
    ) -> JobOutcome:
        return self.end(failed_outcome(job_id, error, task_id), fingerprint, record=True)

    def end(
        self,
        outcome: JobOutcome,
        fingerprint: str | None,
        *,
        record: bool,
        sizes: tuple[int, ...] = (),
        digests: tuple[str, ...] = (),
    ) -> JobOutcome:
        if record:
            try:
                self.journal.record_outcome(outcome, fingerprint, sizes=sizes, digests=digests)
                self.results.append(outcome)
            except LocalIOError as error:
                self.gate.stop(error)
                raise RunStopped from error
            self.check_reserve()
        self.counter.count_outcome(outcome)
        job_id, task_id, replayed = outcome.job_id, outcome.task_id, outcome.replayed
        if (failure := outcome.error) is None:
            files = outcome.files
            self.emit(
                BatchEventKind.SUCCEEDED, job_id, task_id=task_id, files=files, replayed=replayed
            )
        else:
            self.emit(
                BatchEventKind.FAILED,
                job_id,
                task_id=task_id,
                reason=failure.reason,
                message=failure.message,
                replayed=replayed,
            )
        return outcome

    def check_reserve(self) -> None:
        """Stop the run once the journal had to spend its reserve: the disk is full."""
        if self.journal.reserve_used:
            self.gate.stop(
                LocalIOError(
                    f"the output disk is full: the journal used its reserve ({self.journal.path})",
                    errno=28,  # ENOSPC
                    path=str(self.journal.path),
                )
            )
