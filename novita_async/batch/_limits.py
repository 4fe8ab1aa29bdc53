"""The submission gate every submitter passes: a rate limit and a shared 429 pause.

A 429 seen by one submitter means the account is over its limit, not that one job is: the gate
closes for *all* submitters until the server's ``Retry-After`` has passed (or, without one, an
exponential backoff that grows with consecutive 429s and resets on the next success). The steady
rate (submissions per second) is an :class:`aiolimiter.AsyncLimiter`.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import anyio

from .._exceptions import ConfigurationError

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

__all__ = ["SubmitGate"]


def _limiter(period: float) -> AsyncLimiter:
    # Imported when a rate is set: aiolimiter reads its own package metadata on import, which
    # costs a run without a rate limit more start-up time than anything else it imports.
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(1, period)


_BACKOFF_BASE = 1.0
_BACKOFF_MAX = 60.0


_SPACING_MARGIN = 1.02


class SubmitGate:
    """Admit one submission at a time under ``rate`` per second and any 429 pause in force."""

    def __init__(self, rate: float | None = None, *, rand: random.Random | None = None) -> None:
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
        ):
            raise ConfigurationError("rate must be a number of submissions per second > 0")
        if rate is not None and not math.isfinite(rate):
            rate = None
        # One submission per 1/rate seconds, with no burst, and aimed 2% under the rate: a
        # service that counts submissions over a sliding window (as the emulator does, and rate
        # limits commonly do) then never sees one too many in any window, even when network
        # jitter bunches a few arrivals together. A burst of a second's worth, the leaky bucket's
        # default, would exceed such a window at once.
        self._limiter = None if rate is None else _limiter(_SPACING_MARGIN / rate)
        self._paused_until = 0.0
        self._consecutive_429 = 0
        self._rand = rand or random.Random()

    @property
    def paused_for(self) -> float:
        """Seconds left in the current 429 pause (0 when open)."""
        return max(0.0, self._paused_until - anyio.current_time())

    async def wait(self) -> None:
        """Return when one submission may be sent now."""
        while True:
            # _paused_until stays 0 until the first 429: no clock to read on the common path.
            pause = self.paused_for if self._paused_until else 0.0
            if pause > 0:
                await anyio.sleep(pause)
                continue  # the pause may have been extended meanwhile
            if self._limiter is None:
                return
            await self._limiter.acquire()
            # A 429 may have closed the gate while this submitter waited for the rate limiter.
            if self.paused_for == 0.0:
                return

    def rate_limited(self, retry_after: float | None) -> float:
        """Close the gate after a 429; returns the pause chosen (seconds from now)."""
        self._consecutive_429 += 1
        if retry_after is not None and retry_after >= 0 and math.isfinite(retry_after):
            pause = float(retry_after)
        else:
            ceiling = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (self._consecutive_429 - 1))
            pause = self._rand.uniform(ceiling / 2, ceiling)
        self._paused_until = max(self._paused_until, anyio.current_time() + pause)
        return pause

    def succeeded(self) -> None:
        self._consecutive_429 = 0
