"""The durable journal: one JSON line per state change, the run's memory across crashes.

Records (``"t"`` is a Unix timestamp on each), attrs classes told apart by ``type``::

    {"type": "asset", "sha256", "asset_id", "endpoint"}     an input content was uploaded
    {"type": "submitting", "id", "fingerprint"}             a POST is about to be sent (the intent)
    {"type": "not_submitted", "id"}                         it was answered with a refusal: no task
    {"type": "submitted", "id", "task_id", "fingerprint"}   the POST answered with a task id
    {"type": "succeeded", "id", "task_id", "fingerprint", "seed", "files", "sizes", "digests"}
                                                            every image is on disk (its size
                                                            and SHA-256 beside its name)
    {"type": "failed", "id", "task_id", "fingerprint", "error": {type, reason, message}}

Durability: each record is one ``os.write`` of one line to a file descriptor opened with
``O_APPEND``. The line is in the kernel's page cache when ``write`` returns, so ``kill -9`` at any
moment loses nothing already written and can tear at most the line being written; the loader
skips a line it cannot read and cuts a torn tail off before appending. Surviving a power
loss as well needs ``fsync=True`` (one ``fsync`` per record, which blocks the event loop briefly).

**Nothing is paid twice by default.** The ``submitting`` record is written before its POST is sent,
and ``submitted`` (with the task id) in the same step that receives the answer, with no ``await`` in
between. Whatever stops the process (a crash, ``kill -9``, Ctrl-C pressed three times, a full
disk), a rerun finds every job whose POST may have been sent: either with its task id, which it
follows, or with an intent and no answer, which is a submission of unknown outcome: reported as
``SUBMIT_OUTCOME_UNKNOWN`` and not sent again unless the run is told to
(``retry_unknown_submits``). A POST answered with a refusal (the service made no task) is
recorded ``not_submitted``, so the rerun submits that job as if never tried.

A full disk cannot keep the record of a paid task from being written: the journal keeps a reserve
file beside itself (:data:`RESERVE_BYTES`), deleted to make room when a write finds no space; the
runner then stops (``reserve_used``). Writes that fail raise :class:`LocalIOError`.

The journal is locked (``flock``) while a run holds it, so two runs cannot share an output folder.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from .._atomic import write_all
from .._exceptions import LocalIOError
from ._job import JobError, JobOutcome, JobStatus
from ._locks import lock_or_refuse
from ._records import (
    AssetRecord,
    FailedRecord,
    JournalDamagedError,
    JournalRecord,
    NotSubmittedRecord,
    SubmittedRecord,
    SubmittingRecord,
    SucceededRecord,
    encode_record,
    read_records,
    scan_journal,
)

__all__ = [
    "JOURNAL_NAME",
    "RESERVE_BYTES",
    "AssetKey",
    "JobPhase",
    "JobState",
    "Journal",
    "JournalDamagedError",
    "apply_record",
    "fold",
    "read_records",
]

JOURNAL_NAME = ".novita-journal.jsonl"

AssetKey = tuple[str, str]
"""An uploaded content's key: the asset endpoint it was uploaded to, and its SHA-256."""
RESERVE_BYTES = 1 << 20
"""Room kept beside the journal for its last records when the disk fills up (~5,000 records)."""


class JobPhase(enum.StrEnum):
    """The last thing that happened to a job, as far as the journal knows."""

    SUBMITTING = "submitting"
    """A POST was (or was about to be) sent, and no answer recorded: its outcome is unknown."""
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_STATUS_OF_PHASE = {JobPhase.SUCCEEDED: JobStatus.SUCCEEDED, JobPhase.FAILED: JobStatus.FAILED}


