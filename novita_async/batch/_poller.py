"""The one polling loop over every task in flight.

Tasks wait in a heap keyed by their next poll time. A single loop task pops whichever is due,
takes one of ``max_concurrent`` poll slots (a semaphore) for it and hands it its turn: the job task
waiting in :meth:`Poller.wait` then sends the ``GET`` itself, gives the slot back, and either has
its answer or is put back in the heap. When to poll next, which errors are ridden out and when a
task has timed out are decided by :class:`~novita_async._polling.PollTracker`, the same decision
:meth:`NovitaClient.wait_for_task` uses. The poll runs in the job's own task, so cancelling the job
cancels its poll, and no task is spawned per poll. The first poll is timed by
:class:`~._durations.DurationModel` from the tasks that already finished, so that most tasks need a
single poll. Until one of its kind has finished, running ones' ``elapsed + eta`` bound the
others' first polls; before even that, a few tasks of the kind (its scouts) are polled at once, and
the others wait for their answers.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .._client import NovitaClient
from .._models import Task, TaskResult, TaskStatus
from .._polling import PollPolicy, PollTracker
from .._retry import RetryPolicy
from ._durations import PROMISES, DurationModel, server_seconds
from ._failures import is_outage
from ._limits import RunGate

if TYPE_CHECKING:
    from .._webhook_events import WebhookEvent
    from .._webhooks import WebhookReceiver

__all__ = ["Poller"]

ProgressCallback = Callable[[Task], None]

# With webhooks, a task's first poll waits for its predicted end plus this share of it plus
# WEBHOOK_GRACE seconds: time for its event to come; only a task whose event never came is polled.
WEBHOOK_SLACK = 0.25
WEBHOOK_GRACE = 1.0


class _Entry:
    """A task in the heap: its tracker, and its waiter's turn to poll."""

    __slots__ = (
        "abandoned",
        "by_event",
        "cost",
        "granted",
        "on_progress",
        "pushed",
        "scout",
        "tracker",
        "turn",
    )

    def __init__(
        self, tracker: PollTracker, on_progress: ProgressCallback, cost: float | None
    ) -> None:
        self.tracker = tracker
        self.on_progress = on_progress
        self.cost = cost
        self.turn: anyio.Event | None = None  # set by the loop when this task may poll
        self.granted = False  # the loop took a poll slot for this task, not yet given back
        self.abandoned = False
        self.pushed: TaskResult | None = None  # the task's end, by webhook
        self.by_event = False  # its event should end it: polls only check on one that never came
        self.scout = False  # polled at once, nothing being known of its kind: see _scouted


class _Scouts:
    """Tasks of one cost polled at once, nothing being known of it, until they have answered."""

    __slots__ = ("answered", "polling")

    def __init__(self) -> None:
        self.polling = 0
        self.answered = anyio.Event()  # set once every one of them has its first answer


