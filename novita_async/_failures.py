"""The one failure policy: what an error means, how long to wait, and what follows.

Every site that meets an error asks here: :func:`classify` says whose fault it is (:class:`Kind`)
and who holds back while a transient one is ridden out (:class:`Pause`); :func:`decide` says what a
batch job does next; :func:`attempt_may_repeat` whether one call tries again; :class:`Backoff`
(one formula, four rows) how long to wait; :func:`exit_status` what a command exits with. Nothing
here sleeps: the sites sleep, for as long as this module says. The README's failure table says
the same, and ``tests/test_failure_table.py`` (which renders it) holds it to this module.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import socket
import ssl
from datetime import UTC, datetime
from typing import Protocol

import attrs
from attrs.validators import ge

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BudgetReachedError,
    ConfigurationError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    NotFoundError,
    NovitaError,
    OutageError,
    PermissionDeniedError,
    RateLimitError,
    RetriesExhaustedError,
    RunStoppedError,
    ServerError,
    StorageError,
    SubmitOutcomeUnknownError,
    ValidationError,
    reason_of,
)
from ._models import INTEGER, NUMBER, setting

# --- what an error means ---------------------------------------------------------------------


class Kind(enum.Enum):
    """Whose fault a failure is, which decides what follows."""

    TRANSIENT = "transient"
    JOB = "job"
    RUN = "run"
    UNKNOWN_OUTCOME = "unknown_outcome"


class Pause(enum.Enum):
    """Who holds back while the failure is ridden out."""

    NONE = "none"  # only the failed step (its job's rounds)
    SUBMISSIONS = "submissions"  # a 429: every submitter to that endpoint, of the account
    EVERYTHING = "everything"  # the service unreachable: every request, tasks paid for included


class Step(enum.Enum):
    """Where the error happened: a submission's odd answer may hide a task that exists."""

    SUBMIT = "submit"
    POLL = "poll"
    OTHER = "other"


@attrs.frozen
class Verdict:
    """What :func:`classify` makes of one error."""

    error: BaseException
    kind: Kind
    pause: Pause = Pause.NONE

    @property
    def reason(self) -> str:
        return reason_of(self.error)

    def advice(self) -> tuple[str, str]:
        """What happened and what the user should do: a run-level failure's one closing line."""
        error = self.error
        reason = "INVALID_API_KEY" if isinstance(error, AuthenticationError) else self.reason
        if reason in _SERVICE_ADVICE:
            return _SERVICE_ADVICE[reason]
        if isinstance(error, PermissionDeniedError):
            return (
                "the service refused the key's permission",
                "check NOVITA_API_KEY and the account",
            )
        if isinstance(error, NotFoundError):
            return "the service has no such endpoint", "check NOVITA_BASE_URL"
        if reason in _OWN_ADVICE:
            what, fix = _OWN_ADVICE[reason]
            return what.format(error), fix
        if isinstance(error, StorageError):
            return (
                f"the output's object store failed ({error})",
                "check the store and its credentials (AWS_*, GOOGLE_*, AZURE_* variables)",
            )
        return str(error), "fix the cause"


_SERVICE_ADVICE = {
    "INVALID_API_KEY": ("the service refused the API key", "check NOVITA_API_KEY"),
    "MISSING_API_KEY": ("the service refused the API key", "check NOVITA_API_KEY"),
    "BILLING_BALANCE_NOT_ENOUGH": ("the account's balance has run out", "top it up"),
    "BILLING_AUTH_FAILED": ("the account's billing was refused", "check the account's billing"),
    "FEATURE_NOT_ALLOWED": ("the account may not use this API", "check the account's plan"),
    "API_NOT_ALLOWED": ("the account may not use this API", "check the account's plan"),
}
# The run's own causes (checked after the service's), "{}" being the error.
_OWN_ADVICE = {
    "DISK_FULL": ("the output disk is full ({})", "free some space"),
    "READ_ONLY_FILE_SYSTEM": (
        "the output is on a read-only file system ({})",
        "choose another --out",
    ),
    "PERMISSION_DENIED": ("a file of the run may not be written ({})", "check the permissions"),
    "BUDGET_REACHED": ("{}", "as max_tasks (--max-tasks) asked"),
    "OUTAGE": ("{}", "check the network or the service's status"),
    "STORAGE_CONFLICT": ("another run writes this output's journal ({})", "run one at a time"),
    "LOCAL_IO_ERROR": ("a file of the run could not be written ({})", "check the output disk"),
}
# 400s about the account, not the request's content.
_ACCOUNT_REASONS = frozenset({"BILLING_BALANCE_NOT_ENOUGH", "MISSING_API_KEY"})


