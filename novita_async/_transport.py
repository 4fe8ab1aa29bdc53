"""One logical HTTP call: attempts, retries, error mapping, events and log lines.

Each call (:meth:`Transport.call_json`, :meth:`Transport.download`) makes up to
``RetryPolicy.attempts`` attempts in the one loop of :meth:`Transport._attempts`. An attempt reports
how far it got by raising :class:`AttemptFailed` with a :class:`~._retry.FailureKind`;
:meth:`_Call.after` decides, with :func:`~._retry.should_retry`, whether to wait and try again or
to raise. This is the package's only retry loop: callers that need a different budget pass their
own :class:`~._retry.RetryPolicy` for the call. Log lines and events carry the method, the route
name and the URL without its query string, never headers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import attrs
import yarl

from . import _download
from ._config import ClientConfig
from ._events import ClientEvent, EventHook, EventKind, emit
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    InvalidResponseError,
    LocalIOError,
    SubmitOutcomeUnknownError,
    status_error,
)
from ._redact import redact_url, scrub
from ._retry import FailureKind, RetryPolicy, parse_retry_after, should_retry

__all__ = ["AttemptFailed", "Transport"]

# The events a call's own observer hears; the client's observer hears every event.
_CALL_HOOK_KINDS = frozenset({EventKind.RETRY, EventKind.ERROR})

T = TypeVar("T")

logger = logging.getLogger("novita_async")

_MAX_ERROR_BODY = 2000


class AttemptFailed(Exception):
    """Internal: one attempt failed with ``error``; ``kind`` says whether repeating it is safe."""

    def __init__(self, error: APIError, kind: FailureKind) -> None:
        super().__init__(str(error))
        self.error = error
        self.kind = kind


@attrs.define
class _Call:
    """One logical call's state across its attempts."""

    hook: EventHook | None
    method: str
    route: str
    raw_url: yarl.URL | str
    policy: RetryPolicy
    creates_task: bool = False
    call_hook: EventHook | None = None
    """The call's own observer: it hears what changes the call's course (retries, its failure)."""
    started: float = attrs.field(factory=anyio.current_time)
    attempt: int = 1
    maybe_created: bool = False
    _shown_url: str | None = None

    def responded(self, status: int) -> None:
        self.event(EventKind.RESPONSE, self.attempt, status=status)

    def after(self, failure: AttemptFailed) -> float:
        """The delay before the next attempt; raises the call's error if there is none."""
        error, kind = failure.error, failure.kind
        self.maybe_created |= self.creates_task and kind is FailureKind.ANSWER_LOST
        status = error.status if isinstance(error, APIStatusError) else None
        attempt = self.attempt
        if should_retry(
            self.policy, kind, attempt=attempt, status=status, creates_task=self.creates_task
        ):
            retry_after = error.retry_after if isinstance(error, APIStatusError) else None
            delay = self.policy.delay(attempt, retry_after)
            self.event(EventKind.RETRY, attempt, status=status, error=error.reason, delay=delay)
            self.attempt += 1
            return delay
        if self.maybe_created:
            error = SubmitOutcomeUnknownError(
                f"a submission's answer was lost ({error}); a task may exist and be "
                "billed: look for it before submitting again",
                method=self.method,
                url=self.url,
            )
        self.event(EventKind.ERROR, attempt, status=status, error=error.reason)
        raise error from failure.__cause__

    def failed(self, error: APIError | LocalIOError) -> None:
        """An error no attempt can mend (raised by the caller after this)."""
        self.event(EventKind.ERROR, self.attempt, error=error.reason)

    @property
    def url(self) -> str:
        """The URL as logs and errors show it, redacted only when first needed."""
        if self._shown_url is None:
            self._shown_url = redact_url(self.raw_url)
        return self._shown_url

    def event(self, kind: EventKind, attempt: int, **fields: Any) -> None:
        level = logging.INFO if kind is EventKind.RETRY else logging.DEBUG
        logged = logger.isEnabledFor(level)
        call_hook = self.call_hook if kind in _CALL_HOOK_KINDS else None
        if self.hook is None and call_hook is None and not logged:
            return  # the hot path of a quiet client: nobody is listening
        elapsed = anyio.current_time() - self.started
        if logged:
            extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            logger.log(
                level, "%s %s %s %s attempt=%d elapsed=%.3fs %s",
                kind, self.route, self.method, self.url, attempt, elapsed, extra,
            )  # fmt: skip
        event = ClientEvent(kind, self.method, self.route, self.url, attempt, elapsed, **fields)
        emit(self.hook, event)
        emit(call_hook, event)


def connection_failure(
    exc: BaseException, *, method: str, url: str, secret: str
) -> tuple[APIError, FailureKind]:
    """Map an aiohttp / OS error to our error and how far the request got."""
    detail = scrub(str(exc) or type(exc).__name__, secret)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        msg = f"timed out connecting ({method} {url})"
        return APITimeoutError(msg, method=method, url=url), FailureKind.NOT_SENT
    if isinstance(exc, aiohttp.ClientConnectorError):
        msg = f"cannot connect: {detail} ({method} {url})"
        return APIConnectionError(msg, method=method, url=url), FailureKind.NOT_SENT
    if isinstance(exc, TimeoutError):
        msg = f"timed out waiting for the answer ({method} {url})"
        return APITimeoutError(msg, method=method, url=url), FailureKind.ANSWER_LOST
    msg = f"connection lost: {detail} ({method} {url})"
    return APIConnectionError(msg, method=method, url=url), FailureKind.ANSWER_LOST


