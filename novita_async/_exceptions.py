"""The exceptions this package raises.

Everything derives from :class:`NovitaError`, so ``except NovitaError`` catches all of it::

    NovitaError
    ├── ValidationError (also ValueError)        bad input, raised before anything is sent
    ├── ConfigurationError                       missing API key, bad URL, bad option
    ├── LocalIOError                             this machine's file system refused a write or read
    ├── StorageError                             the object store of an OUT URL (s3://, gs://, az://)
    ├── RunStoppedError                          a batch run stopped for a run-level cause (exit 3)
    ├── BudgetReachedError                       a run's max_tasks spent (a RunStoppedError's cause)
    ├── OutageError                              the service down past max_outage (a cause too)
    ├── RetriesExhaustedError                    a job's transient failures outlasted its rounds
    ├── APIError                                 the service or the network failed a call
    │   ├── APIStatusError                       non-2xx: status, code, reason, message, metadata
    │   │   ├── BadRequestError                  400
    │   │   ├── AuthenticationError              401
    │   │   ├── PermissionDeniedError            403
    │   │   ├── NotFoundError                    404
    │   │   ├── RateLimitError                   429 (retry_after: the server's hint, s)
    │   │   └── ServerError                      5xx
    │   ├── ImageURLExpiredError                 an image URL answered 403 "Request has expired"
    │   ├── APIConnectionError                   no answer: refused, reset, truncated body
    │   │   ├── APITimeoutError                  no answer in time
    │   │   └── SubmitOutcomeUnknownError        a submit whose answer was lost: a task may exist
    │   └── InvalidResponseError                 a 2xx answer that is not the documented shape
    └── TaskError                                a task, not a call, went wrong
        ├── TaskFailedError                      the task ended TASK_STATUS_FAILED (task_id, reason)
        └── TaskTimeoutError                     the task did not finish before the deadline

No message, ``repr`` or attribute of these exceptions holds the API key: messages are built from the
answer's body and a redacted URL (no query string), never from request headers.
"""

from __future__ import annotations

import errno as _errno
import re
from collections.abc import Mapping
from typing import Any


class NovitaError(Exception):
    """Base class of every error this package raises."""

    _reason = ""  # a subclass's fixed tag, or one its __init__ sets

    @property
    def reason(self) -> str:
        """A short UPPER_SNAKE tag for the error, used in results and summaries."""
        return self._reason or type(self).__name__

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its attributes, not by __init__ again: crosses processes whole (a Ray
        # shard's error reaches the driver with its reason and message).
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[NovitaError], args: tuple[Any, ...]) -> NovitaError:
    return cls.__new__(cls, *args)


def reason_of(error: BaseException) -> str:
    """``error``'s reason tag, or its class's name for an error that has none."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else type(error).__name__


class ValidationError(NovitaError, ValueError):
    """A value is outside what the API accepts; raised before any request is sent."""

    _reason = "VALIDATION_ERROR"

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={_shown(value)} is not allowed: {allowed}")


_BASE64 = re.compile(r"(?:data:[^,]{0,100},)?[A-Za-z0-9+/\r\n]*=*")


def _shown(value: object) -> str:
    """A value as an error shows it: short, and never an image's content (bytes or base64)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{memoryview(value).nbytes} bytes>"
    if isinstance(value, str) and len(value) > 80 and _BASE64.fullmatch(value[:4096]):
        return f"<{len(value)} characters of base64>"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


class ConfigurationError(NovitaError):
    """The client was set up wrongly (no API key, malformed URL, bad option)."""


class LocalIOError(NovitaError):
    """A file on this machine could not be written or read (never a network error): ``reason``
    is ``DISK_FULL``, ``READ_ONLY_FILE_SYSTEM``, ``PERMISSION_DENIED``, ``NAME_TOO_LONG`` or
    ``LOCAL_IO_ERROR``; ``errno`` and ``path`` are the operating system's."""

    def __init__(self, message: str, *, errno: int | None = None, path: str = "") -> None:
        self.errno = errno
        self.path = path
        self._reason = _LOCAL_REASONS.get(errno or 0, "LOCAL_IO_ERROR")
        super().__init__(message)

    @classmethod
    def from_os_error(cls, error: OSError, doing: str, path: str | None = None) -> LocalIOError:
        """Describe ``error``, raised while ``doing`` (e.g. "writing an image") at ``path``."""
        where = path if path is not None else (error.filename or "")
        what = error.strerror or str(error)
        return cls(f"{doing} failed: {what} ({where})", errno=error.errno, path=str(where))


_LOCAL_REASONS = {
    _errno.ENOSPC: "DISK_FULL",
    _errno.EDQUOT: "DISK_FULL",
    _errno.EROFS: "READ_ONLY_FILE_SYSTEM",
    _errno.EACCES: "PERMISSION_DENIED",
    _errno.EPERM: "PERMISSION_DENIED",
    _errno.ENAMETOOLONG: "NAME_TOO_LONG",
}


class StorageError(NovitaError):
    """The object store holding a run's output (``s3://``, ``gs://``, ``az://``) refused or failed
    an operation, after the store client's own retries: run-level, never a job's failure.

    ``reason`` is ``STORAGE_NOT_FOUND``, ``STORAGE_PERMISSION`` (credentials missing or refused),
    ``STORAGE_CONFLICT`` (an object that must be new exists: another run writes the same journal),
    ``STORAGE_CONNECTION`` (the store unreachable) or ``STORAGE_ERROR``. Messages name the object
    by its URL and never hold credentials.
    """

    def __init__(self, message: str, *, reason: str = "STORAGE_ERROR", url: str = "") -> None:
        self.url = url
        self._reason = reason
        super().__init__(message)


