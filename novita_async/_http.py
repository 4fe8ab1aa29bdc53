"""One logical HTTP call: its session, its attempts, its errors and events; for an image, the
file it streams to and the fresh URLs an expired signed URL needs (:class:`Renewal`: a second
budget in the call's one retry loop, :meth:`Transport._attempts`).

An observer (``on_event=``) runs synchronously in the calling task; what it raises is logged and
swallowed: a failing observer must never lose the answer to a paid submission. Logs and events
carry the method, the route and the URL without its query string, never headers; no credential
ever reaches an image or asset host. An image is written whole or not at all (not fsynced), hashed
as it arrives; a short body is an :class:`APIConnectionError`, one that is no image an
:class:`InvalidResponseError`, a failed file operation a :class:`LocalIOError` (never retried).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import attrs
import yarl
from aiohttp.abc import AbstractStreamWriter

from ._config import ClientConfig, redact_url, scrub
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    SubmitOutcomeUnknownError,
    ValidationError,
    status_error,
)
from ._failures import FailureKind, RetryPolicy, attempt_may_repeat, parse_retry_after
from ._files import local_io, sniff_content_type, stream_to_file, write_atomically
from ._models import ResultImage, TaskResult

__all__ = ["ClientEvent", "Downloaded", "EventKind", "Renewal", "Transport"]

T = TypeVar("T")

logger = logging.getLogger("novita_async")

CHUNK_SIZE = 256 * 1024
BUFFER_LIMIT = 1024 * 1024
INLINE_LIMIT = 256 * 1024
# A request body with more text than this is serialized in a worker thread: a v3 task's inline
# base64 images (tens of MB) take hundreds of milliseconds to dump, which would stall every call.
THREAD_SERIALIZE_CHARS = 256 * 1024
_MAX_ERROR_BODY = 2000
_ERROR_PREFIX = 4096
_SNIFF_BYTES = 16
_MAX_REDIRECTS = 5
# What an S3-style object store answers for a presigned URL past its lifetime.
_EXPIRED_MARKERS = (b"Request has expired", b"<Code>AccessDenied</Code>")
_EXTENSION = re.compile(r"^[a-z0-9]{1,5}$")

# --- events ---------------------------------------------------------------------------------------


class EventKind(enum.StrEnum):
    REQUEST = "request"
    """An attempt is about to be sent."""
    RESPONSE = "response"
    """An answer's status line arrived (any status)."""
    RETRY = "retry"
    """An attempt failed and the call will be retried after ``delay`` seconds."""
    ERROR = "error"
    """The call failed for good; ``error`` holds the error's reason tag."""


@attrs.frozen
class ClientEvent:
    """Something that happened to one call. ``url`` never carries a query string."""

    kind: EventKind
    method: str
    route: str
    """What the call was for: ``upload``, ``submit``, ``result``, ``models`` or ``image``."""
    url: str
    attempt: int
    """1 for the first try."""
    elapsed: float
    """Seconds since the call's first attempt began."""
    status: int | None = None
    error: str | None = None
    delay: float | None = None


EventHook = Callable[[ClientEvent], object]

# The events a call's own observer hears; the client's observer hears every event.
_CALL_HOOK_KINDS = frozenset({EventKind.RETRY, EventKind.ERROR})


# --- errors ---------------------------------------------------------------------------------------

# What an attempt can raise that means "the network failed".
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
E = TypeVar("E", bound=APIError)


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
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(body)
    if isinstance(data, Mapping):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            fields["code"] = int(data["code"])
        for name in ("reason", "message"):
            if isinstance(value := data.get(name), str):
                fields[name] = scrub(value, secret)
        if isinstance(metadata := data.get("metadata"), Mapping):
            fields["metadata"] = {str(k): scrub(str(v), secret) for k, v in metadata.items()}
    return status_error(
        status, body=text, method=method, url=url, retry_after=retry_after, **fields
    )


