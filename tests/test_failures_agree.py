"""Throwaway (deleted in Phase B): the one failure policy agrees with the code it replaced.

Today's ``blame``, ``is_outage``, ``TRANSIENT_ERRORS``, ``run_stop_advice`` and the four backoff
formulas are copied here verbatim from before the merge, and compared with ``_failures`` over a
broad set of errors and attempt numbers (seeded random draws, the same seed on both sides).
"""

from __future__ import annotations

import enum
import errno
import math
import random

import pytest

from novita_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetReachedError,
    ConfigurationError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    NotFoundError,
    OutageError,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    RetriesExhaustedError,
    RetryPolicy,
    ServerError,
    StorageError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
)
from novita_async._exceptions import status_error
from novita_async._failures import (
    OUTAGE,
    RATE_LIMITED,
    Kind,
    Pause,
    Step,
    call_backoff,
    classify,
    poll_backoff,
    rides_out_poll_failure,
)

# --- the old code, verbatim -----------------------------------------------------------------


class Blame(enum.Enum):
    JOB = "job"
    RUN = "run"
    TRANSIENT = "transient"
    UNKNOWN_OUTCOME = "unknown_outcome"


_ACCOUNT_REASONS = frozenset({"BILLING_BALANCE_NOT_ENOUGH", "MISSING_API_KEY"})
_LOCAL_JOB_REASONS = frozenset({"NAME_TOO_LONG"})
TRANSIENT_ERRORS = (APIConnectionError, ServerError, RateLimitError)


def is_outage(error: BaseException) -> bool:
    return isinstance(error, APIConnectionError | ServerError)


def blame(error: BaseException, *, submitting: bool = False) -> Blame:
    if isinstance(error, SubmitOutcomeUnknownError):
        return Blame.UNKNOWN_OUTCOME
    if isinstance(error, InvalidResponseError):
        return Blame.UNKNOWN_OUTCOME if submitting else Blame.JOB
    if isinstance(error, RateLimitError | ServerError | APIConnectionError | ImageURLExpiredError):
        return Blame.TRANSIENT
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return Blame.RUN
    if isinstance(error, BadRequestError):
        return Blame.RUN if error.reason in _ACCOUNT_REASONS else Blame.JOB
    if isinstance(error, NotFoundError):
        return Blame.JOB if error.reason == "TASK_NOT_FOUND" else Blame.RUN
    if isinstance(error, APIStatusError):
        return Blame.TRANSIENT if error.status in (408, 409, 425) else Blame.JOB
    if isinstance(error, LocalIOError):
        return Blame.JOB if error.reason in _LOCAL_JOB_REASONS else Blame.RUN
    if isinstance(error, StorageError):
        return Blame.RUN
    return Blame.JOB


def run_stop_advice(error: BaseException) -> tuple[str, str]:
    reason = getattr(error, "reason", "")
    if isinstance(error, AuthenticationError) or reason in ("INVALID_API_KEY", "MISSING_API_KEY"):
        return "the service refused the API key", "check NOVITA_API_KEY"
    if reason == "BILLING_BALANCE_NOT_ENOUGH":
        return "the account's balance has run out", "top it up"
    if reason == "BILLING_AUTH_FAILED":
        return "the account's billing was refused", "check the account's billing"
    if reason in ("FEATURE_NOT_ALLOWED", "API_NOT_ALLOWED"):
        return "the account may not use this API", "check the account's plan"
    if isinstance(error, PermissionDeniedError):
        return "the service refused the key's permission", "check NOVITA_API_KEY and the account"
    if isinstance(error, NotFoundError):
        return "the service has no such endpoint", "check NOVITA_BASE_URL"
    if reason == "DISK_FULL":
        return f"the output disk is full ({error})", "free some space"
    if reason == "READ_ONLY_FILE_SYSTEM":
        return f"the output is on a read-only file system ({error})", "choose another --out"
    if reason == "PERMISSION_DENIED":
        return f"a file of the run may not be written ({error})", "check the permissions"
    if isinstance(error, BudgetReachedError):
        return str(error), "as max_tasks (--max-tasks) asked"
    if reason == "OUTAGE":
        return str(error), "check the network or the service's status"
    if isinstance(error, StorageError):
        if reason == "STORAGE_CONFLICT":
            return f"another run writes this output's journal ({error})", "run one at a time"
        return (
            f"the output's object store failed ({error})",
            "check the store and its credentials (AWS_*, GOOGLE_*, AZURE_* variables)",
        )
    if reason == "LOCAL_IO_ERROR":
        return f"a file of the run could not be written ({error})", "check the output disk"
    return str(error), "fix the cause"


