"""How long tasks take, learned from the ones that finished, to time each task's first poll.

Polling right after submitting tells little (the task has barely started), and polling at ``eta``
afterwards costs a second request per task. Tasks of one batch are alike, so the runner learns
their duration as it goes: a least-squares line ``seconds = a + b * cost`` over the most recent
finished tasks, where ``cost`` is steps x pixels x images (what the service's time grows with).
A task's first poll is then timed for just after its predicted end, so most tasks need one poll.

Until a task of some cost has finished, running ones' answers bound it: each said it would end
within ``eta`` seconds (the service rounds up to whole seconds), ``elapsed + eta`` after its start.
Once PROMISES of them have answered, the tightest of their bounds times the first polls of their
cost meanwhile, so that a first wave of alike tasks is not polled at once and again at ``eta`` (two
polls each, the second up to a ``margin`` late) but once, at that bound. The tightest of several:
one odd task that takes far longer (queued, or asked for more) must not hold the others back,
while a bound too tight costs only a poll. Until then, the first poll happens at once.
"""

from __future__ import annotations

import math
from collections import deque

from .._models import InstantIDRequest, TaskResult

__all__ = ["DurationModel", "request_cost", "server_seconds"]

# Aim a little late: a poll that lands early costs a request (and, see PollTracker, one more
# poll a margin later), one that lands late costs a sliver of wall time.
_LATE_RATIO = 1.005
_LATE_SECONDS = 0.01
PROMISES = 2
"""Running tasks of a cost whose answers must bound it before their bound times the others."""


def request_cost(request: InstantIDRequest) -> float:
    """What a task's duration grows with, in step-megapixel-images."""
    return request.steps * request.width * request.height * request.image_num / 1e6


def server_seconds(result: TaskResult) -> float | None:
    """The task's duration from submission to completion by the service's own clock, if given."""
    info = result.extra.debug_info
    if info is None or info.submit_time_ms is None or info.complete_time_ms is None:
        return None
    seconds = (info.complete_time_ms - info.submit_time_ms) / 1000
    return seconds if seconds >= 0 else None


class DurationModel:
    """A running least-squares fit of task seconds against cost over the last ``window`` tasks."""

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
        """How many running tasks of ``cost`` have bounded it so far."""
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
            estimate = mean_y
        else:
            slope = max((self._sxy / self._n - mean_x * mean_y) / spread, 0.0)
            estimate = max(mean_y + slope * (cost - mean_x), 0.0)
        return estimate
