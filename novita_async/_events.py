"""Observer hooks: one :class:`ClientEvent` per request, response, retry and final error.

Pass ``on_event=callback`` to the client to count or log calls without monkeypatching. The
callback runs synchronously in the calling task; it should be quick and must not block. An
exception it raises is logged and swallowed, because a failing observer must never lose the answer
to a paid submission.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import attrs

__all__ = ["ClientEvent", "EventHook", "EventKind", "emit"]

logger = logging.getLogger("novita_async")


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


def emit(hook: EventHook | None, event: ClientEvent) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("on_event hook raised on a %s event; ignored", event.kind)
