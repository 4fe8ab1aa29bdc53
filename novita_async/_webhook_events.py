"""What a webhook of the service carries: :class:`WebhookEvent`.

The service POSTs ``{"event_type": "ASYNC_TASK_RESULT", "payload": {...}}`` when a task ends; the
payload has the shape of a task-result answer. Bodies are parsed by the one converter
(``_converter.py`` holds the hook), so an event's result is the very :class:`TaskResult` polling
returns. Event types the service may add later parse as events of kind ``EventType.UNKNOWN``:
a receiver ignores them instead of failing.
"""

from __future__ import annotations

import enum

import attrs
from attrs import validators as av

from ._exceptions import ValidationError
from ._models import TaskResult

__all__ = ["EventType", "WebhookEvent"]


class EventType(enum.StrEnum):
    """The kinds of event this package knows; any other ``event_type`` is ``UNKNOWN``."""

    ASYNC_TASK_RESULT = "ASYNC_TASK_RESULT"
    """A task ended; the event's ``result`` is its task result."""
    UNKNOWN = "UNKNOWN"


_KNOWN = {kind.value: kind for kind in EventType if kind is not EventType.UNKNOWN}


@attrs.frozen
class WebhookEvent:
    """One webhook: its ``event_type`` as sent and, for ``ASYNC_TASK_RESULT``, the task's result."""

    event_type: str = attrs.field(validator=av.instance_of(str))
    result: TaskResult | None = attrs.field(
        default=None, validator=av.optional(av.instance_of(TaskResult))
    )

    def __attrs_post_init__(self) -> None:
        if self.is_task_result and self.result is None:
            raise ValidationError("result", None, "is required for an ASYNC_TASK_RESULT event")

    @property
    def kind(self) -> EventType:
        """``event_type`` as an :class:`EventType`: ``UNKNOWN`` for a type this package lacks."""
        return _KNOWN.get(self.event_type, EventType.UNKNOWN)

    @property
    def is_task_result(self) -> bool:
        return self.kind is EventType.ASYNC_TASK_RESULT

    @property
    def task_id(self) -> str | None:
        return None if self.result is None else self.result.task_id
