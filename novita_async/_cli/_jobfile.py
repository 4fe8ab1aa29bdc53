"""Shim: the names of this module moved (removed in Phase B)."""

from ..batch._jobs import InputFetcher, JobLine, LineError, _LineProblem, _lines, read_job_file
from ..batch._jobs import _parse_line as _load
from ..batch._jobs import count_jobs as count_lines

__all__ = [
    "InputFetcher",
    "JobLine",
    "LineError",
    "_LineProblem",
    "_lines",
    "_load",
    "count_lines",
    "read_job_file",
]