class Poller:
    def __init__(
        self,
        client: NovitaClient,
        policy: PollPolicy,
        gate: RunGate,
        *,
        retry: RetryPolicy | None = None,
        events: WebhookReceiver | None = None,
        max_concurrent: int,
        task_timeout: float | None,
        on_request: Callable[[str], None],
        max_errors: int = 8,
    ) -> None:
        self._client = client
        self._policy = policy
        self._gate = gate
        self._retry = retry
        self._events = events
        self._by_task: dict[str, _Entry] = {}
        if events is not None:
            events.on_event = self._on_event
        self._gets = anyio.Semaphore(max_concurrent, fast_acquire=True)
        self._task_timeout = task_timeout
        self._on_request = on_request
        self._max_errors = max_errors
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._wakeup = anyio.Event()
        self._wake_at = math.inf  # when the loop's current sleep ends on its own
        self._durations = DurationModel()
        self._scouts: dict[float, _Scouts] = {}  # by cost: the tasks polled at once to bound it

    @property
    def in_flight(self) -> int:
        return len(self._heap)

    async def wait(
        self, task_id: str, on_progress: ProgressCallback, cost: float | None = None
    ) -> TaskResult:
        """The task's final result (succeeded or failed).

        ``cost`` (see :func:`~._durations.request_cost`) lets the first poll wait for the task's
        predicted end; without it (a task resumed from an earlier run), or before anything is
        known of that kind, it is immediate.
        """
        tracker = PollTracker(
            task_id,
            self._policy,
            started=anyio.current_time(),
            timeout=self._task_timeout,
            max_errors=self._max_errors,
        )
        entry = _Entry(tracker, on_progress, cost)
        predicted = None if cost is None else self._durations.predict(cost)
        if self._events is not None:
            self._events.expect(task_id)
            self._by_task[task_id] = entry
            # A task of an earlier run (no cost) is only polled: its event went to that run's
            # address.
            entry.by_event = cost is not None
        if entry.by_event:
            # The event should end the task: the first poll only checks on one that never came.
            first = tracker.first_poll(self._after_event(0.0, predicted or 0.0))
        else:
            if cost is not None and predicted is None:
                predicted = await self._scouted(entry, cost)
            first = tracker.first_poll(predicted)
        self._schedule(entry, first)
        try:
            while True:
                assert entry.turn is not None  # made by _schedule, before every turn
                if entry.pushed is None:
                    await entry.turn.wait()
                if entry.pushed is not None:
                    return self._ended_by_event(entry, entry.pushed)
                try:
                    result = await self._poll(entry)
                finally:
                    entry.granted = False
                    self._gets.release()
                if result is not None:
                    return result
        finally:
            entry.abandoned = True  # a cancelled waiter: the loop drops the entry
            self._end_scouting(entry)
            if entry.granted:  # cancelled between being given its turn and taking it
                entry.granted = False
                self._gets.release()
            if self._events is not None:
                self._by_task.pop(task_id, None)
                self._events.forget(task_id)  # a later event for it is counted, and dropped

    async def _scouted(self, entry: _Entry, cost: float) -> float | None:
        """With nothing known of tasks of ``cost``, PROMISES of them (scouts) are polled at once;
        the others wait for their first answers, whose etas bound them all (see _durations).
        Returns None for a scout, else the prediction made then (None: poll at once)."""
        scouts = self._scouts.get(cost)
        polling = 0 if scouts is None else scouts.polling
        if scouts is None or polling + self._durations.promises(cost) < PROMISES:
            scouts = self._scouts.setdefault(cost, _Scouts())
            scouts.polling += 1
            entry.scout = True
            return None
        await scouts.answered.wait()
        return self._durations.predict(cost)

    def _end_scouting(self, entry: _Entry) -> None:
        """A scout has its first answer (or will never have one)."""
        if entry.scout:
            entry.scout = False
            assert entry.cost is not None
            scouts = self._scouts[entry.cost]
            scouts.polling -= 1
            if not scouts.polling:
                del self._scouts[entry.cost]
                scouts.answered.set()

    def _on_event(self, event: WebhookEvent) -> None:
        """A webhook: the task's end, handed to its waiter (duplicates never get this far)."""
        entry = self._by_task.get(event.task_id or "")
        if entry is None or entry.abandoned or event.result is None:
            return
        entry.pushed = event.result
        if entry.turn is not None:
            entry.turn.set()

    def _ended_by_event(self, entry: _Entry, result: TaskResult) -> TaskResult:
        self._learn(entry, result)
        return result

    @staticmethod
    def _after_event(now: float, due: float) -> float:
        """When to check on a task whose event should come at ``due``: later by a share of the
        wait and WEBHOOK_GRACE, time for its event to come."""
        return now + max(due - now, 0.0) * (1 + WEBHOOK_SLACK) + WEBHOOK_GRACE

    def _schedule(self, entry: _Entry, when: float) -> None:
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
            if due > anyio.current_time():
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
            with anyio.move_on_after(due - anyio.current_time()):
                await self._wakeup.wait()

    async def _poll(self, entry: _Entry) -> TaskResult | None:
        """One poll: the final result, an error raised, or None with the task rescheduled."""
        tracker = entry.tracker
        await self._gate.wait(submission=False)  # an outage's pause; a stop that ends following
        self._on_request("result")
        try:
            result = await self._client.get_task_result(tracker.task_id, retry=self._retry)
        except Exception as exc:
            if is_outage(exc):
                self._gate.unreachable(exc)
            self._end_scouting(entry)
            self._schedule(entry, tracker.failed(exc, anyio.current_time()))
            return None
        self._gate.answered()
        next_poll = tracker.answered(result, anyio.current_time())
        if next_poll is None:
            self._learn(entry, result)
            self._end_scouting(entry)
            return result
        now = anyio.current_time()
        if entry.cost is not None and tracker.expected_end is not None:
            self._durations.bound(entry.cost, tracker.expected_end)
            if entry.scout:
                # Its next poll goes at the end it promised, as its kind's first polls will,
                # rather than a margin after.
                promised = tracker.started + self._durations.promised(tracker.expected_end)
                next_poll = min(next_poll, max(promised, now))
        self._end_scouting(entry)
        if entry.by_event:
            next_poll = self._after_event(now, next_poll)
            if tracker.deadline is not None:
                next_poll = min(next_poll, tracker.deadline)
        entry.on_progress(result.task)
        self._schedule(entry, next_poll)
        return None

    def _learn(self, entry: _Entry, result: TaskResult) -> None:
        if entry.cost is None or result.status is not TaskStatus.SUCCEED:
            return
        tracker = entry.tracker
        seconds = server_seconds(result)
        if seconds is None:
            # No timing from the service: the poll that saw it done bounds it from above, and a
            # running task's eta says when it meant to end.
            seconds = anyio.current_time() - tracker.started
            if tracker.expected_end is not None:
                seconds = min(seconds, tracker.expected_end)
        self._durations.observe(entry.cost, seconds)