def old_call_backoff(policy: RetryPolicy, attempt: int, rand: random.Random) -> float:
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** max(attempt - 1, 0))
    return rand.uniform(0.0, ceiling)


def old_call_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rand: random.Random
) -> float:
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.retry_after_cap)
    return old_call_backoff(policy, attempt, rand)


def old_rate_limited(
    consecutive: int, retry_after: float | None, cap: float, rand: random.Random
) -> float:
    if retry_after is not None and retry_after >= 0 and math.isfinite(retry_after):
        return min(float(retry_after), cap)
    ceiling = min(60.0, 1.0 * 2 ** (consecutive - 1))
    return rand.uniform(ceiling / 2, ceiling)


def old_outage(rounds: int, rand: random.Random) -> float:
    ceiling = min(30.0, 1.0 * 2 ** (rounds - 1))
    return rand.uniform(ceiling / 2, ceiling)


def old_failed_poll(policy: PollPolicy, errors: int) -> float:
    estimate = policy.initial_delay * policy.growth ** max(errors - 1, 0)
    return min(max(estimate, policy.min_delay), policy.max_delay)


# --- the errors ------------------------------------------------------------------------------

REASONS = (
    "",
    "INVALID_REQUEST_BODY",
    "ILLEGAL_PROMPT",
    "BILLING_BALANCE_NOT_ENOUGH",
    "MISSING_API_KEY",
    "INVALID_API_KEY",
    "BILLING_AUTH_FAILED",
    "FEATURE_NOT_ALLOWED",
    "API_NOT_ALLOWED",
    "TASK_NOT_FOUND",
    "API_NOT_FOUND",
    "OUTAGE",
    "DISK_FULL",
)
STATUSES = (400, 401, 403, 404, 405, 408, 409, 410, 422, 425, 429, 500, 502, 503, 504, 599)


def _errors() -> list[BaseException]:
    errors: list[BaseException] = [
        status_error(status, reason=reason, retry_after=1.0)
        for status in STATUSES
        for reason in REASONS
    ]
    errors += [LocalIOError("x", errno=code) for code in (None, *errno.errorcode)]
    errors += [
        StorageError("x", reason=reason)
        for reason in ("STORAGE_ERROR", "STORAGE_CONFLICT", "STORAGE_PERMISSION")
    ]
    errors += [
        APIConnectionError("refused"),
        APITimeoutError("slow"),
        SubmitOutcomeUnknownError("lost"),
        InvalidResponseError("odd"),
        ImageURLExpiredError("old"),
        TaskFailedError("t", "boom"),
        TaskTimeoutError("t", 3.0),
        ValidationError("steps", 0, "1 to 100"),
        ConfigurationError("no key"),
        BudgetReachedError(3),
        OutageError(301.0, APIConnectionError("refused")),
        RetriesExhaustedError(5, ServerError(503)),
        ValueError("bad line"),
        OSError(errno.ENOSPC, "full"),
        KeyboardInterrupt(),
        RuntimeError("bug"),
    ]
    return errors


ERRORS = _errors()


@pytest.mark.parametrize(
    "error", ERRORS, ids=lambda e: f"{type(e).__name__}-{getattr(e, 'reason', '')}"
)
def test_classify_agrees_with_blame_is_outage_and_the_poll_set(error: BaseException) -> None:
    for step, submitting in ((Step.SUBMIT, True), (Step.OTHER, False), (Step.POLL, False)):
        verdict = classify(error, step=step)
        if isinstance(error, BudgetReachedError | OutageError):
            # The one deliberate reconciliation: blame() never saw these (they stop the run
            # through the gate, not through a judge) and fell through to JOB; the table names
            # them for what they are.
            assert (verdict.kind, blame(error).value) == (Kind.RUN, "job")
            continue
        assert verdict.kind.value == blame(error, submitting=submitting).value
    assert (classify(error).pause is Pause.EVERYTHING) is is_outage(error)
    assert rides_out_poll_failure(error) is isinstance(error, TRANSIENT_ERRORS)
    assert classify(error).advice() == run_stop_advice(error)


def test_blame_by_kind_covers_every_kind() -> None:
    kinds = {classify(error, step=Step.SUBMIT).kind for error in ERRORS}
    assert kinds == set(Kind)


