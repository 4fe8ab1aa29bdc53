"""Shim: the names of this module moved (removed in Phase B)."""

from ._jobs import (
    MAX_JOB_ID_LENGTH,
    RESERVED_NAMES,
    ImageSource,
    InvalidJob,
    Job,
    JobError,
    JobInput,
    JobInputError,
    JobOutcome,
    JobStatus,
    check_job_id,
)

__all__ = [
    "MAX_JOB_ID_LENGTH",
    "RESERVED_NAMES",
    "ImageSource",
    "InvalidJob",
    "Job",
    "JobError",
    "JobInput",
    "JobInputError",
    "JobOutcome",
    "JobStatus",
    "check_job_id",
]
