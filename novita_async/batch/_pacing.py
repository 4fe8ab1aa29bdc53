"""The run's pacing: the gate every request of a run passes (the rate, the shared pauses, the
run's stop); how long each pause lasts is the failure policy's (``_failures``).

A 429 means the account is over its limit on that endpoint (the service limits each endpoint on
its own, in images a minute), not one job: every submitter *of that endpoint* pauses, for the
server's ``Retry-After`` capped at ``retry_after_cap`` or else :data:`~.._failures.RATE_LIMITED`'s
backoff over that endpoint's consecutive 429s; the other endpoints' jobs go on. An outage
(connections refused or reset, timeouts, 5xx) pauses every request of the run with
:data:`~.._failures.OUTAGE`'s backoff until the service's next answer, and stops the run past
``max_outage``. Each pause is announced with how long it lasts.

The steady rate (``rate``: the account's, over every endpoint) is an
:class:`aiolimiter.AsyncLimiter`. An endpoint may also have a cap in images a minute (``caps``,
from ``BatchOptions.task_rates``), kept over a sliding minute as the service counts: a task of
``image_num`` images takes that many. Runners sharing one account's rate (the shards of
``novita_async.ray``) share one :class:`SubmitPermits`, where a 429 one of them sees holds them
all back on that endpoint; the caps are each runner's own (each shard's, under Ray). A run-level
failure stops the run (:meth:`RunGate.stop`): every later :meth:`RunGate.wait` raises
:class:`RunStopped`, while the tasks paid for are still followed.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

import anyio
import attrs
from aiolimiter import AsyncLimiter

from .._exceptions import OutageError, reason_of
from .._failures import OUTAGE, RATE_LIMITED, Backoff

logger = logging.getLogger("novita_async.batch")

_SPACING_MARGIN = 1.02

DEFAULT_ENDPOINT = "instant-id"
"""The endpoint a submission goes to when none is named (InstantID's, the runner's first)."""

PauseHook = Callable[[str, bool], None]
"""Told ``(message, paused)``: the run pauses (True) or goes on (False)."""


class SubmitPermits(Protocol):
    """Turns to submit, shared by several runners (and the pauses a 429 imposes on them all)."""

    async def acquire(self, endpoint: str = DEFAULT_ENDPOINT) -> None:
        """Return when one submission to ``endpoint`` may go now (the rate and its pause allow)."""

    def rate_limited(self, seconds: float, endpoint: str = DEFAULT_ENDPOINT) -> None:
        """A 429: hold every runner's submissions to ``endpoint`` ``seconds`` from now (without
        blocking)."""


@attrs.define
class _Pause:
    """A pause on anyio's clock, and its rounds in a row. Over or never set, ``until`` is 0, so
    that an open gate (no rate, no 429, no outage) never reads the clock."""

    backoff: Backoff = OUTAGE
    until: float = 0.0
    rounds: int = 0

    def left(self) -> float:
        if self.until and (left := self.until - anyio.current_time()) > 0:
            return left
        self.until = 0.0
        return 0.0

    def extend(self, seconds: float) -> None:
        self.until = max(self.until, anyio.current_time() + seconds)

    def another_round(
        self, hint: float | None, rand: random.Random, at_most: float = math.inf
    ) -> float:
        """Pause for one more round's backoff (or ``hint``), at most ``at_most``: how long."""
        self.rounds += 1
        pause = min(self.backoff.delay(self.rounds, hint, rand=rand), at_most)
        self.extend(pause)
        return pause