@pytest.mark.parametrize("seed", range(20))
def test_the_four_backoff_rows_agree_with_the_four_formulas(seed: int) -> None:
    draw = random.Random(seed)
    hints = (None, 0.0, 0.5, 3.0, 59.0, 60.0, 61.0, 3600.0)
    for _ in range(50):
        policy = RetryPolicy(
            backoff_base=draw.choice((0.0, 0.001, 0.5, 1.0, 3.0)),
            backoff_max=draw.choice((0.0, 0.02, 8.0, 100.0)),
            retry_after_cap=draw.choice((0.0, 5.0, 60.0)),
        )
        n = draw.randint(1, 40)
        hint = draw.choice(hints)
        old, new = random.Random(seed * 1000 + n), random.Random(seed * 1000 + n)
        assert call_backoff(policy).delay(n, hint, rand=new) == old_call_delay(policy, n, hint, old)
        assert policy.delay(n, hint, rand=new) == old_call_delay(policy, n, hint, old)
        assert policy.backoff(n, rand=new) == old_call_backoff(policy, n, old)

        cap = draw.choice((0.0, 10.0, 60.0, 120.0))
        rate = RATE_LIMITED.__class__(**{**_fields(RATE_LIMITED), "hint_cap": cap})
        rate_hint = draw.choice((*hints, -1.0, math.inf, math.nan))
        assert rate.delay(n, rate_hint, rand=new) == old_rate_limited(n, rate_hint, cap, old)
        assert OUTAGE.delay(n, rand=new) == old_outage(n, old)
        # Both sides drew the same numbers: neither formula draws more than the other.
        assert new.random() == old.random()

        poll = PollPolicy(
            min_delay=draw.choice((0.5, 1.0, 5.0)),
            max_delay=draw.choice((5.0, 30.0, 100.0)),
            initial_delay=draw.choice((0.1, 2.0, 10.0)),
            growth=draw.choice((1.0, 1.5, 2.0)),
        )
        before = new.getstate()
        assert poll_backoff(poll).delay(n, rand=new) == old_failed_poll(poll, n)
        assert new.getstate() == before  # no jitter: nothing drawn


def _fields(backoff: object) -> dict[str, object]:
    import attrs

    return attrs.asdict(backoff)  # type: ignore[arg-type]


def old_judge(
    error: BaseException,
    count: int,
    seen: int,
    answers: int,
    policy: RetryPolicy,
    rand: random.Random,
    *,
    submitting: bool,
) -> tuple[str, bool, int, int, float]:
    """Judge.judge's decision before the merge, its side effects returned: (what follows,
    gate.unreachable called, rounds.count, rounds.answers_seen, the wait)."""
    fault = blame(error, submitting=submitting)
    if fault is Blame.RUN:
        return "stop", False, count, seen, 0.0
    if fault is not Blame.TRANSIENT:
        return "end", False, count, seen, 0.0
    unreachable = is_outage(error)
    if answers != seen:
        seen = answers
        count += 1
        if count > 5:
            return "exhausted", unreachable, count, seen, 0.0
    return "retry", unreachable, count, seen, old_call_backoff(policy, max(count, 1), rand)


@pytest.mark.parametrize("seed", range(10))
def test_decide_agrees_with_the_judge(seed: int) -> None:
    from novita_async._failures import MAX_JOB_ROUNDS, Action, Rounds, decide

    draw = random.Random(seed)
    policy = RetryPolicy(backoff_base=draw.choice((0.01, 0.5)), backoff_max=8.0)
    for _ in range(300):
        error = draw.choice(ERRORS)
        if isinstance(error, BudgetReachedError | OutageError | KeyboardInterrupt):
            continue  # never judged: see the first test
        submitting = draw.random() < 0.5
        count, seen, answers = draw.randint(0, 6), draw.randint(-1, 3), draw.randint(0, 3)
        old, new = random.Random(seed), random.Random(seed)
        what, unreachable, old_count, old_seen, wait = old_judge(
            error, count, seen, answers, policy, old, submitting=submitting
        )
        nxt = decide(
            error,
            step=Step.SUBMIT if submitting else Step.OTHER,
            rounds=Rounds(count, seen),
            answers=answers,
            policy=policy,
            rand=new,
        )
        assert (nxt.pause is Pause.EVERYTHING) is unreachable
        if what == "stop":
            assert nxt.action is Action.STOP_RUN
        elif what == "end":
            assert (nxt.action, nxt.record) == (Action.END_JOB, error)
        elif what == "exhausted":
            assert nxt.action is Action.END_JOB
            assert isinstance(nxt.record, RetriesExhaustedError)
            assert (nxt.record.rounds, nxt.record.last) == (MAX_JOB_ROUNDS, error)
        else:
            assert nxt.action is Action.RETRY and nxt.wait == wait
            new_count, new_seen = (nxt.round, answers) if nxt.counted else (count, seen)
            assert (new_count, new_seen) == (old_count, old_seen)
