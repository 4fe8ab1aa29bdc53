"""The batch runner: many InstantID jobs, bounded, resumable, images streamed to disk.

See :class:`BatchRunner` for the run's shape and :mod:`._journal` for resume semantics and the one
window where a crash can submit a job twice.
"""

from __future__ import annotations

from ._events import BatchEvent, BatchEventHook, BatchEventKind
from ._job import (
    ImageSource,
    InvalidJob,
    Job,
    JobError,
    JobInputError,
    JobOutcome,
    JobStatus,
    check_job_id,
)
from ._options import BatchOptions
from ._runner import BatchRunner
from ._summary import BatchSummary

__all__ = [
    "BatchEvent",
    "BatchEventHook",
    "BatchEventKind",
    "BatchOptions",
    "BatchRunner",
    "BatchSummary",
    "ImageSource",
    "InvalidJob",
    "Job",
    "JobError",
    "JobInputError",
    "JobOutcome",
    "JobStatus",
    "check_job_id",
]
