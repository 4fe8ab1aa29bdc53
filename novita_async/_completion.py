"""When a task ends, learned by polling it or by its webhook event: the one decision of the package.

An honest ``eta`` lets a waiter poll about twice per task: right after submitting, and at
``eta + margin``; without one, the rest is extrapolated from the progress so far, and without
either the delay grows geometrically. :class:`PollTracker` makes every decision about one task's
polls; :func:`wait_until_done` (one task) and :class:`Poller` (the runner's heap of many) both use
it, and both take a task's webhook event by subscribing to it: the first to learn the end wins.
The runner also times first polls by :class:`DurationModel`, so that most tasks need one poll.
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import anyio
import attrs
from attrs.validators import gt

from ._exceptions import ConfigurationError, TaskFailedError, TaskTimeoutError
from ._failures import Pause, RetryPolicy, Step, classify, poll_backoff, rides_out_poll_failure
from ._models import NUMBER, Task, TaskRequest, TaskResult, TaskStatus, setting
from .webhooks import WebhookReceiver

__all__ = [
    "DurationModel",
    "PollPolicy",
    "PollTracker",
    "Poller",
    "ProgressHook",
    "request_cost",
    "wait_until_done",
]

logger = logging.getLogger("novita_async")

ProgressHook = Callable[[TaskResult], object]

# With webhooks, the runner polls a task first at its predicted end plus this share of it plus
# WEBHOOK_GRACE seconds: time for its event to come; only a task whose event never came is polled.
WEBHOOK_SLACK = 0.25
WEBHOOK_GRACE = 1.0

# The durations model aims a little late: a poll that lands early costs a request (and one more
# poll a margin later), one that lands late costs a sliver of wall time.
_LATE_RATIO = 1.005
_LATE_SECONDS = 0.01
PROMISES = 2
"""Running tasks of a cost whose answers must bound it before their bound times the others."""

_positive = setting("a positive number", *NUMBER, gt(0))


@attrs.frozen
class PollPolicy:
    """Polling delays for :meth:`NovitaClient.wait_for_task`, in seconds."""

    min_delay: float = attrs.field(default=1.0, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    margin: float = attrs.field(default=0.5, validator=_positive)
    """Added to ``eta`` so the next poll lands just after the task should be done."""
    initial_delay: float = attrs.field(default=2.0, validator=_positive)
    """The delay when the answer says nothing about progress; grows by ``growth`` each poll."""
    growth: float = attrs.field(default=1.5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.min_delay > self.max_delay:
            raise ConfigurationError("PollPolicy.min_delay must not exceed max_delay")

    def next_delay(self, task: Task | None, *, polls: int, elapsed: float) -> float:
        """The wait after poll number ``polls`` (1-based), ``elapsed`` seconds into the wait."""
        estimates = []
        if task is not None and task.eta is not None and task.eta > 0:
            estimates.append(task.eta + self.margin)
        progress = None if task is None else task.progress_percent
        if progress is not None and 0 < progress < 100 and elapsed > 0:
            # Extrapolate the rate seen so far over the part still to do: finer than an eta in
            # whole seconds. Take the sooner of the two.
            estimates.append(elapsed * (100 - progress) / progress + self.margin)
        estimate = min(estimates) if estimates else poll_backoff(self).delay(max(polls, 1))
        return min(max(estimate, self.min_delay), self.max_delay)


@attrs.define
class PollTracker:
    """One task's polling state, and the decision of when to poll it next (on anyio's clock).

    The last poll lands on the deadline (``timeout`` after ``started``) itself. ``max_errors``
    transient failures in a row (None: no limit but the deadline) end the wait with the last.
    """

    task_id: str
    policy: PollPolicy
    started: float = attrs.field(kw_only=True)
    timeout: float | None = attrs.field(kw_only=True)
    max_errors: int | None = attrs.field(default=None, kw_only=True)
    polls: int = attrs.field(default=0, init=False)
    errors: int = attrs.field(default=0, init=False)
    last_status: str = attrs.field(default="", init=False)
    last_error: Exception | None = attrs.field(default=None, init=False)
    expected_end: float | None = attrs.field(default=None, init=False)
    """Seconds after ``started`` when the task said (by its last ``eta``) it would end."""
    _predicted_end: float | None = attrs.field(default=None, init=False)

    @property
    def deadline(self) -> float:
        return self.started + (math.inf if self.timeout is None else self.timeout)

    def first_poll(self, predicted: float | None) -> float:
        """When to poll first: at the task's predicted end (seconds from start), or at once. A poll
        that came a little early is followed ``margin`` after that end, not at the answer's
        ``eta`` (whole seconds on the real service)."""
        if predicted is not None:
            self._predicted_end = self.started + predicted
        return self.bounded(self.started + (predicted or 0.0))

    def answered(self, result: TaskResult, now: float) -> float | None:
        """After an answer: None if the task ended, else when to poll next
        (:class:`TaskTimeoutError` if the deadline has passed and the task still runs)."""
        self.polls += 1
        self.errors = 0
        self.last_error = None
        task = result.task
        self.last_status = result.status.value
        if result.status.is_final:
            return None
        elapsed = now - self.started
        if task.eta is not None and task.eta > 0:
            self.expected_end = elapsed + task.eta
        self._check_deadline(now)
        delay = self.policy.next_delay(task, polls=self.polls, elapsed=elapsed)
        if self._predicted_end is not None:
            # Once only: a task still running past its predicted end is timed by its answers.
            delay = min(delay, max(self._predicted_end - now, 0.0) + self.policy.margin)
            self._predicted_end = None
        return self.bounded(now + delay)

    def failed(self, error: Exception, now: float) -> float:
        """After a failed poll: when to poll next, or the error raised if it cannot be ridden out
        (not transient, too many in a row, or the deadline passed: :class:`TaskTimeoutError`)."""
        self.polls += 1
        self.last_error = error
        if not rides_out_poll_failure(error):
            raise error
        self.errors += 1
        if self.max_errors is not None and self.errors >= self.max_errors:
            raise error
        logger.info(
            "polling task %s failed (%s); polling on", self.task_id, getattr(error, "reason", error)
        )
        self._check_deadline(now)
        return self.bounded(now + poll_backoff(self.policy).delay(self.errors))

    def timed_out(self, now: float) -> TaskTimeoutError:
        error = TaskTimeoutError(self.task_id, now - self.started, self.last_status)
        error.__cause__ = self.last_error
        return error

    def bounded(self, when: float) -> float:
        return min(when, self.deadline)

    def _check_deadline(self, now: float) -> None:
        if now >= self.deadline:
            raise self.timed_out(now)


# --- one task: NovitaClient.wait_for_task -------------------------------------------------------


@contextlib.contextmanager
def _subscribed(
    events: WebhookReceiver | None, task_id: str, deliver: Callable[[TaskResult], None]
) -> Iterator[None]:
    """``deliver`` gets the task's end by event (at once if it came already) until the block ends;
    then the task is forgotten: a later event for it is counted, and dropped."""
    if events is None:
        yield
        return
    events._subscribe(task_id, deliver)
    try:
        yield
    finally:
        events.forget(task_id)


async def wait_until_done(
    fetch: Callable[[str], Awaitable[TaskResult]],
    task_id: str,
    *,
    timeout: float,  # noqa: ASYNC109  (a deadline for the task, not for one call)
    policy: PollPolicy,
    on_progress: ProgressHook | None,
    events: WebhookReceiver | None = None,
    first_poll: float = 0.0,
) -> TaskResult:
    """Poll ``fetch(task_id)``, first ``first_poll`` seconds in, until the task ends or
    ``timeout`` seconds pass; the task's event from ``events``, if it comes first, ends it too."""
    tracker = PollTracker(task_id, policy, started=anyio.current_time(), timeout=timeout)
    pushed: list[TaskResult] = []
    # The tracker times the polls; this scope also bounds a poll still in flight at the deadline,
    # and the task's event cancels it.
    with anyio.move_on_after(timeout) as polling:

        def deliver(result: TaskResult) -> None:
            pushed.append(result)
            polling.cancel()

        with _subscribed(events, task_id, deliver):
            if first_poll > 0:
                await anyio.sleep_until(tracker.first_poll(first_poll))
            while True:
                try:
                    result = await fetch(task_id)
                except Exception as exc:
                    next_poll = tracker.failed(exc, anyio.current_time())
                else:
                    await _report(result, on_progress)
                    answered = tracker.answered(result, anyio.current_time())
                    if answered is None:
                        _final(task_id, result)  # a failed task raises
                        return result
                    next_poll = answered
                await anyio.sleep_until(next_poll)
    if not pushed:
        raise tracker.timed_out(anyio.current_time())
    await _report(pushed[0], on_progress)
    _final(task_id, pushed[0])
    return pushed[0]


