"""The batch runner: many InstantID jobs, bounded, resumable, images streamed to disk.

See :class:`BatchRunner` for the run's shape, :mod:`._journal` for resume semantics (nothing is
paid twice by default), and :mod:`._failures` for what a failure means to a run.
"""

from __future__ import annotations

from ._events import BatchEvent, BatchEventHook, BatchEventKind, BatchSummary
from ._jobs import (
    ImageSource,
    InvalidJob,
    Job,
    JobError,
    JobInputError,
    JobOutcome,
    JobStatus,
    check_job_id,
    count_jobs,
    job_ids,
    read_job_lines,
    read_jobs,
)
from ._journal import JOURNAL_NAME, RESULTS_NAME, JournalDamagedError, RepairReport, repair_journal
from ._options import BatchOptions, Shard, shard_of
from ._outputs import Output, is_run_output, open_output
from ._plan import DryRun, JobProblem, dry_run
from ._run_folder import RunStatus, read_status
from ._runner import BatchRunner

__all__ = [
    "JOURNAL_NAME",
    "RESULTS_NAME",
    "BatchEvent",
    "BatchEventHook",
    "BatchEventKind",
    "BatchOptions",
    "BatchRunner",
    "BatchSummary",
    "DryRun",
    "ImageSource",
    "InvalidJob",
    "Job",
    "JobError",
    "JobInputError",
    "JobOutcome",
    "JobProblem",
    "JobStatus",
    "JournalDamagedError",
    "Output",
    "RepairReport",
    "RunStatus",
    "Shard",
    "check_job_id",
    "count_jobs",
    "dry_run",
    "is_run_output",
    "job_ids",
    "open_output",
    "read_job_lines",
    "read_jobs",
    "read_status",
    "repair_journal",
    "shard_of",
]
