"""What a run tells: progress events and the summary's counts.

``on_event`` is called synchronously in the task where the thing happened; it should be quick. An
exception it raises is logged and swallowed: a broken progress bar must not lose a paid task.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping

import anyio
import attrs

from ._jobs import JobOutcome

__all__ = [
    "BatchEvent",
    "BatchEventHook",
    "BatchEventKind",
    "BatchSummary",
    "SummaryCounter",
    "emit",
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

    ``succeeded`` and ``failed`` count every job of the input, those ``replayed`` from an earlier
    run's journal included. ``submitted`` counts the tasks this run created, ``resumed`` an earlier
    run's tasks followed again, ``restored`` earlier jobs whose missing or damaged images were
    fetched again from their tasks (nothing paid), ``tasks`` the tasks this run saw end.
    ``http_requests`` counts the runner's client calls by route (``upload``, ``submit``,
    ``result``, ``image``), not the client's own retries (its ``on_event`` sees those);
    ``requests_per_task`` divides the non-upload calls by ``tasks``. ``interrupted``: the run was
    cancelled or stopped by ``fail_fast`` before every job ended. ``stopped``: the reason of the
    run-level failure that stopped it (``INVALID_API_KEY``, ``DISK_FULL``, ``OUTAGE``...).
    ``not_finished`` counts the jobs read and left unrecorded (a rerun continues them);
    ``not_reached`` the jobs of the input never read (the runner reads lazily): 0 unless the
    caller, who knows the input's size, fills it in (the command does). ``jobs + not_finished +
    not_reached`` is then the size of the input.
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
    jobs_by_task: Mapping[str, int] = attrs.field(factory=dict)
    """The jobs counted in ``jobs`` by their task (``instant-id``, ``txt2img``, ...)."""

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


@attrs.define
class SummaryCounter:
    """Mutable tallies behind :class:`BatchSummary`, most under the summary's own names."""

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
    by_task: Counter[str] = attrs.field(factory=Counter)
    interrupted: bool = False
    stopped: str | None = None
    taken: int = 0  # jobs the workers read from the input

    def count_outcome(self, outcome: JobOutcome) -> None:
        self.jobs += 1
        self.by_task[outcome.task] += 1
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
        same = [name for name in attrs.fields_dict(BatchSummary) if hasattr(self, name)]
        return BatchSummary(
            **{name: getattr(self, name) for name in same},
            failures_by_reason=dict(self.failures),
            http_requests=dict(self.requests),
            jobs_by_task=dict(sorted(self.by_task.items())),
            wall_seconds=wall,
            # Whatever ended the run early (a stop, a cancellation), a job read is either
            # counted by its outcome or not finished.
            not_finished=max(self.taken - self.jobs, 0),
        )
