"""Whose fault a failure is: the one place a batch run decides what an error means.

======================  ==========================================  ===============================
blame                   errors                                      what the runner does
======================  ==========================================  ===============================
``JOB``                 the request refused for this job's content  the job is recorded failed; a
                        (400 other than the account's), the task    rerun leaves it alone unless
                        ended ``TASK_STATUS_FAILED``, an input       ``retry_failed``
                        missing or not an image, a name too long,
                        ``TASK_NOT_FOUND`` for a journaled task,
                        an answer about it that does not parse
                        (but 400 ``INVALID_REQUEST_BODY`` to a      (first: the files uploaded
                        body naming asset ids from the cache:       again, the body sent once
                        :func:`may_be_unknown_asset`)               more; see ``_flow``)
``RUN``                 the key or the account (401, 403, 400        the run stops submitting, lets
                        ``BILLING_BALANCE_NOT_ENOUGH`` /             the tasks paid for finish where
                        ``MISSING_API_KEY``), the endpoint (404      it can, records nothing against
                        ``API_NOT_FOUND``), this machine (disk       the jobs it did not finish, and
                        full, read-only, permission denied), the     exits with status 3
                        output's object store (``StorageError``,
                        after the store client's own retries)
``TRANSIENT``           connection refused or reset, DNS, timeouts,  never a job failure: the run
                        5xx, 429, image URLs that keep expiring     pauses and tries again; a job
                                                                    that alone keeps failing is
                                                                    retried a few rounds, then
                                                                    ends ``RETRIES_EXHAUSTED``,
                                                                    which a plain rerun retries
``UNKNOWN_OUTCOME``     a submission sent whose answer was lost      recorded
                                                                    ``SUBMIT_OUTCOME_UNKNOWN``;
                                                                    never resent by default
======================  ==========================================  ===============================
"""

from __future__ import annotations

import enum

from .._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    NotFoundError,
    NovitaError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StorageError,
    SubmitOutcomeUnknownError,
)

__all__ = [
    "RETRYABLE_REASONS",
    "Blame",
    "BudgetReachedError",
    "RetriesExhaustedError",
    "blame",
    "is_outage",
    "may_be_unknown_asset",
    "run_stop_advice",
]


class Blame(enum.Enum):
    """Whose fault a failure is, which decides what the runner does with it."""

    JOB = "job"
    RUN = "run"
    TRANSIENT = "transient"
    UNKNOWN_OUTCOME = "unknown_outcome"


# 400s that are about the account, not the request's content.
_ACCOUNT_REASONS = frozenset({"BILLING_BALANCE_NOT_ENOUGH", "MISSING_API_KEY"})
_LOCAL_JOB_REASONS = frozenset({"NAME_TOO_LONG"})

RETRYABLE_REASONS = frozenset({"RETRIES_EXHAUSTED"})
"""Failure reasons a plain rerun tries again: the job was not at fault."""


class RetriesExhaustedError(NovitaError):
    """A job's transient failures outlasted its rounds while the service answered other jobs."""

    def __init__(self, rounds: int, last: BaseException) -> None:
        self.rounds = rounds
        self.last = last
        super().__init__(
            f"gave up after {rounds} rounds of retries (last: {getattr(last, 'reason', '')} "
            f"{last}); rerun to try again"
        )

    @property
    def reason(self) -> str:
        return "RETRIES_EXHAUSTED"


class BudgetReachedError(NovitaError):
    """The run submitted the ``max_tasks`` new tasks it was allowed."""

    def __init__(self, max_tasks: int) -> None:
        self.max_tasks = max_tasks
        super().__init__(f"the run's budget of {max_tasks} new tasks is spent")

    @property
    def reason(self) -> str:
        return "BUDGET_REACHED"


def is_outage(error: BaseException) -> bool:
    """The service looks unreachable or failing (rather than answering): the run should pause."""
    return isinstance(error, APIConnectionError | ServerError)


def blame(error: BaseException, *, submitting: bool = False) -> Blame:
    """Whose fault ``error`` is. ``submitting``: it was raised by a task submission."""
    if isinstance(error, SubmitOutcomeUnknownError):
        return Blame.UNKNOWN_OUTCOME
    if isinstance(error, InvalidResponseError):
        # A 2xx answer to a submission without a task id: a task may exist all the same.
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
        # 408 and other statuses the retry table treats as passing.
        return Blame.TRANSIENT if error.status in (408, 409, 425) else Blame.JOB
    if isinstance(error, LocalIOError):
        return Blame.JOB if error.reason in _LOCAL_JOB_REASONS else Blame.RUN
    if isinstance(error, StorageError):
        return Blame.RUN
    return Blame.JOB


def may_be_unknown_asset(error: BaseException) -> bool:
    """A refusal that may mean the body named an asset the service no longer knows.

    The service documents no asset lifetime and no error code of its own for an unknown asset,
    so nothing in the answer (its message, its metadata) can be relied on to say so: any 400
    ``INVALID_REQUEST_BODY`` may. Other reasons (``ILLEGAL_PROMPT``, ``IMAGE_NO_FACE_DETECTED``,
    ...) say what is wrong, and it is not the asset's age."""
    return isinstance(error, BadRequestError) and error.reason == "INVALID_REQUEST_BODY"


def run_stop_advice(error: BaseException) -> tuple[str, str]:
    """What happened and what the user should do, for a run-level failure's one closing line."""
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
