"""When to ask for a task's result again: the one polling decision of the package.

The service tells us how far a task is: ``eta`` (seconds left) and ``progress_percent``. An
honest ``eta`` lets a waiter poll about twice per task: once right after submitting, once at
``eta + margin``. Without one, the remaining time is extrapolated from the progress made so far;
without either, the delay grows geometrically. Every delay is clamped to ``[min_delay, max_delay]``.

:class:`PollTracker` holds one task's polling state and makes every decision about it: the time of
the next poll after an answer or after a failed poll, which errors are ridden out
(:data:`TRANSIENT_ERRORS`), and when the task's deadline has passed. Both ways of waiting use it:
:func:`wait_until_done` (one task, :meth:`NovitaClient.wait_for_task`) and the batch runner's poll
loop (many tasks in one heap, ``batch/_poller.py``). A wait given a webhook receiver races it
against the polling: the first to learn the end wins.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import anyio
import attrs
from attrs.validators import gt

from ._exceptions import (
    APIConnectionError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._models import Task, TaskResult, TaskStatus
from ._validators import NUMBER, setting

__all__ = ["TRANSIENT_ERRORS", "PollPolicy", "PollTracker", "ProgressHook", "wait_until_done"]

logger = logging.getLogger("novita_async")

ProgressHook = Callable[[TaskResult], object]

# Errors a wait rides out (after the call's own retries): the service may be back on the next poll.
TRANSIENT_ERRORS = (APIConnectionError, ServerError, RateLimitError)


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
        return min(max(self._estimate(task, polls, elapsed), self.min_delay), self.max_delay)

    def _estimate(self, task: Task | None, polls: int, elapsed: float) -> float:
        if task is not None:
            estimates = []
            if task.eta is not None and task.eta > 0:
                estimates.append(task.eta + self.margin)
            progress = task.progress_percent
            if progress is not None and 0 < progress < 100 and elapsed > 0:
                # Extrapolate the rate seen so far over the part still to do: finer than an eta
                # in whole seconds. Take the sooner of the two.
                estimates.append(elapsed * (100 - progress) / progress + self.margin)
            if estimates:
                return min(estimates)
        return self.initial_delay * self.growth ** max(polls - 1, 0)


class PollTracker:
    """One task's polling state, and the decision of when to poll it next.

    Times are on anyio's clock. ``timeout`` (seconds from ``started``; None: no limit) makes the
    last poll land on the deadline itself, so a task is asked once more before it times out.
    ``max_errors`` transient failures in a row (None: no limit but the deadline) end the wait
    with the last of them.
    """

    __slots__ = (
        "_predicted_end",
        "deadline",
        "errors",
        "expected_end",
        "last_task",
        "max_errors",
        "policy",
        "polls",
        "started",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        policy: PollPolicy,
        *,
        started: float,
        timeout: float | None,
        max_errors: int | None = None,
    ) -> None:
        self.task_id = task_id
        self.policy = policy
        self.started = started
        self.deadline = None if timeout is None else started + timeout
        self.max_errors = max_errors
        self.polls = 0
        self.errors = 0
        self.last_task: Task | None = None
        self.expected_end: float | None = None
        """Seconds after ``started`` when the task said (by its last ``eta``) it would end."""
        self._predicted_end: float | None = None

    def first_poll(self, predicted: float | None) -> float:
        """When to poll first: at the task's predicted end (seconds from start), or at once.

        A prediction also times the poll after one that came a little early: ``margin`` after
        the predicted end, rather than the answer's ``eta`` (whole seconds on the real service,
        which would wait up to a second past the task's end)."""
        if predicted is not None:
            self._predicted_end = self.started + predicted
        return self._bounded(self.started + (predicted or 0.0))

    def answered(self, result: TaskResult, now: float) -> float | None:
        """After an answer: None if the task ended, else when to poll next.

        Raises :class:`TaskTimeoutError` if the deadline has passed and the task is still running.
        """
        self.polls += 1
        self.errors = 0
        task = result.task
        self.last_task = task
        if result.status.is_final:
            return None
        elapsed = now - self.started
        if task.eta is not None and task.eta > 0:
            self.expected_end = elapsed + task.eta
        self._check_deadline(now, None)
        delay = self.policy.next_delay(task, polls=self.polls, elapsed=elapsed)
        if self._predicted_end is not None:
            # Once only: a task still running past its predicted end is timed by its answers.
            delay = min(delay, max(self._predicted_end - now, 0.0) + self.policy.margin)
            self._predicted_end = None
        return self._bounded(now + delay)

    def failed(self, error: Exception, now: float) -> float:
        """After a failed poll: when to poll next, or the error raised if it cannot be ridden out
        (not transient, too many in a row, or the deadline passed: :class:`TaskTimeoutError`)."""
        self.polls += 1
        if not isinstance(error, TRANSIENT_ERRORS):
            raise error
        self.errors += 1
        if self.max_errors is not None and self.errors >= self.max_errors:
            raise error
        logger.info("polling task %s failed (%s); polling on", self.task_id, error.reason)
        self._check_deadline(now, error)
        elapsed = now - self.started
        return self._bounded(now + self.policy.next_delay(None, polls=self.errors, elapsed=elapsed))

    def timed_out(self, now: float, cause: BaseException | None = None) -> TaskTimeoutError:
        last = self.last_task.status.value if self.last_task is not None else ""
        error = TaskTimeoutError(self.task_id, now - self.started, last)
        error.__cause__ = cause
        return error

    def _bounded(self, when: float) -> float:
        return when if self.deadline is None else min(when, self.deadline)

    def _check_deadline(self, now: float, cause: BaseException | None) -> None:
        if self.deadline is not None and now >= self.deadline:
            raise self.timed_out(now, cause)


