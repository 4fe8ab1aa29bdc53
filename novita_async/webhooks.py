"""Learning that a task ended from the service's webhook instead of asking.

A request whose ``extra.webhook.url`` is set makes the service POST an event to that URL when the
task ends. :class:`WebhookReceiver` takes those POSTs in an aiohttp application (or behind any
framework, through :meth:`WebhookReceiver.accept`) and hands each task's end to whoever waits::

    from novita_async import Extra, Webhook
    from novita_async.webhooks import WebhookReceiver

    receiver = WebhookReceiver()                       # path /novita/<secret token>
    receiver.add_routes(app)                           # an aiohttp.web.Application
    request = InstantIDRequest(..., extra=Extra(webhook=Webhook(url=receiver.url("https://my.app"))))
    task_id = await client.submit_instant_id(request)
    result = await client.wait_for_task(task_id, events=receiver)   # polling stays the safety net

Webhooks are not signed: the receiver accepts events only on its secret path and only for the task
ids its owner expects, the first event per task; see :mod:`novita_async._webhooks`.
"""

from __future__ import annotations

from ._webhook_events import EventType, WebhookEvent
from ._webhooks import MAX_BODY, EventFeed, WebhookReceiver, WebhookStats, parse_event

__all__ = [
    "MAX_BODY",
    "EventFeed",
    "EventType",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookStats",
    "parse_event",
]
