"""Progress events of a batch run, for progress bars and logs.

``on_event`` is called synchronously in the task where the thing happened; it should be quick. An
exception it raises is logged and swallowed: a broken progress bar must not lose a paid task.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import attrs

__all__ = ["BatchEvent", "BatchEventHook", "BatchEventKind", "emit"]

logger = logging.getLogger("novita_async.batch")


class BatchEventKind(enum.StrEnum):
    QUEUED = "queued"
    """The job was read from the input."""
    UPLOADED = "uploaded"
    """Every input image of the job has an asset id (uploaded now or earlier)."""
    SUBMITTED = "submitted"
    """The task was created; ``task_id`` is set."""
    RESUMED = "resumed"
    """A task submitted by an earlier run is being followed again (no new submission)."""
    RUNNING = "running"
    """A poll saw the task queued or processing; ``progress_percent`` and ``eta`` when known."""
    RETRIED = "retried"
    """A step is being repeated; ``reason`` says why (RATE_LIMIT_EXCEEDED, IMAGE_URL_EXPIRED...)."""
    SUCCEEDED = "succeeded"
    """Every image is on disk; ``files`` lists them. ``replayed`` if it ended in an earlier run."""
    FAILED = "failed"
    """The job ended without images; ``reason`` and ``message`` say why."""
    PAUSED = "paused"
    """The run pauses (an outage, a 429); ``message`` says why and for how long. ``job_id`` is
    empty: this is about the run, not a job."""
    CONTINUED = "continued"
    """The service answers again after an outage; ``message`` says after how long."""
    STOPPED = "stopped"
    """The run stops for a run-level cause (the key, the account, the disk, a long outage):
    nothing more is submitted; ``reason`` and ``message`` say why and what to do."""


@attrs.frozen
class BatchEvent:
    kind: BatchEventKind
    job_id: str
    task_id: str | None = None
    progress_percent: float | None = None
    eta: float | None = None
    reason: str | None = None
    message: str | None = None
    files: tuple[str, ...] = ()
    replayed: bool = False


BatchEventHook = Callable[[BatchEvent], object]


def emit(hook: BatchEventHook | None, event: BatchEvent) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("batch on_event hook raised on a %s event; ignored", event.kind)