async def wait_until_done(
    fetch: Callable[[str], Awaitable[TaskResult]],
    task_id: str,
    deadline: float,
    policy: PollPolicy,
    on_progress: ProgressHook | None,
    *,
    first_poll: float = 0.0,
    ended: Callable[[], Awaitable[TaskResult | None]] | None = None,
) -> TaskResult:
    """Poll ``fetch(task_id)`` until the task ends or ``deadline`` seconds pass.

    The first poll is ``first_poll`` seconds in. ``ended`` (a webhook receiver's wait for this
    task) is raced against the polling: whichever learns the task's end first ends the wait and
    the other is cancelled. If ``ended`` gives up (returns None), polling goes on alone.
    """
    if ended is None:
        return await _poll(fetch, task_id, deadline, policy, on_progress, first_poll)
    results: list[TaskResult] = []
    errors: list[Exception] = []

    async def by_event() -> TaskResult | None:
        result = await ended()
        if result is None:
            return None
        await _report(result, on_progress)
        return _final(task_id, result)

    async def by_polling() -> TaskResult:
        return await _poll(fetch, task_id, deadline, policy, on_progress, first_poll)

    async def take(source: Callable[[], Awaitable[TaskResult | None]]) -> None:
        # Errors are kept here rather than raised, so that the caller gets the error itself and
        # not an exception group.
        try:
            result = await source()
        except Exception as exc:
            errors.append(exc)
        else:
            if result is None:
                return
            results.append(result)
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(take, by_event)
        group.start_soon(take, by_polling)
    if results:
        return results[0]
    raise errors[0]


async def _poll(
    fetch: Callable[[str], Awaitable[TaskResult]],
    task_id: str,
    deadline: float,
    policy: PollPolicy,
    on_progress: ProgressHook | None,
    first_poll: float,
) -> TaskResult:
    tracker = PollTracker(task_id, policy, started=anyio.current_time(), timeout=deadline)
    last_error: Exception | None = None
    # The tracker times the polls; this scope also bounds a poll still in flight at the deadline.
    with anyio.move_on_after(deadline):
        if first_poll > 0:
            await anyio.sleep_until(tracker.first_poll(first_poll))
        while True:
            try:
                result = await fetch(task_id)
            except Exception as exc:
                last_error = exc
                next_poll = tracker.failed(exc, anyio.current_time())
            else:
                last_error = None
                await _report(result, on_progress)
                if _final(task_id, result) is not None:
                    return result
                answered = tracker.answered(result, anyio.current_time())
                assert answered is not None  # the task has not ended
                next_poll = answered
            await anyio.sleep_until(next_poll)
    raise tracker.timed_out(anyio.current_time(), last_error)


async def _report(result: TaskResult, on_progress: ProgressHook | None) -> None:
    if on_progress is not None:
        outcome = on_progress(result)
        if inspect.isawaitable(outcome):
            await outcome


def _final(task_id: str, result: TaskResult) -> TaskResult | None:
    """``result`` if the task succeeded, None while it runs; :class:`TaskFailedError` if failed."""
    if result.status is TaskStatus.SUCCEED:
        return result
    if result.status is TaskStatus.FAILED:
        raise TaskFailedError(task_id, result.task.reason)
    return None
