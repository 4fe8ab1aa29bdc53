"""Image URLs of a task's result: the file extension they name, and renewing expired ones.

A signed image URL has a lifetime; :meth:`NovitaClient.download_images` fetches the task's result
again for fresh URLs when one has expired, at most ``RetryPolicy.expired_url_refreshes`` times for
the whole call, shared by its images (:class:`Renewal`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import yarl

from ._events import EventHook
from ._exceptions import ImageURLExpiredError, InvalidResponseError
from ._models import ResultImage, TaskResult
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._client import NovitaClient
    from ._transport import Transport

__all__ = ["Renewal", "image_extension"]

logger = logging.getLogger("novita_async")

_EXTENSION = re.compile(r"^[a-z0-9]{1,5}$")


class Renewal:
    """Fresh task results for one :meth:`NovitaClient.download_images` call, within its budget."""

    def __init__(
        self,
        client: NovitaClient,
        transport: Transport,
        result: TaskResult,
        policy: RetryPolicy,
        on_event: EventHook | None,
    ) -> None:
        self._client = client
        self._transport = transport
        self._latest = result
        self._left = policy.expired_url_refreshes
        self._policy = policy
        self._on_event = on_event
        self._lock: anyio.Lock | None = None  # made on the first expiry: most calls see none

    async def fresh_image(
        self, index: int, expired_image: ResultImage, expired: ImageURLExpiredError
    ) -> ResultImage:
        """A newer URL for image ``index`` than ``expired_image``'s, or ``expired`` re-raised."""
        task_id = self._latest.task_id
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._latest.images[index].image_url == expired_image.image_url:
                if self._left <= 0:
                    raise expired
                self._left -= 1
                logger.info("image %d of task %s expired; fetching fresh URLs", index, task_id)
                self._transport.announce_retry(
                    "GET", "image", expired.url or "", expired.reason, self._on_event
                )
                renewed = await self._client.get_task_result(
                    task_id, retry=self._policy, on_event=self._on_event
                )
                if len(renewed.images) != len(self._latest.images):
                    raise InvalidResponseError(
                        f"task {task_id} answered {len(self._latest.images)} images, "
                        f"then {len(renewed.images)}"
                    ) from expired
                self._latest = renewed
            return self._latest.images[index]


def image_extension(image: ResultImage) -> str:
    kind = image.image_type.lower()
    if _EXTENSION.match(kind):
        return kind
    suffix = Path(yarl.URL(image.image_url).path).suffix.lstrip(".").lower()
    return suffix if _EXTENSION.match(suffix) else "png"
