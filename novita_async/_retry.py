"""When to retry a failed call, and how long to wait first.

The decision table (see :func:`should_retry`):

================================  ===============  ==========================================
failure                           ordinary call    task submission (``POST /v3/async/...``)
================================  ===============  ==========================================
nothing sent (refused, DNS,       retry            retry
connect timeout)
sent, answer lost (disconnect,    retry            **raise SubmitOutcomeUnknownError**, unless
reset, read timeout, truncated)                    ``RetryPolicy(retry_unknown_submits=True)``
408, 429, 5xx answer              retry            retry (the service answered: no task made)
any other status                  raise            raise
================================  ===============  ==========================================

The wait before attempt ``n + 1`` is the server's ``Retry-After`` (seconds or HTTP date) capped at
``retry_after_cap``, or else exponential backoff with full jitter: a uniform draw from
``[0, min(backoff_max, backoff_base * 2 ** (n - 1))]``.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from datetime import UTC, datetime

import attrs
from attrs.validators import ge

from ._validators import INTEGER, NUMBER, setting

__all__ = ["FailureKind", "RetryPolicy", "parse_retry_after", "should_retry"]

RETRYABLE_STATUSES = frozenset({408, 429})


class FailureKind(enum.Enum):
    """How far a failed attempt got, which decides whether repeating it is safe."""

    NOT_SENT = "not_sent"
    """The request never reached the server (connection refused, DNS, connect timeout)."""

    ANSWER_LOST = "answer_lost"
    """The request was (or may have been) sent but no complete answer came back."""

    STATUS = "status"
    """The server answered with an error status."""


_non_negative = setting("a number >= 0", *NUMBER, ge(0))
_at_least_one = setting("an integer >= 1", *INTEGER, ge(1))
_count_from_zero = setting("an integer >= 0", *INTEGER, ge(0))


@attrs.frozen
class RetryPolicy:
    """How a client retries failed calls.

    ``attempts`` counts the first try: 3 means up to two retries; 1 disables retrying.
    ``retry_unknown_submits`` re-sends a task submission whose answer was lost after the body was
    sent; that may create and bill a second task, so it is off by default.
    """

    attempts: int = attrs.field(default=3, validator=_at_least_one)
    backoff_base: float = attrs.field(default=0.5, validator=_non_negative)
    backoff_max: float = attrs.field(default=8.0, validator=_non_negative)
    retry_after_cap: float = attrs.field(default=60.0, validator=_non_negative)
    retry_unknown_submits: bool = False
    retry_rate_limited: bool = True
    """Retry 429 answers after their ``Retry-After``; the batch runner turns this off for its
    submissions, because it pauses every submitter at once instead."""
    expired_url_refreshes: int = attrs.field(default=2, validator=_count_from_zero)
    """Fresh task results :meth:`NovitaClient.download_images` may fetch when image URLs expire.
    One image costs at most ``attempts * (1 + expired_url_refreshes)`` GETs."""

    def backoff(self, attempt: int, *, rand: random.Random | None = None) -> float:
        """Full-jitter delay after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(attempt - 1, 0))
        return (rand or _random).uniform(0.0, ceiling)

    def delay(
        self, attempt: int, retry_after: float | None, *, rand: random.Random | None = None
    ) -> float:
        """The wait before the next attempt: the server's hint (capped) or jittered backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return self.backoff(attempt, rand=rand)


_random = random.Random()


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def should_retry(
    policy: RetryPolicy,
    kind: FailureKind,
    *,
    attempt: int,
    status: int | None = None,
    creates_task: bool = False,
) -> bool:
    """Whether to try again after failed attempt number ``attempt`` (1-based)."""
    if attempt >= policy.attempts:
        return False
    if kind is FailureKind.NOT_SENT:
        return True
    if kind is FailureKind.ANSWER_LOST:
        return not creates_task or policy.retry_unknown_submits
    if status == 429 and not policy.retry_rate_limited:
        return False
    return status is not None and is_retryable_status(status)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Unparseable values give ``None``; dates in the past give 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)
