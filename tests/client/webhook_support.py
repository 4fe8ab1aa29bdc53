"""What the webhook tests share: event bodies as the service sends them, and a receiver served on
loopback with a client session to post to it."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs

from novita_async.webhooks import WebhookReceiver


def event_body(
    task_id: str,
    status: str = "TASK_STATUS_SUCCEED",
    *,
    reason: str = "",
    event_type: str = "ASYNC_TASK_RESULT",
    **payload: Any,
) -> bytes:
    """A webhook body as the service documents it (its payload has the task-result shape)."""
    images = [{"image_url": f"https://img.example/{task_id}/0.png", "image_url_ttl": "3600",
               "image_type": "png"}] if status == "TASK_STATUS_SUCCEED" else []  # fmt: skip
    body = {
        "event_type": event_type,
        "payload": {
            "task": {
                "task_id": task_id,
                "task_type": "INSTANT_ID",
                "status": status,
                "reason": reason,
                "eta": 0,
                "progress_percent": 100,
            },
            "images": images,
            "videos": [],
            "audios": [],
            "extra": {"seed": "42"},
            **payload,
        },
    }
    return json.dumps(body).encode()


@attrs.define
class Served:
    """A receiver listening on loopback (``base``) and a session to post to it."""

    receiver: WebhookReceiver
    base: str
    http: aiohttp.ClientSession

    async def post(self, body: bytes, path: str | None = None, method: str = "POST") -> int:
        url = self.base + (self.receiver.path if path is None else path)
        headers = {"Content-Type": "application/json"}
        # A stream, as aiohttp asks for a large body (the oversized-body test sends one).
        data = io.BytesIO(body)
        async with self.http.request(method, url, data=data, headers=headers) as answer:
            await answer.read()
            return answer.status


async def served(receiver: WebhookReceiver) -> AsyncIterator[Served]:
    async with receiver.serve() as base, aiohttp.ClientSession() as http:
        yield Served(receiver, base, http)