@attrs.define
class JobState:
    """What the journal knows about one job id: the last thing that happened to it."""

    phase: JobPhase
    fingerprint: str | None = None
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    error: JobError | None = None
    before: JobState | None = None
    sizes: tuple[int, ...] = ()
    """Of a succeeded job: each file's size in bytes (none in a journal from before sizes)."""
    digests: tuple[str, ...] = ()
    """Of a succeeded job: each file's SHA-256, hex (none in a journal from before digests)."""
    """While submitting: the state to go back to if the service refuses the submission."""

    @property
    def ended(self) -> bool:
        return self.phase in _STATUS_OF_PHASE

    def outcome(self, job_id: str, *, replayed: bool) -> JobOutcome:
        status = _STATUS_OF_PHASE.get(self.phase)
        if status is None:
            raise ValueError(f"job {job_id!r} has not ended")
        return JobOutcome(
            job_id=job_id,
            status=status,
            task_id=self.task_id,
            seed=self.seed,
            files=self.files,
            error=self.error,
            replayed=replayed,
        )


def fold(records: Iterable[JournalRecord]) -> tuple[dict[AssetKey, str], dict[str, JobState]]:
    """What a journal's ``records`` (in order) say: the asset id of each uploaded content (by its
    endpoint and SHA-256), and the state of each job, in the order the jobs last ended
    (``results.jsonl``'s)."""
    assets: dict[AssetKey, str] = {}
    jobs: dict[str, JobState] = {}
    for record in records:
        apply_record(record, assets, jobs)
    return assets, jobs


def apply_record(
    record: JournalRecord,
    assets: dict[AssetKey, str],
    jobs: dict[str, JobState],
    *,
    new_jobs: bool = True,
) -> None:
    """Fold one record into ``assets`` and ``jobs``; the record of a job ``jobs`` does not hold
    is left out unless ``new_jobs``."""
    if isinstance(record, AssetRecord):
        # An id recorded without its endpoint (an older journal) may have been issued by any
        # endpoint, and one endpoint refuses another's ids: it is not reused. That costs one
        # upload of each content, which is free; reusing it could cost a refused submission.
        if record.endpoint is not None:
            assets[(record.endpoint, record.sha256)] = record.asset_id
        return
    previous = jobs.get(record.id)
    if previous is None and not new_jobs:
        return
    if isinstance(record, NotSubmittedRecord):
        before = previous.before if previous is not None else None
        if before is None:
            jobs.pop(record.id, None)
        else:
            jobs[record.id] = before
        return
    # A record without a fingerprint keeps the one known before.
    fingerprint = record.fingerprint or (previous.fingerprint if previous else None)
    if isinstance(record, SubmittingRecord):
        jobs[record.id] = JobState(JobPhase.SUBMITTING, fingerprint, before=previous)
        return
    if isinstance(record, SubmittedRecord):
        jobs[record.id] = JobState(JobPhase.SUBMITTED, fingerprint, record.task_id)
        return
    if isinstance(record, SucceededRecord):
        state = JobState(
            JobPhase.SUCCEEDED,
            fingerprint,
            record.task_id,
            record.seed,
            record.files,
            sizes=record.sizes,
            digests=record.digests,
        )
    else:
        state = JobState(
            JobPhase.FAILED, fingerprint, record.task_id, files=record.files, error=record.error
        )
    # Keep ``jobs`` in the order jobs ended, which is the order results.jsonl lists them.
    jobs.pop(record.id, None)
    jobs[record.id] = state