# What an attempt can raise that means "the network failed", to be mapped by connection_failure.
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def error_from_answer(
    status: int,
    body: bytes,
    *,
    method: str,
    url: str,
    secret: str,
    retry_after: float | None = None,
) -> APIStatusError:
    """The status error for a non-2xx answer; a non-JSON body (an HTML 502) is kept as text."""
    text = scrub(body[:_MAX_ERROR_BODY].decode("utf-8", "replace"), secret)
    fields: dict[str, Any] = {}
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        code = data.get("code")
        try:
            fields["code"] = int(code) if code is not None else None
        except (TypeError, ValueError):
            fields["code"] = None
        for name in ("reason", "message"):
            value = data.get(name)
            fields[name] = scrub(value, secret) if isinstance(value, str) else ""
        metadata = data.get("metadata")
        if isinstance(metadata, Mapping):
            fields["metadata"] = {str(k): scrub(str(v), secret) for k, v in metadata.items()}
    return status_error(
        status, body=text, method=method, url=url, retry_after=retry_after, **fields
    )


class Transport:
    """Sends calls for one client; holds no per-request state, so it is safe to share."""

    def __init__(
        self,
        config: ClientConfig,
        session_for: Callable[[bool], aiohttp.ClientSession],
        on_event: EventHook | None,
    ) -> None:
        # session_for(True): a session for requests that carry our key; session_for(False): one
        # that adds no credentials of its own (for the asset host and image URLs).
        self._config = config
        self._session_for = session_for
        self._on_event = on_event
        self._api_timeout = config.timeouts.for_api()
        self._download_timeout = config.timeouts.for_download()

    async def call_json(
        self,
        method: str,
        route: str,
        url: yarl.URL,
        *,
        auth: bool,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        creates_task: bool = False,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
    ) -> Any:
        """One API call answered with JSON, retried per policy; returns the decoded body."""
        secret = self._config.api_key
        sent_headers = {"Accept": "application/json", **(headers or {})}
        if auth:
            sent_headers["Authorization"] = f"Bearer {secret}"
        call = self._call(method, route, url, retry, on_event, creates_task=creates_task)

        async def attempt() -> Any:
            try:
                async with self._session_for(auth).request(
                    method,
                    url,
                    json=json_body,
                    data=data,
                    headers=sent_headers,
                    params=params,
                    timeout=self._api_timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    call.responded(status)
                    body = await response.read()
                    retry_after = response.headers.get("Retry-After")
            except NETWORK_ERRORS as exc:
                error, kind = connection_failure(exc, method=method, url=call.url, secret=secret)
                raise AttemptFailed(error, kind) from exc
            if not 200 <= status < 300:
                error = error_from_answer(
                    status,
                    body,
                    method=method,
                    url=call.url,
                    secret=secret,
                    retry_after=parse_retry_after(retry_after),
                )
                raise AttemptFailed(error, FailureKind.STATUS)
            try:
                return json.loads(body)
            except ValueError as exc:
                raise InvalidResponseError(
                    f"{status} answer is not JSON ({method} {call.url})",
                    method=method,
                    url=call.url,
                ) from exc

        return await self._attempts(call, attempt)

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
    ) -> int:
        """Stream ``url`` to ``dest`` (temp name, then replace), retried per policy; no auth."""
        call = self._call("GET", "image", url, retry, on_event)

        async def attempt() -> int:
            try:
                return await _download.download_to_file(
                    self._session_for(False),
                    url,
                    dest,
                    client_timeout=self._download_timeout,
                    on_status=call.responded,
                    shown_url=call.url,
                )
            except APIStatusError as answered:
                raise AttemptFailed(answered, FailureKind.STATUS) from answered
            except APIConnectionError as truncated:
                raise AttemptFailed(truncated, FailureKind.ANSWER_LOST) from truncated
            except NETWORK_ERRORS as exc:
                error, kind = connection_failure(
                    exc, method="GET", url=call.url, secret=self._config.api_key
                )
                raise AttemptFailed(error, kind) from exc

        result: int = await self._attempts(call, attempt)
        return result

    def announce_retry(
        self, method: str, route: str, url: str, reason: str, on_event: EventHook | None
    ) -> None:
        """A RETRY event for a call repeated above this layer (an expired image URL renewed)."""
        self._call(method, route, url, None, on_event).event(
            EventKind.RETRY, 1, error=reason, delay=0.0
        )

    def _call(
        self,
        method: str,
        route: str,
        url: yarl.URL | str,
        retry: RetryPolicy | None,
        on_event: EventHook | None,
        *,
        creates_task: bool = False,
    ) -> _Call:
        policy = retry or self._config.retry
        return _Call(self._on_event, method, route, url, policy, creates_task, on_event)

    @staticmethod
    async def _attempts(call: _Call, attempt: Callable[[], Awaitable[T]]) -> T:
        """The retry loop: ``attempt()`` until it succeeds or the call's policy says stop."""
        while True:
            call.event(EventKind.REQUEST, call.attempt)
            try:
                return await attempt()
            except AttemptFailed as failure:
                await anyio.sleep(call.after(failure))
            except (APIError, LocalIOError) as error:  # a full disk is not retried either
                call.failed(error)
                raise