def classify(error: BaseException, *, step: Step = Step.OTHER) -> Verdict:
    """Whose fault ``error`` is, and who holds back while it is ridden out: THE table."""
    if isinstance(error, SubmitOutcomeUnknownError):
        # Lost on the way like any connection error (so a wait rides it out), but a task may
        # exist: never resent by the runner.
        return Verdict(error, Kind.UNKNOWN_OUTCOME, Pause.EVERYTHING)
    if isinstance(error, InvalidResponseError):
        # A 2xx answer to a submission without a task id: a task may exist all the same.
        return Verdict(error, Kind.UNKNOWN_OUTCOME if step is Step.SUBMIT else Kind.JOB)
    if isinstance(error, RateLimitError):
        return Verdict(error, Kind.TRANSIENT, Pause.SUBMISSIONS)
    if isinstance(error, ServerError | APIConnectionError):
        return Verdict(error, Kind.TRANSIENT, Pause.EVERYTHING)
    if isinstance(error, ImageURLExpiredError):
        return Verdict(error, Kind.TRANSIENT)
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return Verdict(error, Kind.RUN)
    if isinstance(error, BadRequestError):
        return Verdict(error, Kind.RUN if error.reason in _ACCOUNT_REASONS else Kind.JOB)
    if isinstance(error, NotFoundError):
        return Verdict(error, Kind.JOB if error.reason == "TASK_NOT_FOUND" else Kind.RUN)
    if isinstance(error, APIStatusError):
        # 408 and the other statuses that pass.
        return Verdict(error, Kind.TRANSIENT if error.status in (408, 409, 425) else Kind.JOB)
    if isinstance(error, LocalIOError):
        return Verdict(error, Kind.JOB if error.reason == "NAME_TOO_LONG" else Kind.RUN)
    if isinstance(error, StorageError | BudgetReachedError | OutageError):
        return Verdict(error, Kind.RUN)
    return Verdict(error, Kind.JOB)


def rides_out_poll_failure(error: BaseException) -> bool:
    """Whether a wait for a task polls on after ``error`` (429, 5xx, no answer): what the
    service does for everyone, not what it says about this task."""
    return classify(error, step=Step.POLL).pause is not Pause.NONE


def may_be_unknown_asset(error: BaseException) -> bool:
    """A refusal that may mean the body named an asset the service no longer knows: it documents
    no asset lifetime nor an error code for one, so any 400 ``INVALID_REQUEST_BODY`` may (other
    reasons, ``ILLEGAL_PROMPT``, ``IMAGE_NO_FACE_DETECTED``, ..., say what is wrong)."""
    return isinstance(error, BadRequestError) and error.reason == "INVALID_REQUEST_BODY"


RETRYABLE_REASONS = frozenset({"RETRIES_EXHAUSTED"})
"""Failure reasons a plain rerun tries again: the job was not at fault."""


# --- the one backoff ---------------------------------------------------------------------------

_random = random.Random()


@attrs.frozen
class Backoff:
    """The wait before try ``n + 1``: ``c = clamp(base * factor ** (n - 1), least, cap)``, drawn
    uniformly from ``[floor * c, c]`` (floor 0: full jitter; 0.5: "equal" jitter; 1: none). A
    server's hint (``Retry-After``), when there is one, wins, capped at ``hint_cap``."""

    base: float
    cap: float
    factor: float = 2.0
    floor: float = 0.0
    hint_cap: float = 60.0
    least: float = 0.0

    def delay(
        self, n: int, hint: float | None = None, *, rand: random.Random | None = None
    ) -> float:
        if hint is not None and math.isfinite(hint) and hint >= 0:
            return min(float(hint), self.hint_cap)
        ceiling = min(max(self.base * self.factor ** max(n - 1, 0), self.least), self.cap)
        if self.floor >= 1:
            return ceiling
        return (rand or _random).uniform(self.floor * ceiling, ceiling)


# The submissions' pause after 429s in a row (the hint's cap: the run's retry_after_cap), and the
# run's in an outage's rounds (never past what is left of max_outage).
RATE_LIMITED = Backoff(base=1.0, cap=60.0, floor=0.5)
OUTAGE = Backoff(base=1.0, cap=30.0, floor=0.5)