class RatePermits:
    """Turns to submit under ``rate`` per second (None or infinite: no limit), and the pause a
    429 imposes on its endpoint's: one run's :class:`SubmitPermits`, and the one
    ``novita_async.ray``'s shared actor holds for all the shards.

    One submission per 1/rate seconds, with no burst, aimed 2% under the rate: a service counting
    submissions over a sliding window (as the emulator and rate limits commonly do) then never sees
    one too many in any window, even when network jitter bunches arrivals. A second's burst, the
    leaky bucket's default, would exceed such a window at once.
    """

    def __init__(self, rate: float | None) -> None:
        if rate is not None and math.isinf(rate):
            rate = None
        self._limiter = None if rate is None else AsyncLimiter(1, _SPACING_MARGIN / rate)
        self._pauses: dict[str, _Pause] = {}
        self.granted = 0
        self.pauses = 0

    def _pause(self, endpoint: str) -> _Pause:
        if (pause := self._pauses.get(endpoint)) is None:
            pause = self._pauses[endpoint] = _Pause()
        return pause

    async def acquire(self, endpoint: str = DEFAULT_ENDPOINT) -> None:
        """Return when one submission to ``endpoint`` may go now."""
        pause = self._pause(endpoint)
        while True:
            if (left := pause.left()) > 0:
                await anyio.sleep(left)
                continue  # the pause may have been extended meanwhile
            if self._limiter is not None:
                await self._limiter.acquire()
            if not pause.left():
                self.granted += 1
                return

    def rate_limited(self, seconds: float, endpoint: str = DEFAULT_ENDPOINT) -> None:
        """A submission to ``endpoint`` was refused (429): none goes there for ``seconds``."""
        self.pauses += 1
        self._pause(endpoint).extend(seconds)

    def counts(self) -> dict[str, int]:
        """Turns granted and pauses imposed so far."""
        return {"granted": self.granted, "pauses": self.pauses}


@attrs.define
class _Window:
    """The images sent to one endpoint over the last minute, under a cap of ``per_minute``: a
    sliding window, as the service counts them (a burst up to the cap, then as the minute
    frees room), with a 2% longer minute against network jitter. A task of more images than the
    cap goes alone, into an empty window, rather than never."""

    per_minute: float
    sent: deque[tuple[float, int]] = attrs.Factory(deque)
    used: int = 0

    def wait(self, images: int) -> float:
        """Seconds until ``images`` more fit (0: now)."""
        now = anyio.current_time()
        minute = 60.0 * _SPACING_MARGIN
        while self.sent and self.sent[0][0] <= now - minute:
            self.used -= self.sent.popleft()[1]
        over = self.used + images - self.per_minute
        if over <= 0:
            return 0.0
        for stamp, count in self.sent:
            over -= count
            if over <= 0:
                return stamp + minute - now
        # More images than the cap: into an empty window.
        return self.sent[-1][0] + minute - now if self.sent else 0.0

    def take(self, images: int) -> None:
        self.sent.append((anyio.current_time(), images))
        self.used += images


class RunStopped(Exception):
    """Internal: the run has stopped (see :attr:`RunGate.stopped`); the job ends unrecorded."""