async def _report(result: TaskResult, on_progress: ProgressHook | None) -> None:
    if on_progress is not None:
        outcome = on_progress(result)
        if inspect.isawaitable(outcome):
            await outcome


def _final(task_id: str, result: TaskResult) -> None:
    if result.status is TaskStatus.FAILED:
        raise TaskFailedError(task_id, result.task.reason)


# --- how long tasks take: the runner's first polls ----------------------------------------------


def request_cost(request: TaskRequest) -> float:
    """What a task's duration grows with, in step-megapixel-images (a megapixel where the
    request does not say its size: inpainting and upscale take the input's)."""
    pixels = getattr(request, "width", 1000) * getattr(request, "height", 1000)
    return getattr(request, "steps", 1) * pixels * request.images_out / 1e6


def server_seconds(result: TaskResult) -> float | None:
    """The task's duration from submission to completion by the service's own clock, if given."""
    info = result.extra.debug_info
    if info is None or info.submit_time_ms is None or info.complete_time_ms is None:
        return None
    seconds = (info.complete_time_ms - info.submit_time_ms) / 1000
    return seconds if seconds >= 0 else None


class DurationModel:
    """A running least-squares fit ``seconds = a + b * cost`` over the last ``window`` tasks.

    Before any task of a cost has finished, the tightest ``elapsed + eta`` that PROMISES running
    ones gave bounds it, so a first wave of alike tasks is polled once (a bound too tight costs
    only a poll; one slow odd task must not hold the others back).
    """

    def __init__(self, window: int = 256) -> None:
        self._points: deque[tuple[float, float]] = deque()
        self._window = window
        # cost -> (the soonest end running tasks promised, how many promised)
        self._bounds: dict[float, tuple[float, int]] = {}
        self._n = 0
        self._sx = self._sy = self._sxx = self._sxy = 0.0

    def observe(self, cost: float, seconds: float) -> None:
        self._add(cost, seconds, +1)
        self._points.append((cost, seconds))
        if len(self._points) > self._window:
            self._add(*self._points.popleft(), -1)

    def bound(self, cost: float, seconds: float) -> None:
        """A running task of ``cost`` said it would have ended ``seconds`` after its start."""
        soonest, promises = self._bounds.pop(cost, (math.inf, 0))
        # Kept in the order last promised: the oldest go first.
        self._bounds[cost] = (min(seconds, soonest), promises + 1)
        if len(self._bounds) > self._window:
            del self._bounds[next(iter(self._bounds))]

    def promises(self, cost: float) -> int:
        return self._bounds.get(cost, (math.inf, 0))[1]

    @staticmethod
    def promised(seconds: float) -> float:
        """A poll time aimed just after a promised end, ``seconds`` after the task's start."""
        return seconds + _LATE_SECONDS

    def _add(self, x: float, y: float, sign: int) -> None:
        self._n += sign
        self._sx += sign * x
        self._sy += sign * y
        self._sxx += sign * x * x
        self._sxy += sign * x * y

    def predict(self, cost: float) -> float | None:
        """Seconds a task of ``cost`` should take, aimed slightly late; None before any data."""
        estimate = self._fit(cost)
        if estimate is None:
            soonest, promises = self._bounds.get(cost, (math.inf, 0))
            return self.promised(soonest) if promises >= PROMISES else None
        return estimate * _LATE_RATIO + _LATE_SECONDS

    def _fit(self, cost: float) -> float | None:
        if self._n == 0:
            return None
        mean_x, mean_y = self._sx / self._n, self._sy / self._n
        spread = self._sxx / self._n - mean_x * mean_x
        if spread <= 1e-12 * max(mean_x * mean_x, 1.0):
            # Every task so far had one cost: their mean is the best guess for that cost only.
            if abs(cost - mean_x) > 1e-9 * max(abs(mean_x), 1.0):
                return None
            return mean_y
        slope = max((self._sxy / self._n - mean_x * mean_y) / spread, 0.0)
        return max(mean_y + slope * (cost - mean_x), 0.0)


