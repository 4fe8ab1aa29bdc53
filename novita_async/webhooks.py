"""Learning that a task ended from its webhook instead of asking: :class:`WebhookReceiver`.

A request whose ``extra.webhook.url`` is set makes the service POST an event to that URL when the
task ends, retrying (up to 5 times, 5 s timeout each) until it gets a 2xx answer::

    from novita_async import Extra, Webhook
    from novita_async.webhooks import WebhookReceiver

    receiver = WebhookReceiver()                       # path /novita/<secret token>
    app.add_subapp(receiver.path_prefix, receiver.app) # in an aiohttp.web.Application
    request = InstantIDRequest(..., extra=Extra(webhook=Webhook(url=receiver.url("https://my.app"))))
    task_id = await client.submit_instant_id(request)
    result = await client.wait_for_task(task_id, events=receiver)   # polling stays the safety net

Webhooks are not signed, so the receiver trusts only what a stranger cannot know: the path's
secret token (``/novita/<token>``, 256 random bits by default; any other path is answered 404),
and a task id its owner expects (only its first event counts; later ones are dropped).

A task's end goes to the :meth:`NovitaClient.wait_for_task` (or batch run) waiting for it, even one
that starts after the event came, and to ``async for event in receiver`` once anything iterates
it. Answers never wait for a consumer: beyond ``max_buffered`` events not yet iterated the
receiver answers 503 (the service delivers again later). A task is forgotten once its event was
handed over (or on :meth:`~WebhookReceiver.forget`); the last few thousand ended tasks' ids are
kept to tell a duplicate or late event from a forged one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Self

import anyio
import attrs
from aiohttp import web

from ._config import mask_secret
from ._converter import structure
from ._exceptions import ConfigurationError, InvalidResponseError, ValidationError
from ._models import EventType, TaskResult, WebhookEvent

__all__ = [
    "MAX_BODY",
    "EventType",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookStats",
    "parse_event",
]

logger = logging.getLogger("novita_async")

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
    """Answered 503: ``max_buffered`` events wait to be iterated; the service delivers it later."""

    @property
    def refused(self) -> int:
        return self.refused_path + self.refused_task


class WebhookReceiver:
    """Accepts the service's webhooks on a secret path and hands each task's end to its owner.

    ``receiver.path`` (``f"{path_prefix}/{token}"``) is where it listens; ``receiver.url(base)``
    is what a request's ``extra.webhook.url`` should name. The token is generated (256 bits) unless
    given (at least 22 URL-safe characters, e.g. to keep the URL across restarts); it never appears
    in a log line or ``repr``. Mount :attr:`app` in an aiohttp app at :attr:`path_prefix`, run it
    on its own with :meth:`serve`, or call :meth:`accept` from any other framework's route.

    Pass it to :meth:`NovitaClient.wait_for_task` (``events=``) or a batch run (which makes its
    own), or :meth:`expect` task ids yourself and iterate it: ``async for event in receiver``.
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
        # Task id -> None (nothing came yet), its waiter's function, or its end held for a waiter.
        self._expected: dict[str, Callable[[TaskResult], None] | TaskResult | None] = {}
        # Task ids whose wait is over, oldest first: True if their event came.
        self._ended: dict[str, bool] = {}
        self._send, self._events = anyio.create_memory_object_stream[WebhookEvent](max_buffered)
        self._iterated = False  # events go to the stream only once someone iterates it
        # Closed with the receiver, not left to warn when collected.
        weakref.finalize(self, self._send.close)
        weakref.finalize(self, self._events.close)
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
            self._expected[task_id] = None

    def _subscribe(self, task_id: str, deliver: Callable[[TaskResult], None]) -> None:
        """Expect ``task_id`` and call ``deliver`` with its end, at once if it came already, else
        from :meth:`accept`: how ``_completion`` waits for a task."""
        self.expect(task_id)
        held = self._expected[task_id]
        if isinstance(held, TaskResult):
            self.forget(task_id)
            deliver(held)
        else:
            self._expected[task_id] = deliver

    def forget(self, task_id: str) -> None:
        """Stop expecting ``task_id``: its later events are counted late (or duplicates) and
        dropped."""
        if task_id in self._expected:
            self._remember(task_id, isinstance(self._expected.pop(task_id), TaskResult))

    def __aiter__(self) -> Self:
        """Every event accepted from now on, in arrival order (``max_buffered`` of them wait for
        a slow consumer; beyond that the service is answered 503 and delivers again later)."""
        self._iterated = True
        return self

    async def __anext__(self) -> WebhookEvent:
        return await self._events.receive()

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
        result = event.result
        if result is None:
            # The service asks receivers to ignore what they do not know, with a 2xx.
            logger.debug("webhook of unknown type %r ignored", event.event_type[:64])
            return self._count("unknown_types", 200)
        task_id = result.task_id
        # Every ignored event is answered 2xx: an error would only make the service send it again,
        # and it would tell a forger which task ids exist.
        if task_id not in self._expected:
            had_event = self._ended.get(task_id)
            if had_event is None:
                logger.info("webhook for task %r ignored: not expected", task_id[:64])
                return self._count("refused_task", 200)
            return self._count("duplicates" if had_event else "late", 200)
        slot = self._expected[task_id]
        if isinstance(slot, TaskResult):
            return self._count("duplicates", 200)
        if not result.status.is_final:
            return self._count("not_final", 200)
        if self._iterated:
            try:
                self._send.send_nowait(event)
            except anyio.WouldBlock:
                logger.warning(
                    "webhook for task %s answered 503: the receiver is not read", task_id
                )
                return self._count("busy", 503)
        self._expected[task_id] = result  # held for a waiter to come, if none waits nor iterates
        if slot is not None or self._iterated:
            self.forget(task_id)
            if slot is not None:
                slot(result)
        return self._count("accepted", 200)

    def _count(self, what: str, status: int) -> int:
        self._counts[what] += 1
        return status

    def _remember(self, task_id: str, had_event: bool) -> None:
        self._ended[task_id] = had_event
        if len(self._ended) > _REMEMBERED_ENDS:
            del self._ended[next(iter(self._ended))]

    # --- aiohttp ----------------------------------------------------------------------------------

    @functools.cached_property
    def app(self) -> web.Application:
        """An aiohttp application to mount at the prefix: ``app.add_subapp(receiver.path_prefix,
        receiver.app)``. The parent app's access log, if any, shows the path: keep it private."""
        return self._application()

    def _application(self) -> web.Application:
        sub = web.Application(client_max_size=MAX_BODY)
        sub.router.add_post("/{token}", self._handle)
        sub.router.add_route("*", "/{tail:.*}", self._refuse)
        return sub

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on ``host:port`` (0: any free port) with an aiohttp server of its own serving
        the routes of :attr:`app`, without an access log; yields the base URL it listens on
        (``http://host:port``)."""
        root = web.Application(client_max_size=MAX_BODY)
        root.add_subapp(self.path_prefix, self._application())
        runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
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
