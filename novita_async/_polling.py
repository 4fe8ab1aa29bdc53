"""How long to wait before asking for a task's result again.

The service tells us how far a task is: ``eta`` (seconds left) and ``progress_percent``. An
honest ``eta`` lets a waiter poll about twice per task: once right after submitting, once at
``eta + margin``. Without one, the remaining time is extrapolated from the progress made so far;
without either, the delay grows geometrically. Every delay is clamped to ``[min_delay, max_delay]``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import anyio
import attrs

from ._exceptions import (
    APIConnectionError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._models import Task, TaskResult, TaskStatus

__all__ = ["PollPolicy", "ProgressHook", "wait_until_done"]

logger = logging.getLogger("novita_async")

ProgressHook = Callable[[TaskResult], object]

# Errors a long wait rides out until its deadline: the service may be back on the next poll.
_TRANSIENT = (APIConnectionError, ServerError, RateLimitError)


def _positive(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"PollPolicy.{attribute.name} must be a positive number")


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


async def wait_until_done(
    fetch: Callable[[str], Awaitable[TaskResult]],
    task_id: str,
    deadline: float,
    policy: PollPolicy,
    on_progress: ProgressHook | None,
) -> TaskResult:
    """Poll ``fetch(task_id)`` until the task ends or ``deadline`` seconds pass."""
    started = anyio.current_time()
    last: TaskResult | None = None
    last_error: Exception | None = None
    polls = 0
    with anyio.move_on_after(deadline):
        while True:
            try:
                last = await fetch(task_id)
            except _TRANSIENT as exc:
                last_error = exc
                logger.info("polling task %s failed (%s); polling on", task_id, exc.reason)
            else:
                last_error = None
                if on_progress is not None:
                    outcome = on_progress(last)
                    if inspect.isawaitable(outcome):
                        await outcome
                if last.status is TaskStatus.SUCCEED:
                    return last
                if last.status is TaskStatus.FAILED:
                    raise TaskFailedError(task_id, last.task.reason)
            polls += 1
            elapsed = anyio.current_time() - started
            task = last.task if last is not None else None
            await anyio.sleep(policy.next_delay(task, polls=polls, elapsed=elapsed))
    status = last.status.value if last is not None else ""
    raise TaskTimeoutError(task_id, anyio.current_time() - started, status) from last_error