# --- many tasks: the batch runner's poll loop ---------------------------------------------------


class TaskResults(Protocol):
    """What :class:`Poller` asks for a task's result (a :class:`NovitaClient`)."""

    async def get_task_result(
        self, task_id: str, *, retry: RetryPolicy | None = None
    ) -> TaskResult: ...


class Gate(Protocol):
    """The run's pauses, as :class:`Poller` meets them (``batch._limits.RunGate``)."""

    async def wait(self, *, submission: bool = True) -> None: ...
    def answered(self) -> None: ...
    def unreachable(self, error: BaseException) -> None: ...


@attrs.define(eq=False)
class _Entry:
    """A task in the heap: its tracker, and its waiter's turn to poll."""

    tracker: PollTracker
    on_progress: Callable[[Task], None]
    cost: float | None
    by_event: bool  # its event should end it: polls only check on one that never came
    turn: anyio.Event = attrs.Factory(anyio.Event)  # set by the loop when this task may poll
    granted: bool = False  # the loop took a poll slot for this task, not yet given back
    abandoned: bool = False
    pushed: TaskResult | None = None  # the task's end, by webhook
    scout: bool = False  # polled at once, nothing being known of its kind: see _scouted

    def push(self, result: TaskResult) -> None:
        """The task's end, by webhook (a receiver hands over only the first, final one)."""
        if not self.abandoned:
            self.pushed = result
            self.turn.set()


