"""The one polling loop over every task in flight.

Tasks wait in a heap keyed by their next poll time. A single loop task pops whichever is due,
takes one of ``max_concurrent`` poll slots (a semaphore) for it and hands it its turn: the job task
waiting in :meth:`Poller.wait` then sends the ``GET`` itself, gives the slot back, and either has
its answer or is put back in the heap with the delay :class:`~novita_async._polling.PollPolicy`
picks from the answer's ``eta`` and ``progress_percent``. The poll runs in the job's own task, so
cancelling the job cancels its poll, and no task is spawned per poll. The first poll is timed by
:class:`~._durations.DurationModel` from the tasks that already finished, so that most tasks need a
single poll; before it knows a task's kind, the first poll is immediate and the answer's ``eta``
times the second.

Errors a poll can ride out (connection errors, 5xx, 429 that outlasted the client's own retries)
put the task back with a growing delay; after ``max_errors`` of them in a row, or any other error
(404 TASK_NOT_FOUND, an answer that does not parse), the waiter gets the error.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable

import anyio

from .._client import NovitaClient
from .._exceptions import (
    APIConnectionError,
    RateLimitError,
    ServerError,
    TaskTimeoutError,
)
from .._models import Task, TaskResult, TaskStatus
from .._polling import PollPolicy
from ._durations import DurationModel, server_seconds

__all__ = ["TRANSIENT_ERRORS", "Poller"]

# The event loop's clock (asyncio's is time.monotonic), read directly: anyio.current_time() looks
# up the running async library on every call, and this runs several times per request.
_now = time.monotonic

# What a batch rides out for a while (a poll, a download) when the client's own retries did not.
TRANSIENT_ERRORS = (APIConnectionError, ServerError, RateLimitError)

ProgressCallback = Callable[[Task], None]


class _Entry:
    __slots__ = (
        "abandoned",
        "cost",
        "deadline",
        "errors",
        "expected_end",
        "granted",
        "last_task",
        "on_progress",
        "polls",
        "started",
        "task_id",
        "turn",
    )

    def __init__(
        self,
        task_id: str,
        on_progress: ProgressCallback,
        started: float,
        deadline: float | None,
        cost: float | None,
    ) -> None:
        self.task_id = task_id
        self.cost = cost
        self.expected_end: float | None = None  # seconds after start, from a running task's eta
        self.on_progress = on_progress
        self.started = started
        self.deadline = deadline
        self.turn: anyio.Event | None = None  # set by the loop when this task may poll
        self.granted = False  # the loop took a poll slot for this task, not yet given back
        self.polls = 0
        self.errors = 0
        self.abandoned = False
        self.last_task: Task | None = None


class Poller:
    def __init__(
        self,
        client: NovitaClient,
        policy: PollPolicy,
        *,
        max_concurrent: int,
        task_timeout: float | None,
        on_request: Callable[[str], None],
        max_errors: int = 8,
    ) -> None:
        self._client = client
        self._policy = policy
        self._gets = anyio.Semaphore(max_concurrent, fast_acquire=True)
        self._task_timeout = task_timeout
        self._on_request = on_request
        self._max_errors = max_errors
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._wakeup = anyio.Event()
        self._wake_at = math.inf  # when the loop's current sleep ends on its own
        self._durations = DurationModel()

    @property
    def in_flight(self) -> int:
        return len(self._heap)

    async def wait(
        self, task_id: str, on_progress: ProgressCallback, cost: float | None = None
    ) -> TaskResult:
        """The task's final result (succeeded or failed).

        ``cost`` (see :func:`~._durations.request_cost`) lets the first poll wait for the task's
        predicted end; without it, or before any task of that kind finished, it is immediate.
        """
        now = _now()
        deadline = None if self._task_timeout is None else now + self._task_timeout
        entry = _Entry(task_id, on_progress, now, deadline, cost)
        predicted = None if cost is None else self._durations.predict(cost)
        self._schedule(entry, now + (predicted or 0.0))
        try:
            while True:
                assert entry.turn is not None  # made by _schedule, before every turn
                await entry.turn.wait()
                try:
                    result = await self._poll(entry)
                finally:
                    entry.granted = False
                    self._gets.release()
                if result is not None:
                    return result
        finally:
            entry.abandoned = True  # a cancelled waiter: the loop drops the entry
            if entry.granted:  # cancelled between being given its turn and taking it
                entry.granted = False
                self._gets.release()

    def _schedule(self, entry: _Entry, when: float) -> None:
        if entry.deadline is not None:
            when = min(when, entry.deadline)
        entry.turn = anyio.Event()
        heapq.heappush(self._heap, (when, next(self._order), entry))
        if when < self._wake_at:  # due before the loop would look again: wake it now
            self._wakeup.set()

    async def run(self) -> None:
        """Hand out turns to poll, forever; cancel the enclosing scope to stop."""
        while True:
            if not self._heap:
                await self._sleep_until(None)
                continue
            due = self._heap[0][0]
            if due > _now():
                await self._sleep_until(due)
                continue
            _, _, entry = heapq.heappop(self._heap)
            if entry.abandoned:
                continue
            await self._gets.acquire()
            if entry.abandoned:  # its waiter left while the loop waited for a slot
                self._gets.release()
                continue
            entry.granted = True
            assert entry.turn is not None
            entry.turn.set()

    async def _sleep_until(self, due: float | None) -> None:
        # Woken early when a task is scheduled, which may be due sooner than ``due``. An event
        # not set yet is kept: any task scheduled before this sleep is in the heap already.
        if self._wakeup.is_set():
            self._wakeup = anyio.Event()
        self._wake_at = math.inf if due is None else due
        if due is None:
            await self._wakeup.wait()
        else:
            with anyio.move_on_after(due - _now()):
                await self._wakeup.wait()

    async def _poll(self, entry: _Entry) -> TaskResult | None:
        """One poll: the final result, an error raised, or None with the task rescheduled."""
        entry.polls += 1
        self._on_request("result")
        try:
            result = await self._client.get_task_result(entry.task_id)
        except TRANSIENT_ERRORS as exc:
            entry.errors += 1
            if entry.errors >= self._max_errors:
                raise
            self._check_deadline(entry, exc)
            delay = self._policy.next_delay(None, polls=entry.errors, elapsed=self._elapsed(entry))
            self._schedule(entry, _now() + delay)
            return None
        entry.errors = 0
        entry.last_task = result.task
        if result.status.is_final:
            self._learn(entry, result)
            return result
        if result.task.eta is not None and result.task.eta > 0:
            entry.expected_end = self._elapsed(entry) + result.task.eta
        entry.on_progress(result.task)
        self._check_deadline(entry, None)
        delay = self._policy.next_delay(
            result.task, polls=entry.polls, elapsed=self._elapsed(entry)
        )
        self._schedule(entry, _now() + delay)
        return None

    def _learn(self, entry: _Entry, result: TaskResult) -> None:
        if entry.cost is None or result.status is not TaskStatus.SUCCEED:
            return
        seconds = server_seconds(result)
        if seconds is None:
            # No timing from the service: the poll that saw it done bounds it from above, and a
            # running task's eta says when it meant to end.
            seconds = self._elapsed(entry)
            if entry.expected_end is not None:
                seconds = min(seconds, entry.expected_end)
        self._durations.observe(entry.cost, seconds)

    def _elapsed(self, entry: _Entry) -> float:
        return _now() - entry.started

    def _check_deadline(self, entry: _Entry, cause: BaseException | None) -> None:
        # The last poll is scheduled at the deadline itself, so a task is asked once more first.
        if entry.deadline is None or _now() < entry.deadline:
            return
        last = entry.last_task.status.value if entry.last_task is not None else ""
        raise TaskTimeoutError(entry.task_id, self._elapsed(entry), last) from cause