class RunStoppedError(NovitaError):
    """A batch run stopped because of something that belongs to the run, not to a job: the key,
    the account, the endpoint, this machine, an outage longer than the run's budget.

    Nothing was recorded against the jobs the run did not finish: fix ``cause`` and run again.
    ``what`` says what happened, ``fix`` what to do; ``str()`` is the one line to show a user;
    ``reason`` is the cause's. ``summary`` is the run's :class:`BatchSummary`.
    """

    def __init__(
        self,
        cause: BaseException,
        *,
        what: str,
        fix: str,
        tasks_submitted: int,
        summary: Any = None,
    ) -> None:
        self.cause = cause
        self.what = what
        self.fix = fix
        self.tasks_submitted = tasks_submitted
        self.summary = summary
        self._reason = reason_of(cause)
        status = getattr(cause, "status", None)
        tag = " ".join(str(part) for part in (status, self._reason) if part)
        tasks = "1 task" if tasks_submitted == 1 else f"{tasks_submitted} tasks"
        super().__init__(f"{what} ({tag}): {fix}; {tasks} submitted; rerun to continue")


class RetriesExhaustedError(NovitaError):
    """A job's transient failures outlasted its rounds while the service answered other jobs."""

    _reason = "RETRIES_EXHAUSTED"

    def __init__(self, rounds: int, last: BaseException) -> None:
        self.rounds = rounds
        self.last = last
        super().__init__(
            f"gave up after {rounds} rounds of retries (last: {getattr(last, 'reason', '')} "
            f"{last}); rerun to try again"
        )


class BudgetReachedError(NovitaError):
    """The run submitted the ``max_tasks`` new tasks it was allowed."""

    _reason = "BUDGET_REACHED"

    def __init__(self, max_tasks: int) -> None:
        self.max_tasks = max_tasks
        super().__init__(f"the run's budget of {max_tasks} new tasks is spent")


class OutageError(NovitaError):
    """The service stayed unreachable for longer than the run's ``max_outage``."""

    _reason = "OUTAGE"

    def __init__(self, seconds: float, last: BaseException) -> None:
        self.seconds = seconds
        self.last = last
        super().__init__(f"the API has been unreachable for {seconds:.0f}s (last error: {last})")


class APIError(NovitaError):
    """A call to the service failed."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        # `url` is always redacted (no query string) by the caller.
        self.method = method
        self.url = url
        super().__init__(message)


class APIStatusError(APIError):
    """The service answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        *,
        code: int | None = None,
        reason: str = "",
        message: str = "",
        metadata: Mapping[str, Any] | None = None,
        body: str = "",
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self._reason = reason or f"HTTP_{status}"
        self.api_message = message
        self.metadata = dict(metadata or {})
        self.body = body
        self.retry_after = retry_after
        summary = f"{status} {reason}".strip()
        detail = message or body[:200].strip()
        where = f" ({method} {url})" if url else ""
        super().__init__(
            f"{summary}: {detail}{where}" if detail else summary + where, method=method, url=url
        )


class BadRequestError(APIStatusError):
    """400: the service rejected the request."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this (INVALID_API_KEY, BILLING_AUTH_FAILED, ...)."""


class NotFoundError(APIStatusError):
    """404: no such route or task."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` holds the server's hint in seconds, if any."""


class ServerError(APIStatusError):
    """5xx: the service or a gateway in front of it failed."""


class ImageURLExpiredError(APIError):
    """A result image URL is past its lifetime; fetch the task result again for a fresh one."""

    _reason = "IMAGE_URL_EXPIRED"


class APIConnectionError(APIError):
    """No (complete) answer: connection refused or reset, or a truncated body."""

    _reason = "CONNECTION_ERROR"


class APITimeoutError(APIConnectionError):
    """No answer in time."""

    _reason = "TIMEOUT"


class SubmitOutcomeUnknownError(APIConnectionError):
    """A task submission was sent but its answer was lost.

    The service may or may not have created (and will bill) the task, and the API has no way to ask.
    The client does not resubmit on its own; see the README's "Retries" section.
    """

    _reason = "SUBMIT_OUTCOME_UNKNOWN"


class InvalidResponseError(APIError):
    """A 2xx answer that does not have the documented shape."""

    _reason = "INVALID_RESPONSE"


class TaskError(NovitaError):
    """A generation task went wrong."""

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(message)


class TaskFailedError(TaskError):
    """The task ended with TASK_STATUS_FAILED."""

    _reason = "TASK_FAILED"

    def __init__(self, task_id: str, task_reason: str) -> None:
        self.task_reason = task_reason
        super().__init__(task_id, f"task {task_id} failed: {task_reason or 'no reason given'}")


class TaskTimeoutError(TaskError):
    """The task had not finished when the caller's deadline passed."""

    _reason = "TASK_TIMEOUT"

    def __init__(self, task_id: str, waited: float, last_status: str = "") -> None:
        self.waited = waited
        self.last_status = last_status
        detail = f" (last status {last_status})" if last_status else ""
        super().__init__(task_id, f"task {task_id} not finished after {waited:.1f}s{detail}")


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def status_error(status: int, **kwargs: Any) -> APIStatusError:
    """The :class:`APIStatusError` subclass for ``status``."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(status, **kwargs)