# --- one call -------------------------------------------------------------------------------------


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
    redacted: str | None = None

    def after(
        self, error: APIError, kind: FailureKind, cause: BaseException | None = None
    ) -> float:
        """The delay before the next attempt; raises the call's error if there is none."""
        self.maybe_created |= self.creates_task and kind is FailureKind.ANSWER_LOST
        status = error.status if isinstance(error, APIStatusError) else None
        attempt = self.attempt
        if attempt_may_repeat(
            self.policy, kind, attempt=attempt, status=status, creates_task=self.creates_task
        ):
            delay = self.policy.delay(attempt, getattr(error, "retry_after", None))
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
        raise error from cause

    def network_failure(self, exc: BaseException, secret: str) -> tuple[APIError, FailureKind]:
        """Our error for an aiohttp / OS error, and how far the request got."""
        sent = not isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError)
        kind = FailureKind.ANSWER_LOST if sent else FailureKind.NOT_SENT
        if isinstance(exc, TimeoutError):
            what = "timed out waiting for the answer" if sent else "timed out connecting"
            return self.error(APITimeoutError, what), kind
        detail = scrub(str(exc) or type(exc).__name__, secret)
        what = "connection lost" if sent else "cannot connect"
        return self.error(APIConnectionError, f"{what}: {detail}"), kind

    def error(self, error_type: type[E], what: str) -> E:
        """An error of this call: ``what``, then its method and its URL as logs show it."""
        return error_type(f"{what} ({self.method} {self.url})", method=self.method, url=self.url)

    @property
    def url(self) -> str:
        """The URL as logs and errors show it, redacted only when first needed."""
        if self.redacted is None:
            self.redacted = redact_url(self.raw_url)
        return self.redacted

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
        for hook in (self.hook, call_hook):
            try:
                if hook is not None:
                    hook(event)
            except Exception:
                logger.exception("on_event hook raised on a %s event; ignored", kind)