class RunGate:
    """Admit requests under any pause in force, and submissions under ``rate`` per second (None,
    > 0, or infinite: no limit), taking their turns from ``permits`` (by default this run's own
    :class:`RatePermits`), and each endpoint's under its 429s' pause and its cap in ``caps``
    (endpoint to images a minute; none: uncapped). ``on_pause`` is told, in words, when the run
    pauses and goes on."""

    def __init__(
        self,
        rate: float | None = None,
        *,
        retry_after_cap: float = 60.0,
        max_outage: float = math.inf,
        on_pause: PauseHook | None = None,
        rand: random.Random | None = None,
        permits: SubmitPermits | None = None,
        caps: Mapping[str, float] | None = None,
    ) -> None:
        self._permits = permits or RatePermits(rate)
        self._windows = {endpoint: _Window(cap) for endpoint, cap in (caps or {}).items()}
        self._max_outage = max_outage
        self._on_pause = on_pause
        self._rand = rand or random.Random()
        self._rate_backoff = attrs.evolve(RATE_LIMITED, hint_cap=retry_after_cap)
        self._rate_pauses: dict[str, _Pause] = {}  # by endpoint
        self._outage_pause = _Pause(OUTAGE)
        self._outage_since: float | None = None
        self.stopped: BaseException | None = None
        """The run-level error that stopped the run, once one has."""
        self._following = True  # after a stop, may the tasks paid for still be followed?
        self._stop_event = anyio.Event()
        self.answers = 0
        """Answers the service gave: a job failing while this grows fails alone (no outage)."""

    # --- waiting --------------------------------------------------------------------------------

    @property
    def paused_for(self) -> float:
        """Seconds left before a submission to InstantID's endpoint may go (0 when open)."""
        return self.ready_in()

    def _rate_pause(self, endpoint: str) -> _Pause:
        if (pause := self._rate_pauses.get(endpoint)) is None:
            pause = self._rate_pauses[endpoint] = _Pause(self._rate_backoff)
        return pause

    def ready_in(self, endpoint: str = DEFAULT_ENDPOINT, images: int = 1) -> float:
        """Seconds before a submission to ``endpoint`` of ``images`` images may go, as far as this
        gate knows (0: now, the account's rate aside)."""
        left = max(self._outage_pause.left(), self._rate_pause(endpoint).left())
        if (window := self._windows.get(endpoint)) is not None:
            left = max(left, window.wait(images))
        return left

    async def until_ready(self, endpoint: str = DEFAULT_ENDPOINT, images: int = 1) -> None:
        """Return once ``endpoint`` takes ``images`` more images (:meth:`ready_in` is 0), taking
        no turn: a submitter waits here holding nothing another endpoint's jobs need."""
        while True:
            if self.stopped is not None:
                raise RunStopped
            if (left := self.ready_in(endpoint, images)) <= 0:
                return
            with anyio.move_on_after(left):
                await self._stop_event.wait()

    async def wait(
        self, *, submission: bool = True, endpoint: str = DEFAULT_ENDPOINT, images: int = 1
    ) -> None:
        """Return when one request may be sent now; :class:`RunStopped` once the run stopped.
        A submission (to ``endpoint``, of ``images`` images) also takes its turn under the rate
        and the endpoint's cap; the other requests (following a task paid for) go on after a stop
        that lets them."""
        while True:
            if self.stopped is not None and (submission or not self._following):
                raise RunStopped
            pause = self.ready_in(endpoint, images) if submission else self._outage_pause.left()
            if pause > 0:
                with anyio.move_on_after(pause):
                    await self._stop_event.wait()
                continue  # the pause may have been extended meanwhile
            if not submission:
                return
            await self._permits.acquire(endpoint)
            # A pause may have begun (or the run stopped) while this submitter waited its turn.
            if self.ready_in(endpoint, images) == 0.0 and self.stopped is None:
                if (window := self._windows.get(endpoint)) is not None:
                    window.take(images)
                return

    async def stopping(self) -> None:
        """Return once the run has stopped."""
        await self._stop_event.wait()

    # --- what happened --------------------------------------------------------------------------

    def answered(self) -> None:
        """The service answered a request (whatever the answer): any outage is over."""
        self.answers += 1
        for pause in self._rate_pauses.values():
            pause.rounds = 0
        if self._outage_since is not None:
            down = anyio.current_time() - self._outage_since
            self._outage_since = None
            self._outage_pause = _Pause(OUTAGE)
            self._announce(f"the API answers again after {down:.0f}s; going on", paused=False)

    def unreachable(self, error: BaseException) -> None:
        """A request found the service unreachable or failing: pause every step of the run (not
        again for requests sent before the pause began); past ``max_outage``, stop it."""
        now = anyio.current_time()
        if self._outage_since is None:
            self._outage_since = now
        down = now - self._outage_since
        if down > self._max_outage:
            self.stop(OutageError(down, error), follow=False)
            return
        if now < self._outage_pause.until:
            return
        pause = self._outage_pause.another_round(None, self._rand, self._max_outage - down + 0.001)
        self._announce(
            f"paused: the API has been unreachable for {down:.0f}s ({reason_of(error)}); "
            f"next try in {pause:.1f}s"
        )

    def rate_limited(self, retry_after: float | None, endpoint: str = DEFAULT_ENDPOINT) -> float:
        """Close the gate to submissions to ``endpoint`` after its 429 (the other endpoints' stay
        open); returns the pause chosen (s from now)."""
        pause = self._rate_pause(endpoint).another_round(retry_after, self._rand)
        hint = "no Retry-After"
        if retry_after is not None and 0 <= retry_after < math.inf:  # the one Backoff honours
            cap = self._rate_backoff.hint_cap
            capped = f", capped at {cap:g}s" if retry_after > pause else ""
            hint = f"Retry-After {retry_after:g}s{capped}"
        self._permits.rate_limited(pause, endpoint)
        self._announce(
            f"submissions paused for {pause:.1f}s: rate limited on {endpoint} (429, {hint})"
        )
        return pause

    def stop(self, error: BaseException, *, follow: bool = True) -> None:
        """Stop the run for ``error`` (the first one stands): nothing more is submitted, and with
        ``follow=False`` nothing more is sent at all. Wakes every waiter."""
        if self.stopped is None:
            self.stopped = error
            self._stop_event.set()
        if not follow:
            self._following = False

    def _announce(self, message: str, *, paused: bool = True) -> None:
        logger.warning("%s", message)
        if self._on_pause is not None:
            self._on_pause(message, paused)
