"""The numbers a batch run ends with."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import anyio
import attrs

from ._job import JobOutcome

__all__ = ["BatchSummary", "SummaryCounter"]


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


class SummaryCounter:
    """Mutable tallies behind :class:`BatchSummary`."""

    def __init__(self) -> None:
        self.started: float | None = None  # on anyio's clock, once the run starts
        self.finished: float | None = None
        self.jobs = 0
        self.succeeded = 0
        self.failed = 0
        self.replayed = 0
        self.submitted = 0
        self.resumed = 0
        self.restored = 0
        self.tasks = 0
        self.images = 0
        self.failures: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.interrupted = False
        self.stopped: str | None = None
        self.taken = 0  # jobs the workers read from the input

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
            jobs=self.jobs,
            succeeded=self.succeeded,
            failed=self.failed,
            replayed=self.replayed,
            submitted=self.submitted,
            resumed=self.resumed,
            tasks=self.tasks,
            restored=self.restored,
            images=self.images,
            failures_by_reason=dict(self.failures),
            http_requests=dict(self.requests),
            wall_seconds=wall,
            interrupted=self.interrupted,
            stopped=self.stopped,
            # Whatever ended the run early (a stop, a cancellation), a job read is either
            # counted by its outcome or not finished.
            not_finished=max(self.taken - self.jobs, 0),
        )