def call_backoff(policy: RetryPolicy) -> Backoff:
    """A call's wait between attempts (full jitter), and a batch job's between rounds."""
    return Backoff(
        base=policy.backoff_base, cap=policy.backoff_max, hint_cap=policy.retry_after_cap
    )


class PollGrowth(Protocol):  # what poll_backoff reads of a PollPolicy
    @property
    def initial_delay(self) -> float: ...
    @property
    def growth(self) -> float: ...
    @property
    def min_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...


def poll_backoff(poll: PollGrowth) -> Backoff:
    """The wait after failed polls in a row (n: how many), without jitter."""
    return Backoff(
        base=poll.initial_delay,
        cap=poll.max_delay,
        factor=poll.growth,
        floor=1.0,
        least=poll.min_delay,
    )


# --- one call's retries ------------------------------------------------------------------------


_non_negative = setting("a number >= 0", *NUMBER, ge(0))
_at_least_one = setting("an integer >= 1", *INTEGER, ge(1))
_count_from_zero = setting("an integer >= 0", *INTEGER, ge(0))


@attrs.frozen
class RetryPolicy:
    """How a client retries failed calls.

    ``attempts`` counts the first try: 3 means up to two retries; 1 disables retrying.
    ``retry_unknown_submits`` re-sends a task submission whose answer was lost after the body was
    sent; that may create and bill a second task, so it is off by default. The wait before attempt
    ``n + 1`` is the server's ``Retry-After`` capped at ``retry_after_cap``, or else a uniform draw
    from ``[0, min(backoff_max, backoff_base * 2 ** (n - 1))]``.
    """

    attempts: int = attrs.field(default=3, validator=_at_least_one)
    backoff_base: float = attrs.field(default=0.5, validator=_non_negative)
    backoff_max: float = attrs.field(default=8.0, validator=_non_negative)
    retry_after_cap: float = attrs.field(default=60.0, validator=_non_negative)
    retry_unknown_submits: bool = False
    retry_rate_limited: bool = True
    """Retry 429 answers after their ``Retry-After``; the batch runner turns this off for its
    submissions, because it pauses every submitter of that endpoint at once instead."""
    expired_url_refreshes: int = attrs.field(default=2, validator=_count_from_zero)
    """Fresh task results :meth:`NovitaClient.download_images` may fetch when image URLs expire.
    One image costs at most ``attempts * (1 + expired_url_refreshes)`` GETs."""

    def backoff(self, attempt: int, *, rand: random.Random | None = None) -> float:
        """Full-jitter delay after failed attempt number ``attempt`` (1-based)."""
        return self.delay(attempt, None, rand=rand)

    def delay(
        self, attempt: int, retry_after: float | None, *, rand: random.Random | None = None
    ) -> float:
        """The wait before the next attempt: the server's hint (capped) or jittered backoff."""
        return call_backoff(self).delay(attempt, retry_after, rand=rand)


class FailureKind(enum.Enum):
    """How far a failed attempt got, which decides whether repeating it is safe."""

    NOT_SENT = "not_sent"  # never reached the server (connection refused, DNS, connect timeout)
    ANSWER_LOST = "answer_lost"  # (maybe) sent, but no complete answer came back
    STATUS = "status"  # the server answered with an error status


def attempt_may_repeat(
    policy: RetryPolicy,
    kind: FailureKind,
    *,
    attempt: int,
    status: int | None = None,
    creates_task: bool = False,
) -> bool:
    """Whether to try again after failed attempt number ``attempt`` (1-based): yes if nothing was
    sent, or the answer was lost (a task submission's only with ``retry_unknown_submits``: a task
    may exist and be billed), or the answer was 408, 429 or 5xx; never for other statuses."""
    if attempt >= policy.attempts:
        return False
    if kind is FailureKind.NOT_SENT:
        return True
    if kind is FailureKind.ANSWER_LOST:
        return not creates_task or policy.retry_unknown_submits
    if status == 429:
        return policy.retry_rate_limited
    return status is not None and (status == 408 or 500 <= status <= 599)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, delta-seconds or an HTTP date: ``None`` if
    it cannot be parsed, 0 for a date in the past."""
    text = (value or "").strip()
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
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


# --- budgets: how many times each site may repeat ----------------------------------------------
# RetryPolicy.attempts and .expired_url_refreshes, PollTracker.max_errors and
# BatchOptions.max_outage are the user's; these are the package's.

MAX_JOB_ROUNDS = 5
"""Rounds of retries a batch job gets for transient failures, counted only while the service
answers other jobs (in an outage the run pauses instead)."""
MAX_RAY_RESTARTS = 3  # of a Ray shard's actor (and the permits actor) before its shard fails
PERMITS_TRIES = 4  # of a call to the shared permits actor, which Ray may be restarting


# --- what a batch job does next ----------------------------------------------------------------


@attrs.define
class Rounds:
    """A job's rounds of retries, counted only while the service answers others."""

    count: int = 0
    answers_seen: int = -1


