"""Webhook deliveries: ``POST <extra.webhook.url>`` when a task ends, retried as the service does.

Each event is one task of the sender's task group, over the sender's one client session; both end
with the emulator (deliveries under way are cancelled). An attempt fails when the receiver answers
non-2xx, cannot be reached, or has not answered within ``webhook_timeout`` seconds (5, as
documented); a failed attempt is retried up to 5 times, after 1, 2, 4, 8 and 16 seconds times
``webhook_backoff_scale`` (the service does not document its backoff: this is the emulator's
choice). The body is JSON and carries no signature and no ``Authorization``, as the service's.
The faults of :mod:`._webhook_faults` apply per event.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import aiohttp
import anyio
from anyio.abc import TaskGroup

from ._config import EmulatorConfig
from ._stats import StatsRecorder
from ._webhook_faults import WebhookDecision, WebhookFaults

__all__ = ["WEBHOOK_RETRIES", "WebhookSender", "backoff"]

WEBHOOK_RETRIES = 5
_HEADERS = {"Content-Type": "application/json", "User-Agent": "novita-emulator-webhook"}


def backoff(retry: int, scale: float) -> float:
    """Seconds before retry number ``retry`` (1..5): 1, 2, 4, 8, 16, times ``scale``."""
    return float(2 ** (retry - 1)) * scale


class WebhookSender:
    """Delivers the emulator's webhook events; an async context manager around its lifetime."""

    def __init__(self, config: EmulatorConfig, faults: WebhookFaults, stats: StatsRecorder) -> None:
        self._config = config
        self._faults = faults
        self._stats = stats
        self._session: aiohttp.ClientSession | None = None
        self._group: TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        # Out-of-order events waiting for the next event sent to get its first answer.
        self._held: list[anyio.Event] = []

    async def __aenter__(self) -> WebhookSender:
        async with contextlib.AsyncExitStack() as stack:
            # No connection cap: a pool queue would pass for a receiver's slowness.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, headers=_HEADERS)
            )
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            self._group = group
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._group = self._stack, None, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        self._session = None

    def send(self, task_id: str, url: str, body: bytes) -> None:
        """Deliver ``body`` to ``url`` as the faults decide (nothing once the sender closed)."""
        group = self._group
        if group is None:
            return
        stats = self._stats
        stats.record_webhook(task_id, "events")
        decision = self._faults.decide()
        if decision.drop:
            stats.record_webhook(task_id, "dropped")
            return
        hold: anyio.Event | None = None
        released: list[anyio.Event] = []
        if decision.out_of_order:
            hold = anyio.Event()
            self._held.append(hold)
            stats.record_webhook(task_id, "reordered")
        else:
            released, self._held = self._held, []
        stats.webhooks_pending += 1
        group.start_soon(self._deliver, task_id, url, body, decision, hold, released)

    async def _deliver(
        self,
        task_id: str,
        url: str,
        body: bytes,
        decision: WebhookDecision,
        hold: anyio.Event | None,
        released: list[anyio.Event],
    ) -> None:
        try:
            if hold is not None:
                with anyio.move_on_after(self._faults.get().hold_seconds):
                    await hold.wait()
            if decision.delay:
                self._stats.record_webhook(task_id, "delayed")
                await anyio.sleep(decision.delay)
            await self._attempts(task_id, url, body, released)
            if decision.duplicate:
                self._stats.record_webhook(task_id, "duplicated")
                await self._attempts(task_id, url, body, [])
        finally:
            for event in released:  # also when this delivery is cancelled before its first answer
                event.set()
            self._stats.webhooks_pending -= 1
            self._stats.changed()

    async def _attempts(
        self, task_id: str, url: str, body: bytes, released: list[anyio.Event]
    ) -> None:
        """One delivery: the first attempt and up to WEBHOOK_RETRIES retries. The held events
        in ``released`` go once the first attempt has its answer (or none)."""
        stats = self._stats
        for retry in range(WEBHOOK_RETRIES + 1):
            if retry:
                await anyio.sleep(backoff(retry, self._config.webhook_backoff_scale))
                stats.record_webhook(task_id, "retries")
            stats.record_webhook(task_id, "attempted")
            delivered = await self._attempt(task_id, url, body)
            for event in released:
                event.set()
            released = []
            if delivered:
                stats.record_webhook(task_id, "delivered")
                return
        stats.record_webhook(task_id, "failed")

    async def _attempt(self, task_id: str, url: str, body: bytes) -> bool:
        """Whether the receiver answered 2xx in time."""
        assert self._session is not None
        with anyio.move_on_after(self._config.webhook_timeout):
            try:
                async with self._session.post(url, data=body) as answer:
                    await answer.read()
                    return 200 <= answer.status < 300
            except (aiohttp.ClientError, OSError):
                return False
        self._stats.record_webhook(task_id, "timeouts")
        return False