class Journal:
    """The journal of one output folder, loaded into memory and open for appending.

    Memory: one small :class:`JobState` per job id the journal held when it was opened (what a
    resume needs to decide), kept up to date during the run, and one entry per distinct uploaded
    content. Jobs new to this run are written to the file but not kept in memory: each job id is
    looked up once, when the job starts, so a fresh run of any size costs no memory per job here.
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        self.assets: dict[AssetKey, str] = {}
        self.jobs: dict[str, JobState] = {}
        self._fd: int | None = None
        self._size = 0
        self.reserve_path = path.with_name(path.name + ".reserve")
        self.reserve_used = False
        """True once the reserve was spent on a record the full disk would have refused."""
        self._load()
        self._open()

    # --- loading ------------------------------------------------------------------------------

    def _load(self) -> None:
        scan = scan_journal(self.path)
        if scan.damaged:
            raise JournalDamagedError(self.path, scan.damaged)
        self.assets, self.jobs = fold(scan.records)

    def _apply(self, record: JournalRecord) -> None:
        # A job new to this run: its records are on disk, not needed in memory.
        apply_record(record, self.assets, self.jobs, new_jobs=False)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            lock_or_refuse(fd, f"{self.path} is in use by another run; one run per output folder")
            self._cut_torn_tail(fd)
            self._size = os.fstat(fd).st_size
            self._keep_reserve()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _keep_reserve(self) -> None:
        """Make sure the reserve file exists at its full size (a run after a full disk restores
        it); the disk having no room for it is no reason not to run, so that is only logged."""
        try:
            if os.path.getsize(self.reserve_path) >= RESERVE_BYTES:
                return
        except OSError:
            pass
        try:
            with open(self.reserve_path, "wb") as reserve:
                reserve.truncate(0)
                os.posix_fallocate(reserve.fileno(), 0, RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(self.reserve_path)

    def _cut_torn_tail(self, fd: int) -> None:
        # A line torn by a crash would swallow the next record appended after it.
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with self.path.open("rb") as handle:
            handle.seek(max(0, size - 65536))
            tail = handle.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else None)
        if keep is None:
            # The torn line is longer than the window: end it instead, the loader skips it.
            os.write(fd, b"\n")
        else:
            os.truncate(self.path, keep)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending ----------------------------------------------------------------------------

    def _append(self, record: JournalRecord) -> None:
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        line = encode_record(record)
        try:
            self._write(line)
        except LocalIOError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._spend_reserve():
                raise
            self._write(line)
        self._apply(record)

    def _write(self, line: bytes) -> None:
        assert self._fd is not None
        try:
            write_all(self._fd, line)
            if self._fsync:
                os.fsync(self._fd)
        except (OSError, LocalIOError) as exc:
            # A line written in part would join the next record into one unreadable line.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            if isinstance(exc, LocalIOError):
                raise
            raise LocalIOError.from_os_error(exc, "writing the journal", str(self.path)) from exc
        self._size += len(line)

    def _spend_reserve(self) -> bool:
        try:
            os.remove(self.reserve_path)
        except OSError:
            return False
        self.reserve_used = True
        return True

    def record_asset(self, key: AssetKey, asset_id: str) -> None:
        if self.assets.get(key) != asset_id:
            endpoint, sha256 = key
            self._append(AssetRecord(sha256=sha256, asset_id=asset_id, endpoint=endpoint))

    def forget_asset(self, key: AssetKey, asset_id: str) -> None:
        """The service may no longer know ``asset_id``: the next job that needs its content
        uploads it again, and that upload's record supersedes this one's on disk. (An entry that
        already names another id, uploaded since, is kept.)"""
        if self.assets.get(key) == asset_id:
            del self.assets[key]

    def record_submitting(self, job_id: str, fingerprint: str | None) -> None:
        self._append(SubmittingRecord(id=job_id, fingerprint=fingerprint))

    def record_not_submitted(self, job_id: str) -> None:
        self._append(NotSubmittedRecord(id=job_id))

    def record_submitted(self, job_id: str, task_id: str, fingerprint: str | None) -> None:
        self._append(SubmittedRecord(id=job_id, task_id=task_id, fingerprint=fingerprint))

    def record_outcome(
        self,
        outcome: JobOutcome,
        fingerprint: str | None,
        *,
        sizes: tuple[int, ...] = (),
        digests: tuple[str, ...] = (),
    ) -> None:
        """Record how a job ended; a succeeded one with each file's ``sizes`` and ``digests``
        (what a rerun and ``status --verify`` check the files against)."""
        job_id, task_id = outcome.job_id, outcome.task_id
        record: JournalRecord
        if outcome.ok:
            record = SucceededRecord(
                id=job_id,
                task_id=task_id,
                fingerprint=fingerprint,
                seed=outcome.seed,
                files=outcome.files,
                sizes=sizes,
                digests=digests,
            )
        else:
            record = FailedRecord(
                id=job_id,
                task_id=task_id,
                fingerprint=fingerprint,
                error=outcome.error,
                files=outcome.files,
            )
        self._append(record)

    def ended_outcomes(self) -> Iterator[JobOutcome]:
        """Every ended job's outcome, in the order the jobs ended."""
        for job_id, state in self.jobs.items():
            if state.ended:
                yield state.outcome(job_id, replayed=True)