class Action(enum.Enum):
    RETRY = "retry"
    END_JOB = "end_job"
    STOP_RUN = "stop_run"


@attrs.frozen
class Next:
    """What :func:`decide` says follows a failed step of a job."""

    action: Action
    verdict: Verdict
    record: BaseException | None = None  # END_JOB: the error the job is recorded failed with
    wait: float = 0.0  # RETRY: seconds before the step is tried again
    counted: bool = False  # RETRY: took one of the job's rounds (the service answered since)
    round: int = 0  # RETRY: the job's rounds so far, this one included

    @property
    def pause(self) -> Pause:
        """Who holds back meanwhile: a transient failure's (even one ending its job's last round:
        the others still meet it)."""
        return self.verdict.pause if self.verdict.kind is Kind.TRANSIENT else Pause.NONE


def decide(
    error: BaseException,
    *,
    step: Step = Step.OTHER,
    rounds: Rounds,
    answers: int,
    policy: RetryPolicy,
    rand: random.Random | None = None,
) -> Next:
    """What follows ``error`` in a job with ``rounds`` so far, the service having given ``answers``
    in all: RUN stops the run, JOB and UNKNOWN_OUTCOME end the job, TRANSIENT tries again after the
    call's backoff until the job's rounds pass :data:`MAX_JOB_ROUNDS`. The caller applies it."""
    verdict = classify(error, step=step)
    if verdict.kind is Kind.RUN:
        return Next(Action.STOP_RUN, verdict)
    if verdict.kind is not Kind.TRANSIENT:
        return Next(Action.END_JOB, verdict, record=error)
    counted = answers != rounds.answers_seen
    count = rounds.count + counted
    if counted and count > MAX_JOB_ROUNDS:
        return Next(Action.END_JOB, verdict, record=RetriesExhaustedError(MAX_JOB_ROUNDS, error))
    wait = call_backoff(policy).delay(max(count, 1), rand=rand)
    return Next(Action.RETRY, verdict, wait=wait, counted=counted, round=count)


# --- exit statuses, mapped once ----------------------------------------------------------------


class ExitStatus(enum.IntEnum):
    """What a ``novita-async`` command exits with (the README says what each means)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    STOPPED = 3
    BUDGET = 4
    INTERRUPTED = 130


# OSErrors that are the network's, not this machine's file system (aiohttp's own, which this
# module does not import, are told by their module).
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError)
_USAGE_REASONS = frozenset({"JOURNAL_DAMAGED"})  # its message names the repair command


def is_network_error(error: BaseException) -> bool:
    """Whether an ``OSError`` is the network's rather than this machine's file system's."""
    return isinstance(error, _NETWORK_ERRORS) or any(
        cls.__module__.partition(".")[0] == "aiohttp" for cls in type(error).__mro__
    )


def exit_status(error: BaseException) -> ExitStatus:
    """The status a command exits with when ``error`` ends it."""
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(error, ValidationError | ConfigurationError) or (
        isinstance(error, NovitaError) and error.reason in _USAGE_REASONS
    ):
        return ExitStatus.USAGE
    if isinstance(error, RunStoppedError):
        return ExitStatus.BUDGET if error.reason == "BUDGET_REACHED" else ExitStatus.STOPPED
    if isinstance(error, LocalIOError | StorageError) or (
        isinstance(error, OSError) and not is_network_error(error)
    ):
        # The run's own place (this disk, the bucket) failed: a plain rerun continues.
        return ExitStatus.STOPPED
    return ExitStatus.FAILED


def run_exit_status(
    *, failed: int, not_finished: int, stopped: BaseException | None, interrupted: bool
) -> ExitStatus:
    """The status ``novita-async run`` exits with, from its summary's counts."""
    if stopped is not None:
        return exit_status(stopped)
    if interrupted:
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK if failed == 0 and not_finished == 0 else ExitStatus.FAILED