@attrs.define
class _Scouts:
    """Tasks of one cost polled at once, nothing being known of it, until they have answered."""

    polling: int = 0
    answered: anyio.Event = attrs.Factory(anyio.Event)  # set once every one has its first answer


class Poller:
    """The one polling loop over every task of a run in flight, in a heap by next poll time.

    :meth:`run` hands the due task one of ``max_concurrent`` poll slots; its waiter in :meth:`wait`
    sends the ``GET`` itself (cancelling the job cancels its poll; no task is spawned per poll).
    """

    def __init__(
        self,
        client: TaskResults,
        policy: PollPolicy,
        gate: Gate,
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

    async def wait(
        self, task_id: str, on_progress: Callable[[Task], None], cost: float | None = None
    ) -> TaskResult:
        """The task's final result (succeeded or failed). With ``cost`` (:func:`request_cost`)
        the first poll waits for the task's predicted end; without (a resumed task), at once."""
        tracker = PollTracker(task_id, self._policy, started=anyio.current_time(),
                              timeout=self._task_timeout, max_errors=self._max_errors)  # fmt: skip
        # A task of an earlier run (no cost) is only polled: its event went to that run's address.
        entry = _Entry(tracker, on_progress, cost, self._events is not None and cost is not None)
        predicted = None if cost is None else self._durations.predict(cost)
        try:
            with _subscribed(self._events, task_id, entry.push):
                if entry.by_event:  # the first poll only checks on an event that never came
                    predicted = self._after_event(0.0, predicted or 0.0)
                elif cost is not None and predicted is None:
                    predicted = await self._scouted(entry, cost)
                self._schedule(entry, tracker.first_poll(predicted))
                while True:
                    if entry.pushed is None:
                        await entry.turn.wait()
                    if entry.pushed is not None:
                        self._learn(entry, entry.pushed)
                        return entry.pushed
                    try:
                        result = await self._poll(entry)
                    finally:
                        entry.granted = False
                        self._gets.release()
                        self._end_scouting(entry)  # a scout has its first answer, or none
                    if result is not None:
                        return result
        finally:
            entry.abandoned = True  # a cancelled waiter: the loop drops the entry
            self._end_scouting(entry)
            if entry.granted:  # cancelled between being given its turn and taking it
                entry.granted = False
                self._gets.release()

    async def _scouted(self, entry: _Entry, cost: float) -> float | None:
        """With nothing known of ``cost``, PROMISES scouts are polled at once (None); the others
        wait for their first answers, whose etas bound them all, and get the prediction then."""
        scouts = self._scouts.setdefault(cost, _Scouts())
        if scouts.polling + self._durations.promises(cost) < PROMISES:
            scouts.polling += 1
            entry.scout = True
            return None
        await scouts.answered.wait()
        return self._durations.predict(cost)

    def _end_scouting(self, entry: _Entry) -> None:
        if entry.scout:
            entry.scout = False
            assert entry.cost is not None
            scouts = self._scouts[entry.cost]
            scouts.polling -= 1
            if not scouts.polling:
                del self._scouts[entry.cost]
                scouts.answered.set()

    @staticmethod
    def _after_event(now: float, due: float) -> float:
        """When to check on a task whose event should come at ``due``, time for it to come."""
        return now + max(due - now, 0.0) * (1 + WEBHOOK_SLACK) + WEBHOOK_GRACE

    def _schedule(self, entry: _Entry, when: float) -> None:
        entry.turn = anyio.Event()
        heapq.heappush(self._heap, (when, next(self._order), entry))
        if when < self._wake_at:  # due before the loop would look again: wake it now
            self._wakeup.set()

    async def run(self) -> None:
        """Hand out turns to poll, forever; cancel the enclosing scope to stop."""
        while True:
            due = self._heap[0][0] if self._heap else math.inf
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
            entry.turn.set()

    async def _sleep_until(self, due: float) -> None:
        # Woken early when a task is scheduled, which may be due sooner than ``due``. An event
        # not set yet is kept: any task scheduled before this sleep is in the heap already.
        if self._wakeup.is_set():
            self._wakeup = anyio.Event()
        self._wake_at = due
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
            if classify(exc, step=Step.POLL).pause is Pause.EVERYTHING:
                self._gate.unreachable(exc)
            self._schedule(entry, tracker.failed(exc, anyio.current_time()))
            return None
        self._gate.answered()
        next_poll = tracker.answered(result, anyio.current_time())
        if next_poll is None:
            self._learn(entry, result)
            return result
        now = anyio.current_time()
        if entry.cost is not None and tracker.expected_end is not None:
            self._durations.bound(entry.cost, tracker.expected_end)
            if entry.scout:  # polled at the end it promised, as its kind's first polls will be
                promised = tracker.started + self._durations.promised(tracker.expected_end)
                next_poll = min(next_poll, max(promised, now))
        if entry.by_event:
            next_poll = tracker.bounded(self._after_event(now, next_poll))
        entry.on_progress(result.task)
        self._schedule(entry, next_poll)
        return None

    def _learn(self, entry: _Entry, result: TaskResult) -> None:
        if entry.cost is None or result.status is not TaskStatus.SUCCEED:
            return
        tracker = entry.tracker
        seconds = server_seconds(result)
        if seconds is None:
            # No timing from the service: bounded by the poll that saw it done, and its last eta.
            seconds = anyio.current_time() - tracker.started
            if tracker.expected_end is not None:
                seconds = min(seconds, tracker.expected_end)
        self._durations.observe(entry.cost, seconds)
