"""Repairing a damaged journal: keep every good record, and let nothing be paid twice.

A damaged line (see ``_records``) may have been any record. Losing an end record only makes a rerun
follow a task again; losing ``submitted`` leaves its intent, an unknown outcome; but losing a
``submitting`` intent could let a rerun pay for a job a second time. So every job a damaged line
still names, unless its last good record shows its task (``submitted``) or its images
(``succeeded``), is recorded failed ``SUBMIT_OUTCOME_UNKNOWN``: reported, never resent unless the
user says so. Damaged lines that name no readable job id are listed for the user to look into.
The original file is kept beside the repaired one (``<journal>.damaged-<time>``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs

from .._atomic import write_atomically
from .._exceptions import ConfigurationError
from ._job import JobError
from ._locks import lock_or_refuse
from ._records import (
    AssetRecord,
    FailedRecord,
    SubmittedRecord,
    SucceededRecord,
    decode_record,
    encode_record,
    ids_in_damage,
)

__all__ = ["RepairReport", "repair_journal"]

_LOST = (
    "its journal record was damaged and repaired: a task may exist and be billed; look for it "
    "before submitting again"
)


@attrs.frozen
class RepairReport:
    """What :func:`repair_journal` did."""

    path: Path
    kept: int
    """Good records kept, in their order."""
    damaged_lines: tuple[int, ...]
    """Line numbers (from 1) that could not be read."""
    marked_unknown: tuple[str, ...]
    """Jobs recorded ``SUBMIT_OUTCOME_UNKNOWN`` because a damaged line was theirs."""
    unattributed_lines: tuple[int, ...]
    """Damaged lines that name no job id that could be read."""
    backup: Path | None
    """The damaged original, kept (None when there was nothing to repair)."""


def repair_journal(path: str | os.PathLike[str]) -> RepairReport:
    """Repair the journal at ``path`` (see the module's docstring); refused while a run holds it."""
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        raise ConfigurationError(f"there is no journal at {path}") from None
    with _locked(path):
        kept: list[bytes] = []
        damaged: list[int] = []
        named: dict[str, None] = {}
        unattributed: list[int] = []
        last: dict[str, object] = {}
        for number, raw in enumerate(raw_lines, start=1):
            if not raw.endswith(b"\n"):
                break  # a torn last line: what a crash leaves, not damage
            try:
                record = decode_record(raw)
            except ValueError:
                damaged.append(number)
                job_id = ids_in_damage(raw)
                if job_id is None:
                    unattributed.append(number)
                else:
                    named[job_id] = None
                continue
            kept.append(raw)
            if not isinstance(record, AssetRecord):
                last[record.id] = record
        if not damaged:
            return RepairReport(path, len(kept), (), (), (), None)
        unknown = [
            job_id
            for job_id in named
            if not isinstance(last.get(job_id), SubmittedRecord | SucceededRecord)
        ]
        error = JobError("SubmitOutcomeUnknownError", "SUBMIT_OUTCOME_UNKNOWN", _LOST)
        marks = [encode_record(FailedRecord(id=job_id, error=error)) for job_id in unknown]
        backup = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        os.link(path, backup)
        write_atomically(path, [*kept, *marks])
    return RepairReport(
        path, len(kept), tuple(damaged), tuple(unknown), tuple(unattributed), backup
    )


class _locked:
    """Hold the journal's lock (as a run does) while it is rewritten."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        fd = os.open(self._path, os.O_RDONLY)
        try:
            lock_or_refuse(fd, f"{self._path} is in use by a run; repair it once the run has ended")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