@attrs.frozen
class Downloaded:
    """An image as written: its path, its size in bytes and its SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


class Transport:
    """Sends the calls of one client, safe to share. The caller's session (never closed here)
    carries every request, unless it adds credentials of its own and the request must carry none
    (an asset or image URL): those, and all when the caller gave none, go on ``own`` (ours)."""

    def __init__(
        self, config: ClientConfig, user: aiohttp.ClientSession | None, on_event: EventHook | None
    ) -> None:
        self._config = config
        self._user = user
        self._on_event = on_event
        self._api_timeout = config.timeouts.for_api()
        self._download_timeout = config.timeouts.for_download()
        self.own: aiohttp.ClientSession | None = None
        self.closed = False

    def _session_for(self, credentials: bool) -> aiohttp.ClientSession:
        """The session for a request that carries our key (``credentials``) or must carry none."""
        user = self._user
        if user is not None and (
            credentials or (user.auth is None and "Authorization" not in user.headers)
        ):
            return user
        if self.closed:
            raise RuntimeError("this NovitaClient is closed")
        # No await between the check and the assignment: concurrent first calls open one session.
        if self.own is None:
            self.own = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._config.max_connections),
                # No cookies and no default headers: credentials are added per request, per origin.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self.own

    async def aclose(self) -> None:
        """Close the session opened here (never the caller's), even when being cancelled."""
        self.closed = True
        own, self.own = self.own, None
        if own is not None:
            with anyio.CancelScope(shield=True):
                await own.close()

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
        policy = retry or self._config.retry
        call = _Call(self._on_event, method, route, url, policy, creates_task, on_event)
        # Serialized once for all the attempts: a retry resends the same bytes.
        content: bytes | None = data
        if json_body is not None:
            content = await _serialize(json_body)
            sent_headers.setdefault("Content-Type", "application/json")

        async def attempt() -> Any:
            async with self._session_for(auth).request(
                method,
                url,
                data=None if content is None else _Body(content, sent_headers.get("Content-Type")),
                headers=sent_headers,
                params=params,
                timeout=self._api_timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                call.event(EventKind.RESPONSE, call.attempt, status=status)
                body = await response.read()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if not 200 <= status < 300:
                raise error_from_answer(
                    status,
                    body,
                    method=method,
                    url=call.url,
                    secret=secret,
                    retry_after=retry_after,
                )
            try:
                return json.loads(body)
            except ValueError as exc:
                raise call.error(InvalidResponseError, f"{status} answer is not JSON") from exc

        return await self._attempts(call, attempt)

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
        renew: Renew | None = None,
    ) -> Downloaded:
        """Stream ``url`` to ``dest`` (temp name, then replace), retried per policy; no auth.
        An expired URL raises :class:`ImageURLExpiredError`, unless ``renew`` gives a fresh one."""
        if not url[:8].lower().startswith(("http://", "https://")):  # file:///etc/passwd...
            raise ValidationError("image_url", url.split("?", 1)[0], "must be an http(s) URL")
        call = _Call(
            self._on_event, "GET", "image", url, retry or self._config.retry, False, on_event
        )

        async def attempt() -> Downloaded:
            # The URL is signed as it is: keep its encoding byte for byte (encoded=True).
            async with self._session_for(False).get(
                yarl.URL(str(call.raw_url), encoded=True),
                timeout=self._download_timeout,
                allow_redirects=True,
                max_redirects=_MAX_REDIRECTS,
            ) as response:
                call.event(EventKind.RESPONSE, call.attempt, status=response.status)
                if response.status != 200:
                    raise await _answer_error(response, call)
                return await _write_body(response, dest, call)

        return await self._attempts(call, attempt, renew)

    async def _attempts(
        self, call: _Call, attempt: Callable[[], Awaitable[T]], renew: Renew | None = None
    ) -> T:
        """The retry loop: ``attempt()`` until it succeeds or the call's budgets say stop."""
        while True:
            call.event(EventKind.REQUEST, call.attempt)
            try:
                return await attempt()
            except NETWORK_ERRORS as exc:
                error, kind = call.network_failure(exc, self._config.api_key)
                await anyio.sleep(call.after(error, kind, exc))
            except APIStatusError as error:
                await anyio.sleep(call.after(error, FailureKind.STATUS))
            except APIConnectionError as truncated:
                await anyio.sleep(call.after(truncated, FailureKind.ANSWER_LOST))
            except (APIError, LocalIOError) as error:  # a full disk is not retried either
                call.event(EventKind.ERROR, call.attempt, error=error.reason)
                if renew is None or not isinstance(error, ImageURLExpiredError):
                    raise
                await renew(call, error)


async def _answer_error(response: aiohttp.ClientResponse, call: _Call) -> APIError:
    try:
        body = await response.content.read(_ERROR_PREFIX)
    except aiohttp.ClientError:
        body = b""
    if response.status == 403 and any(marker in body for marker in _EXPIRED_MARKERS):
        return call.error(
            ImageURLExpiredError, "the image URL has expired; fetch the task result again"
        )
    # An object store's error body is no API error: its status names it (HTTP_503, ...).
    return status_error(
        response.status,
        body=body.decode("utf-8", "replace"),
        method="GET",
        url=call.url,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


# --- request bodies -------------------------------------------------------------------------------


class _Body(aiohttp.Payload):
    """A request body held in memory, written in chunks. aiohttp's own payloads for bytes and JSON
    warn (``ResourceWarning``) above 1 MiB, and its ``BytesIO`` payload copies the bytes: this one
    sends the caller's bytes as they are, with their length as Content-Length. A fresh one per
    attempt: a payload is aiohttp's state for one request."""

    _value: bytes

    def __init__(self, value: bytes, content_type: str | None) -> None:
        super().__init__(value, content_type=content_type or "application/octet-stream")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._value

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        # Chunked so that the writer's drain runs between them, as for any streamed body.
        for start in range(0, len(view), CHUNK_SIZE):
            await writer.write(view[start : start + CHUNK_SIZE])


def _text_size(value: Any, most: int) -> int:
    """The characters of the strings in a JSON value, counted until more than ``most``."""
    stack, total = [value], 0
    while stack and total <= most:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


async def _serialize(body: Any) -> bytes:
    """The JSON of a request body, as aiohttp would write it; a large one in a worker thread."""
    if _text_size(body, THREAD_SERIALIZE_CHARS) > THREAD_SERIALIZE_CHARS:
        return await anyio.to_thread.run_sync(_dumps, body)
    return _dumps(body)


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- expired image URLs ---------------------------------------------------------------------------


@attrs.define(eq=False)
class Renewal:
    """Fresh URLs for the images of one result, ``left`` times at most for them all;
    ``fetch_result(task_id)`` fetches the task's result again."""

    _latest: TaskResult
    _left: int
    _fetch_result: Callable[[str], Awaitable[TaskResult]]
    _lock: anyio.Lock | None = attrs.field(default=None, init=False)  # made on the first expiry

    async def __call__(self, index: int, call: _Call, expired: ImageURLExpiredError) -> None:
        """Point ``call`` (image ``index``'s download) at a fresh URL, or re-raise ``expired``."""
        task_id = self._latest.task_id
        self._lock = self._lock or anyio.Lock()
        async with self._lock:
            # Another image may have renewed the URLs already while this one waited.
            if self._latest.images[index].image_url == call.raw_url:
                if self._left <= 0:
                    raise expired
                self._left -= 1
                logger.info("image %d of task %s expired; fetching fresh URLs", index, task_id)
                call.event(EventKind.RETRY, call.attempt, error=expired.reason, delay=0.0)
                renewed = await self._fetch_result(task_id)
                if len(renewed.images) != len(self._latest.images):
                    raise InvalidResponseError(
                        f"task {task_id} answered {len(self._latest.images)} images, "
                        f"then {len(renewed.images)}"
                    ) from expired
                self._latest = renewed
            fresh = self._latest.images[index].image_url
            call.raw_url, call.redacted, call.attempt = fresh, None, 1  # its attempts anew


Renew = Callable[[_Call, ImageURLExpiredError], Awaitable[None]]  # e.g. a Renewal, partial'd


def image_extension(image: ResultImage) -> str:
    kind = image.image_type.lower()
    if _EXTENSION.match(kind):
        return kind
    suffix = Path(yarl.URL(image.image_url).path).suffix.lstrip(".").lower()
    return suffix if _EXTENSION.match(suffix) else "png"


# --- an image to its file -------------------------------------------------------------------------


async def _write_body(response: aiohttp.ClientResponse, dest: Path, call: _Call) -> Downloaded:
    # Without a Content-Encoding, Content-Length is the exact number of bytes we must receive.
    expected = None if response.headers.get("Content-Encoding") else response.content_length
    chunks = response.content.iter_chunked(CHUNK_SIZE)
    # Most images fit in BUFFER_LIMIT: checked, then written and renamed by one worker-thread call
    # (aiofiles costs a thread hop per operation: ~0.3 ms more CPU per image in a batch). A larger
    # body streams to its file chunk by chunk: memory stays bounded by BUFFER_LIMIT + CHUNK_SIZE.
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= BUFFER_LIMIT:
            break
    else:
        _check_length(len(head), expected, call)
        _check_image(head, call)
        if len(head) <= INLINE_LIMIT:
            # Measured: handing a small file to a worker thread costs more CPU than writing it
            # (BENCHMARKS.md's throughput scenario, one image per job).
            digest = _write_whole(dest, head)
        else:
            # A worker-thread call runs to its end even if its caller is cancelled: never half-done.
            digest = await anyio.to_thread.run_sync(_write_whole, dest, head)
        return Downloaded(dest, len(head), digest)
    _check_image(head, call)
    hasher = hashlib.sha256(head)

    async def body() -> AsyncGenerator[bytes | bytearray, None]:
        # Hashed as it arrives; one byte short is an APIConnectionError before the file is whole.
        received = len(head)
        yield head
        async for chunk in chunks:
            hasher.update(chunk)
            received += len(chunk)
            yield chunk
        _check_length(received, expected, call)

    # Closed here if the file fails first, not left to the garbage collector.
    async with contextlib.aclosing(body()) as streamed:
        written = await stream_to_file(streamed, dest, doing=f"writing image {dest.name}")
    return Downloaded(dest, written, hasher.hexdigest())


def _write_whole(dest: Path, data: bytearray) -> str:
    try:
        write_atomically(dest, (data,), fsync=False)
    except LocalIOError as error:
        if error.errno != errno.ENOENT:
            raise
        # The folder does not exist yet: made only then, not checked for every image.
        with local_io(f"writing image {dest.name}", dest):
            os.makedirs(dest.parent, exist_ok=True)
        write_atomically(dest, (data,), fsync=False)
    return hashlib.sha256(data).hexdigest()


def _check_length(written: int, expected: int | None, call: _Call) -> None:
    if expected is not None and written != expected:
        raise call.error(
            APIConnectionError, f"image body truncated: got {written} of {expected} bytes"
        )


def _check_image(head: bytes | bytearray, call: _Call) -> None:
    # A gateway or captive portal can answer 200 with an HTML page: never save that as an image.
    if sniff_content_type(bytes(head[:_SNIFF_BYTES])) is None:
        raise call.error(
            InvalidResponseError,
            "the image URL answered with something that is not a PNG, JPEG or WebP image",
        )
