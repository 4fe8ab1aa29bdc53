"""Receiving the service's webhooks: :class:`WebhookReceiver`.

The service POSTs an event to the URL a request named in ``extra.webhook.url`` when the task ends,
and retries (up to 5 times, 5 s timeout each) until it gets a 2xx answer. Webhooks are not signed,
so the receiver trusts nothing but what a stranger cannot know:

- the path carries a secret token (``/novita/<token>``, 256 random bits by default): any other path
  under the prefix is answered 404;
- an event counts only for a task id its owner registered (:meth:`WebhookReceiver.expect`), and
  only the first one per task: later ones (the service's retries, a forger's) are dropped.

Answers never wait for a consumer: :meth:`~WebhookReceiver.accept` records the event, wakes the
waiters and appends it to the bounded buffer of each :meth:`~WebhookReceiver.events` feed, all
without awaiting; the ``on_event`` callback runs on the event loop's next turn, after the answer.
Memory stays bounded: a task is forgotten once its event was handed over (or on
:meth:`~WebhookReceiver.forget`); the ids of the last few thousand ended tasks are kept to tell a
duplicate or late event from a forged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import anyio
import attrs
from aiohttp import web

from ._converter import structure
from ._exceptions import ConfigurationError, InvalidResponseError, ValidationError
from ._models import TaskResult
from ._redact import mask_secret
from ._webhook_events import WebhookEvent

__all__ = ["EventFeed", "WebhookReceiver", "WebhookStats", "parse_event"]

logger = logging.getLogger("novita_async")

EventHook = Callable[[WebhookEvent], object]

MAX_BODY = 1024 * 1024
"""The largest body accepted (aiohttp's own default limit); a task result is a few kilobytes."""

_REMEMBERED_ENDS = 4096
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,}")  # 22 URL-safe characters hold 132 bits
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def parse_event(body: bytes | str) -> WebhookEvent:
    """The event in a webhook's body; :class:`InvalidResponseError` if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise InvalidResponseError(f"a webhook body is not JSON: {exc}") from None
    event: WebhookEvent = structure(data, WebhookEvent)
    return event


@attrs.frozen
class WebhookStats:
    """What a receiver has been sent, counted by what it did with it."""

    accepted: int = 0
    """The first event of an expected task: handed over."""
    duplicates: int = 0
    """A later event for a task whose event was already accepted (the service's retries)."""
    late: int = 0
    """An event for a task its owner forgot before any event came (polling found the end)."""
    not_final: int = 0
    """An ``ASYNC_TASK_RESULT`` whose status is not an end (a test-mode event can carry any)."""
    refused_path: int = 0
    """Any request under the prefix but on a wrong token: answered 404."""
    refused_task: int = 0
    """An event for a task id nobody expects (forged, or of another process): ignored."""
    unknown_types: int = 0
    """An event type this package does not know: ignored, as the service asks."""
    malformed: int = 0
    """A body that is not an event: answered 400 (413 when too large)."""
    busy: int = 0
    """Answered 503 because an ``events()`` feed was full: the service delivers it again later."""

    @property
    def refused(self) -> int:
        return self.refused_path + self.refused_task


class _Expected:
    """One task a receiver waits for: its result once the event came, and who waits for it."""

    __slots__ = ("arrived", "result", "waiters")

    def __init__(self) -> None:
        self.result: TaskResult | None = None
        self.arrived: anyio.Event | None = None
        self.waiters = 0


class EventFeed:
    """The events a receiver accepts from the moment :meth:`WebhookReceiver.events` made it, in
    arrival order: ``async for event in feed``, until :meth:`aclose` (or ``async with``)."""

    def __init__(self, receiver: WebhookReceiver, capacity: int) -> None:
        self._receiver = receiver
        self._capacity = capacity
        self._buffer: deque[WebhookEvent] = deque()
        self._wakeup: anyio.Event | None = None
        self._closed = False

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self._capacity

    def _put(self, event: WebhookEvent) -> None:
        self._buffer.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WebhookEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Stop receiving events; those already buffered are still iterated."""
        self._receiver._feeds.discard(self)
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class WebhookReceiver:
    """Accepts the service's webhooks on a secret path and hands each task's end to its owner.

    ``receiver.path`` (``f"{path_prefix}/{token}"``) is where it listens; ``receiver.url(base)``
    is what a request's ``extra.webhook.url`` should name. The token is generated (256 bits) unless
    given (at least 22 URL-safe characters, e.g. to keep the URL across restarts); it never appears
    in a log line or ``repr``. Mount it in an aiohttp app with :meth:`add_routes` or
    :meth:`subapp`, run it on its own with :meth:`serve`, or call :meth:`accept` from any other
    framework's route.

    Consume events with :meth:`wait` (one task: what :meth:`NovitaClient.wait_for_task` uses), by
    iterating :meth:`events`, and/or with ``receiver.on_event = callback`` (a plain function, run
    soon after the answer; it must not block: iterate :meth:`events` for async work).
    """

    def __init__(
        self, *, path_prefix: str = "/novita", token: str | None = None, max_buffered: int = 1024
    ) -> None:
        if not isinstance(path_prefix, str) or not _PREFIX.fullmatch(path_prefix):
            raise ConfigurationError(
                "WebhookReceiver.path_prefix must be a path such as '/novita' (no trailing /)"
            )
        if token is None:
            token = secrets.token_urlsafe(32)
        elif not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ConfigurationError(
                "WebhookReceiver.token must be at least 22 letters, digits, '-' or '_'"
            )
        if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
            raise ConfigurationError("WebhookReceiver.max_buffered must be an integer >= 1")
        self.path_prefix = path_prefix
        self._token = token
        self._max_buffered = max_buffered
        self.on_event: EventHook | None = None
        self._expected: dict[str, _Expected] = {}
        # Task ids whose wait is over, oldest first: True if their event came.
        self._ended: dict[str, bool] = {}
        self._feeds: weakref.WeakSet[EventFeed] = weakref.WeakSet()
        self._counts = dict.fromkeys(attrs.fields_dict(WebhookStats), 0)

    def __repr__(self) -> str:
        shown = f"{self.path_prefix}/{mask_secret(self._token)}"
        return f"<WebhookReceiver path={shown!r} expecting={self.expecting}>"

    @property
    def path(self) -> str:
        """The path events are accepted on; holds the secret token."""
        return f"{self.path_prefix}/{self._token}"

    def url(self, base: str) -> str:
        """The webhook URL for a request: ``base`` (this app's public origin, e.g.
        ``"https://my.app"``, or the address :meth:`serve` yields) joined with :attr:`path`."""
        if not isinstance(base, str) or not base.lower().startswith(("http://", "https://")):
            raise ValidationError("base", base, "must be an http(s) URL")
        return base.rstrip("/") + self.path

    @property
    def expecting(self) -> int:
        """How many tasks are expected and not yet handed over nor forgotten."""
        return len(self._expected)

    def stats(self) -> WebhookStats:
        return WebhookStats(**self._counts)

    # --- the owner's side -------------------------------------------------------------------------

    def expect(self, task_id: str) -> None:
        """Accept the event of ``task_id`` (a task this receiver's owner submitted). A task
        expected again after its wait ended takes a new first event."""
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id", task_id, "must be a non-empty string")
        if task_id not in self._expected:
            self._ended.pop(task_id, None)
            self._expected[task_id] = _Expected()

    def forget(self, task_id: str) -> None:
        """Stop expecting ``task_id``: its later events are counted late (or duplicates) and
        dropped, and a :meth:`wait` for it returns what it has (None if no event came)."""
        slot = self._expected.pop(task_id, None)
        if slot is not None:
            self._remember(task_id, slot.result is not None)
            if slot.arrived is not None:
                slot.arrived.set()

    async def wait(
        self,
        task_id: str,
        timeout: float | None = None,  # noqa: ASYNC109  (returns None, does not raise)
    ) -> TaskResult | None:
        """The result ``task_id``'s event carried (waiting up to ``timeout`` seconds, None: no
        limit), or None if none came in time or the task was forgotten. Expects the task if it
        was not expected; it is forgotten once its result is returned."""
        self.expect(task_id)
        slot = self._expected[task_id]
        if slot.result is None:
            if slot.arrived is None:
                slot.arrived = anyio.Event()
            slot.waiters += 1
            try:
                with anyio.move_on_after(timeout):
                    await slot.arrived.wait()
            finally:
                slot.waiters -= 1
        if slot.result is not None and self._expected.get(task_id) is slot:
            del self._expected[task_id]
            self._remember(task_id, True)
        return slot.result

    def events(self) -> EventFeed:
        """Every event accepted from now on, in arrival order, until the feed's ``aclose()`` (or
        until it is garbage collected). Up to ``max_buffered`` events wait for a slow consumer;
        beyond that the receiver answers 503 and the service delivers the event again later."""
        feed = EventFeed(self, self._max_buffered)
        self._feeds.add(feed)
        return feed

    # --- the service's side -----------------------------------------------------------------------

    def accept(self, token: str, body: bytes) -> int:
        """Take one webhook, posted to ``f"{path_prefix}/{token}"``; return the HTTP status to
        answer. Call it from the event loop (a web framework's handler): it never awaits, so the
        answer never waits for a consumer."""
        if not secrets.compare_digest(token.encode(errors="replace"), self._token.encode()):
            logger.info("webhook refused: wrong path token")
            return self._count("refused_path", 404)
        if len(body) > MAX_BODY:
            return self._count("malformed", 413)
        try:
            event = parse_event(body)
        except InvalidResponseError as exc:
            logger.info("webhook refused: %s", exc)
            return self._count("malformed", 400)
        if event.result is None:
            # The service asks receivers to ignore what they do not know, with a 2xx.
            logger.debug("webhook of unknown type %r ignored", event.event_type[:64])
            return self._count("unknown_types", 200)
        return self._take(event, event.result)

    def _take(self, event: WebhookEvent, result: TaskResult) -> int:
        task_id = result.task_id
        slot = self._expected.get(task_id)
        # Every ignored event is answered 2xx: an error would only make the service send it again,
        # and it would tell a forger which task ids exist.
        if slot is None:
            had_event = self._ended.get(task_id)
            if had_event is None:
                logger.info("webhook for task %r ignored: not expected", task_id[:64])
                return self._count("refused_task", 200)
            return self._count("duplicates" if had_event else "late", 200)
        if slot.result is not None:
            return self._count("duplicates", 200)
        if not result.status.is_final:
            return self._count("not_final", 200)
        feeds = list(self._feeds)
        if any(feed.full for feed in feeds):
            logger.warning("webhook for task %s answered 503: events() is not read", task_id)
            return self._count("busy", 503)
        slot.result = result
        if slot.arrived is not None:
            slot.arrived.set()
        for feed in feeds:
            feed._put(event)
        callback = self.on_event
        if callback is not None:
            asyncio.get_running_loop().call_soon(_run_callback, callback, event)
        if slot.waiters or feeds or callback is not None:
            del self._expected[task_id]
            self._remember(task_id, True)
        return self._count("accepted", 200)

    def _count(self, what: str, status: int) -> int:
        self._counts[what] += 1
        return status

    def _remember(self, task_id: str, had_event: bool) -> None:
        self._ended[task_id] = had_event
        if len(self._ended) > _REMEMBERED_ENDS:
            del self._ended[next(iter(self._ended))]

    # --- aiohttp ----------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Route ``POST {path}`` of ``app`` to this receiver (and anything else under the prefix
        to a counted 404). The app's access log, if any, shows the path: keep it private."""
        app.router.add_post(f"{self.path_prefix}/{{token}}", self._handle)
        app.router.add_route("*", f"{self.path_prefix}/{{tail:.*}}", self._refuse)

    def subapp(self) -> web.Application:
        """An application to mount at the prefix: ``app.add_subapp(receiver.path_prefix,
        receiver.subapp())``."""
        sub = web.Application(client_max_size=MAX_BODY)
        sub.router.add_post("/{token}", self._handle)
        sub.router.add_route("*", "/{tail:.*}", self._refuse)
        return sub

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on ``host:port`` (0: any free port) with an aiohttp server of its own, without
        an access log; yields the base URL it listens on (``http://host:port``)."""
        app = web.Application(client_max_size=MAX_BODY)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            yield f"http://{shown}:{bound_port}"
        finally:
            # Shielded: the server must be shut down even when the caller is being cancelled.
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count("malformed", 413)
            raise
        return web.Response(status=self.accept(request.match_info["token"], body))

    async def _refuse(self, _: web.Request) -> web.Response:
        logger.info("webhook refused: wrong path")
        return web.Response(status=self._count("refused_path", 404))


def _run_callback(callback: EventHook, event: WebhookEvent) -> None:
    try:
        outcome: Any = callback(event)
    except Exception:
        logger.exception("WebhookReceiver.on_event raised for task %s", event.task_id)
        return
    if inspect.isawaitable(outcome):
        if inspect.iscoroutine(outcome):
            outcome.close()  # never awaited: say why instead of a RuntimeWarning
        logger.error(
            "WebhookReceiver.on_event must be a plain function; iterate events() for async work"
        )
