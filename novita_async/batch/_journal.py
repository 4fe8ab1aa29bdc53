"""The journal: the run's memory across crashes, one JSON line per thing that happened to a job.

Lines (attrs records told apart by ``type``; ``"t"`` is a Unix timestamp on each)::

    {"type": "asset", "sha256", "asset_id", "endpoint"}     an input content was uploaded
    {"type": "submitting", "id", "fingerprint"}             a POST is about to be sent (the intent)
    {"type": "not_submitted", "id"}                         it was answered with a refusal: no task
    {"type": "submitted", "id", "task_id", "fingerprint"}   the POST answered with a task id
    {"type": "succeeded", "id", "task_id", "fingerprint", "seed", "files", "sizes", "digests"}
    {"type": "failed", "id", "task_id", "fingerprint", "error": {type, reason, message}, "files"}

A job's records other than ``not_submitted`` also name its ``task`` when it is not InstantID
(``"task": "txt2img"``, ...); without one (every line of a 0.1.0 or 0.2.0 journal) it is
``instant-id``. ``results.jsonl`` lines do the same.

Each line is compact JSON whose last key ``c`` is the CRC-32 (8 hex digits) of the line without
it (older lines have none), written by one ``os.write`` on an ``O_APPEND`` descriptor: ``kill -9``
tears at most the last line, which is cut before appending. Any other unreadable line is
**damage**: :class:`Journal` refuses to open until :func:`repair_journal` runs. A full disk
cannot keep the record of a paid task out: a reserve file is deleted to make room.

**Nothing is paid twice by default.** ``submitting`` is written before its POST is sent and
``submitted`` with no ``await`` after the answer: a rerun follows every recorded task, and
reports an intent with no answer ``SUBMIT_OUTCOME_UNKNOWN``. An object-store output keeps the
journal in the store too (:class:`JournalMirror`), each intent before its POST is sent.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
import re
import time
import zlib
from collections.abc import Container, Iterable, Iterator
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

import anyio
import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from .._client import map_limited
from .._converter import converter
from .._exceptions import ConfigurationError, LocalIOError, NovitaError, StorageError
from .._files import local_io, lock_or_refuse, write_all, write_atomically
from ._jobs import INSTANT_ID, JobError, JobOutcome, JobStatus

__all__ = [
    "JOURNAL_KEY",
    "JOURNAL_NAME",
    "RESERVE_BYTES",
    "RESULTS_NAME",
    "AssetKey",
    "JobPhase",
    "JobState",
    "Journal",
    "JournalDamagedError",
    "JournalMirror",
    "JournalsDisagreeError",
    "RepairReport",
    "ResultLine",
    "ResultsFile",
    "SubmittedRecord",
    "SubmittingRecord",
    "decode_record",
    "encode_record",
    "fold",
    "repair_journal",
    "scan_journal",
    "segment_key",
]

JOURNAL_NAME = ".novita-journal.jsonl"
RESULTS_NAME = "results.jsonl"
JOURNAL_KEY = ".novita-journal"
"""The key prefix of an object-store output's journal segments."""
JOURNAL_FLUSH_SECONDS = 1.0
"""How often records other than intents go up to the store."""
RESERVE_BYTES = 1 << 20
"""Room kept beside the journal for its last records when the disk fills up (~5,000 records)."""
AssetKey = tuple[str, str]
"""An uploaded content's key: the asset endpoint it was uploaded to, and its SHA-256."""

# --- the lines ------------------------------------------------------------------------------------


def _now() -> float:
    return round(time.time(), 3)


@attrs.frozen(kw_only=True)
class AssetRecord:
    """An input content was uploaded to ``endpoint`` (the asset URL's origin and path only) as
    ``asset_id``; one recorded without an endpoint (an older journal) is never reused."""

    type: Literal["asset"] = "asset"
    sha256: str
    asset_id: str = attrs.field(validator=attrs.validators.min_len(1))
    endpoint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SubmittingRecord:
    type: Literal["submitting"] = "submitting"
    id: str
    task: str = INSTANT_ID
    fingerprint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class NotSubmittedRecord:
    type: Literal["not_submitted"] = "not_submitted"
    id: str
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SubmittedRecord:
    type: Literal["submitted"] = "submitted"
    id: str
    task: str = INSTANT_ID
    task_id: str | None = None
    fingerprint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SucceededRecord:
    """``sizes[n]`` and ``digests[n]`` (SHA-256, hex) are of ``files[n]``; an older journal has
    neither, and its files can only be checked for being there."""

    type: Literal["succeeded"] = "succeeded"
    id: str
    task: str = INSTANT_ID
    task_id: str | None = None
    fingerprint: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    digests: tuple[str, ...] = ()
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class FailedRecord:
    """``files``: images of an earlier request still in OUT (``JOB_CHANGED``), or of a job that
    failed after some landed; never presented as this job's result."""

    type: Literal["failed"] = "failed"
    id: str
    task: str = INSTANT_ID
    task_id: str | None = None
    fingerprint: str | None = None
    error: JobError | None = None
    files: tuple[str, ...] = ()
    t: float = attrs.field(factory=_now)


JournalRecord: TypeAlias = (
    AssetRecord
    | SubmittingRecord
    | NotSubmittedRecord
    | SubmittedRecord
    | SucceededRecord
    | FailedRecord
)

# A job's task is written only when it is not InstantID's: a journal of an earlier version
# re-encodes to the very same bytes.
for _cls in (SubmittingRecord, SubmittedRecord, SucceededRecord, FailedRecord):
    converter.register_unstructure_hook(
        _cls, make_dict_unstructure_fn(_cls, converter, task=override(omit_if_default=True))
    )

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once, not per line
_structure_record = converter.get_structure_hook(JournalRecord)
# What reading a line can raise: not JSON, or JSON that is not a record the converter knows.
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, cattrs.BaseValidationError)


def _checksum(body: bytes) -> str:
    return f"{zlib.crc32(body):08x}"


def encode_record(record: JournalRecord) -> bytes:
    """The record's line: compact JSON with its checksum as the last key, and a newline."""
    body = _COMPACT.encode(converter.unstructure(record)).encode()
    return body[:-1] + b',"c":"' + _checksum(body).encode() + b'"}\n'


def decode_record(line: bytes) -> JournalRecord:
    """The record of one whole line; ``ValueError`` if it is damaged."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checksum = data.pop("c", None)
        if checksum is not None and checksum != _checksum(_COMPACT.encode(data).encode()):
            raise ValueError("checksum mismatch")
        record: JournalRecord = _structure_record(data, JournalRecord)
    except _UNREADABLE as exc:
        raise ValueError(str(exc)) from exc
    return record


class JournalDamagedError(NovitaError):
    """Lines of the journal other than a torn last one cannot be read: the record of money spent
    may be incomplete, so the run refuses to start until the journal is repaired."""

    def __init__(self, path: Path, lines: tuple[int, ...] | list[int]) -> None:
        self.path = path
        self.lines = tuple(lines)
        shown = ", ".join(map(str, self.lines[:10])) + (" ..." if len(self.lines) > 10 else "")
        where = "line" if len(self.lines) == 1 else "lines"
        super().__init__(
            f"the journal {path} is damaged: {where} {shown} cannot be read. Nothing was sent. "
            f"Run `novita-async journal repair {path.parent}` to keep every good record and "
            "mark the jobs whose records were lost as of unknown outcome"
        )

    @property
    def reason(self) -> str:
        return "JOURNAL_DAMAGED"


def _read(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes, JournalRecord | None]]:
    """Each whole line (numbered from 1) with its record, None if it is damaged; a torn last line
    (a crash mid-write) is left out."""
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return
        try:
            yield number, raw, decode_record(raw)
        except ValueError:
            yield number, raw, None


@attrs.frozen
class JournalScan:
    """A journal's good records and the numbers (from 1) of its damaged lines."""

    records: tuple[JournalRecord, ...] = ()
    damaged: tuple[int, ...] = ()

    @classmethod
    def of(cls, lines: Iterable[bytes]) -> JournalScan:
        records: list[JournalRecord] = []
        damaged: list[int] = []
        for number, _, record in _read(lines):
            if record is None:
                damaged.append(number)
            else:
                records.append(record)
        return cls(tuple(records), tuple(damaged))


def scan_journal(path: Path) -> JournalScan:
    """Read every line of the journal at ``path`` (none if it does not exist)."""
    try:
        with path.open("rb") as handle:
            return JournalScan.of(handle)
    except FileNotFoundError:
        return JournalScan()


# --- a job's state: the lines folded --------------------------------------------------------------


class JobPhase(enum.StrEnum):
    """The last thing that happened to a job, as far as the journal knows."""

    SUBMITTING = "submitting"
    """A POST was (or was about to be) sent, and no answer recorded: its outcome is unknown."""
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_STATUS_OF_PHASE = {JobPhase.SUCCEEDED: JobStatus.SUCCEEDED, JobPhase.FAILED: JobStatus.FAILED}


@attrs.frozen
class JobState:
    """What the journal knows about one job id: the last thing that happened to it."""

    phase: JobPhase
    fingerprint: str | None = None
    task_id: str | None = None
    other_tasks: tuple[str, ...] = ()
    """The task ids of the job's other attempts (none for most jobs: no memory is spent)."""
    seed: int | None = None
    files: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    """Of a succeeded job: each file's size in bytes (none in an older journal)."""
    digests: tuple[str, ...] = ()
    """Of a succeeded job: each file's SHA-256, hex (none in an older journal)."""
    error: JobError | None = None
    before: JobState | None = None
    """While submitting: the state to go back to if the service refuses the submission."""
    task: str = INSTANT_ID

    @property
    def tasks(self) -> frozenset[str]:
        """Every task id the journal recorded for the job, this attempt's and the others'."""
        return frozenset((*self.other_tasks, self.task_id) if self.task_id else self.other_tasks)

    @property
    def ended(self) -> bool:
        return self.phase in _STATUS_OF_PHASE

    def outcome(self, job_id: str, *, replayed: bool) -> JobOutcome:
        status = _STATUS_OF_PHASE.get(self.phase)
        if status is None:
            raise ValueError(f"job {job_id!r} has not ended")
        return JobOutcome(
            job_id, status, self.task_id, self.seed, self.files, self.error, replayed, self.task
        )


def fold(records: Iterable[JournalRecord]) -> tuple[dict[AssetKey, str], dict[str, JobState]]:
    """What ``records`` (in order) say: the asset id of each uploaded content (by its endpoint
    and SHA-256), and the state of each job, in the order the jobs last ended (results.jsonl's)."""
    assets: dict[AssetKey, str] = {}
    jobs: dict[str, JobState] = {}
    for record in records:
        _apply(record, assets, jobs)
    return assets, jobs


def _apply(
    record: JournalRecord,
    assets: dict[AssetKey, str],
    jobs: dict[str, JobState],
    *,
    new_jobs: bool = True,
) -> None:
    """Fold one record into ``assets`` and ``jobs``; that of a job ``jobs`` does not hold is left
    out unless ``new_jobs``."""
    if isinstance(record, AssetRecord):
        if record.endpoint is not None:
            assets[(record.endpoint, record.sha256)] = record.asset_id
        return
    previous = jobs.get(record.id)
    if previous is None and not new_jobs:
        return
    if isinstance(record, NotSubmittedRecord):
        if previous is None or previous.before is None:
            jobs.pop(record.id, None)
        else:
            jobs[record.id] = previous.before
        return
    r = record
    fp = r.fingerprint or (previous.fingerprint if previous else None)  # else the one known
    known = previous.tasks if previous else frozenset()
    if isinstance(r, SubmittingRecord):
        jobs[r.id] = JobState(
            JobPhase.SUBMITTING, fp, None, (*known,), before=previous, task=r.task
        )
        return
    tasks = (*(known - {r.task_id}),)
    if isinstance(r, SubmittedRecord):
        jobs[r.id] = JobState(JobPhase.SUBMITTED, fp, r.task_id, tasks, task=r.task)
        return
    if isinstance(r, SucceededRecord):
        state = JobState(
            JobPhase.SUCCEEDED,
            fp,
            r.task_id,
            tasks,
            r.seed,
            r.files,
            r.sizes,
            r.digests,
            task=r.task,
        )
    else:
        state = JobState(
            JobPhase.FAILED, fp, r.task_id, tasks, files=r.files, error=r.error, task=r.task
        )
    # Keep ``jobs`` in the order jobs ended, which is the order results.jsonl lists them.
    jobs.pop(r.id, None)
    jobs[r.id] = state


# --- the journal file, open for appending ---------------------------------------------------------


def _open_locked(path: Path, flags: int, in_use: str) -> int:
    fd = os.open(path, flags, 0o644)
    try:
        lock_or_refuse(fd, in_use)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Journal:
    """The journal of one output folder, open for appending. In memory: the state of each job it
    held when opened (what a resume decides on), and each uploaded content's asset id. Jobs new
    to this run are only written, so a fresh run of any size costs no memory per job here."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        scan = scan_journal(path)
        if scan.damaged:
            raise JournalDamagedError(path, scan.damaged)
        self.assets, self.jobs = fold(scan.records)
        self.reserve_path = path.with_name(path.name + ".reserve")
        self.reserve_used = False
        """True once the reserve was spent on a record the full disk would have refused."""
        path.parent.mkdir(parents=True, exist_ok=True)
        in_use = f"{path} is in use by another run; one run per output folder"
        fd = _open_locked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, in_use)
        try:
            self._cut_torn_tail(fd)
            self._size = os.fstat(fd).st_size
            self._keep_reserve()
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def _keep_reserve(self) -> None:
        """The reserve file at its full size (a run after a full disk restores it); a disk with
        no room for it is no reason not to run."""
        with contextlib.suppress(OSError):
            if os.path.getsize(self.reserve_path) >= RESERVE_BYTES:
                return
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
        with self.path.open("rb") as handle:
            handle.seek(max(0, size - 65536))
            tail = handle.read()
        if not tail or tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > 65536:
            os.write(fd, b"\n")  # torn longer than the window: ended instead, the loader skips it
        else:
            os.truncate(self.path, size - len(tail) + cut + 1)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        _apply(record, self.assets, self.jobs, new_jobs=False)  # new jobs: on disk, not in memory

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

    def record_submitting(
        self, job_id: str, fingerprint: str | None, task: str = INSTANT_ID
    ) -> None:
        self._append(SubmittingRecord(id=job_id, task=task, fingerprint=fingerprint))

    def record_not_submitted(self, job_id: str) -> None:
        self._append(NotSubmittedRecord(id=job_id))

    def record_submitted(
        self, job_id: str, task_id: str, fingerprint: str | None, task: str = INSTANT_ID
    ) -> None:
        self._append(
            SubmittedRecord(id=job_id, task=task, task_id=task_id, fingerprint=fingerprint)
        )

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
        o, fp = outcome, fingerprint
        self._append(
            SucceededRecord(
                id=o.job_id,
                task=o.task,
                task_id=o.task_id,
                fingerprint=fp,
                seed=o.seed,
                files=o.files,
                sizes=sizes,
                digests=digests,
            )
            if o.ok
            else FailedRecord(
                id=o.job_id,
                task=o.task,
                task_id=o.task_id,
                fingerprint=fp,
                error=o.error,
                files=o.files,
            )
        )

    def ended_outcomes(self) -> Iterator[JobOutcome]:
        """Every ended job's outcome, in the order the jobs ended."""
        for job_id, state in self.jobs.items():
            if state.ended:
                yield state.outcome(job_id, replayed=True)


# --- repair ---------------------------------------------------------------------------------------

_LOST = (
    "its journal record was damaged and repaired: a task may exist and be billed; look for it "
    "before submitting again"
)
_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _id_in(damaged: bytes) -> str | None:
    """The job id a damaged line names, when it can still be read from it."""
    match = _ID.search(damaged)
    if match is None:
        return None
    try:
        value = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


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
    """Repair the journal at ``path`` (refused while a run holds it): keep every good record, and
    let nothing be paid twice. A damaged line may have been an intent, so every job it still
    names is recorded failed ``SUBMIT_OUTCOME_UNKNOWN`` unless its last good record shows its task
    or its images; damaged lines naming no readable job id are listed for the user to look into.
    The original is kept beside the repaired file (``<journal>.damaged-<time>``)."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        raise ConfigurationError(f"there is no journal at {path}") from None
    in_use = f"{path} is in use by a run; repair it once the run has ended"
    fd = _open_locked(path, os.O_RDONLY, in_use)
    try:
        read = list(_read(lines))
        kept = [raw for _, raw, record in read if record is not None]
        damaged = [(number, _id_in(raw)) for number, raw, record in read if record is None]
        if not damaged:
            return RepairReport(path, len(kept), (), (), (), None)
        last = {r.id: r for _, _, r in read if r is not None and not isinstance(r, AssetRecord)}
        unknown = [
            job_id
            for job_id in dict.fromkeys(job_id for _, job_id in damaged if job_id is not None)
            if not isinstance(last.get(job_id), SubmittedRecord | SucceededRecord)
        ]
        error = JobError("SubmitOutcomeUnknownError", "SUBMIT_OUTCOME_UNKNOWN", _LOST)
        marks = [encode_record(FailedRecord(id=job_id, error=error)) for job_id in unknown]
        backup = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        os.link(path, backup)
        write_atomically(path, [*kept, *marks])
    finally:
        os.close(fd)
    unattributed = tuple(number for number, job_id in damaged if job_id is None)
    damaged_lines = tuple(number for number, _ in damaged)
    return RepairReport(path, len(kept), damaged_lines, tuple(unknown), unattributed, backup)


# --- results.jsonl --------------------------------------------------------------------------------

_RESULTS_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps builds one per call


@attrs.frozen
class ResultLine:
    """One line of ``results.jsonl``: ``id``, ``status`` (``"succeeded"`` or ``"failed"``),
    ``task_id``, ``seed``, ``files`` and ``error`` (``{type, reason, message}`` or ``null``), and
    a v3 job's ``task`` (none for InstantID, as 0.1.0 and 0.2.0 wrote them)."""

    id: str
    status: JobStatus
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    error: JobError | None = None
    task: str = INSTANT_ID

    @classmethod
    def of(cls, outcome: JobOutcome) -> ResultLine:
        o = outcome
        return cls(o.job_id, o.status, o.task_id, o.seed, o.files, o.error, o.task)

    def encode(self) -> bytes:
        return (_RESULTS_ENCODER.encode(_unstructure_line(self)) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> ResultLine:
        """The line's record; ``ValueError`` if it is torn or not one."""
        if not line.endswith(b"\n"):
            raise ValueError("a torn line")  # by a crash: the job's state is in the journal
        try:
            parsed: ResultLine = converter.structure(json.loads(line), cls)
        except _UNREADABLE as exc:
            raise ValueError(f"not a results line: {exc}") from None
        return parsed


_unstructure_line = make_dict_unstructure_fn(
    ResultLine, converter, task=override(omit_if_default=True)
)


def _encoded(outcome: JobOutcome) -> bytes:
    return ResultLine.of(outcome).encode()


def _replace(path: Path, lines: Iterable[bytes], folder: str) -> None:
    """Replace the file at ``path`` with ``lines``, atomically, making its ``folder`` if need be."""
    with local_io(f"creating {folder}", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lines)


class ResultsFile:
    """``results.jsonl``: each ended job appends its line (one ``os.write``, so the file can be
    followed live). The journal is the truth: each run rebuilds the file from it on the way in
    and merges it on the way out, removing a torn line or a job listed twice by a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def rebuild(self, outcomes: Iterable[JobOutcome]) -> None:
        """Replace the file with exactly ``outcomes``, atomically; then reopen it for appending."""
        self._rewrite(map(_encoded, outcomes))

    def merge(self, outcomes: Iterable[JobOutcome], known: Container[str]) -> None:
        """Bring the lines of the ``known`` jobs up to date with ``outcomes``; the others (this
        run's new jobs) are streamed as they are. A known job keeps the place of its last line,
        where the journal orders it too: a run that only replays the journal writes the same file.
        """
        if not known:
            return  # a run that began with no jobs known: its lines are the ones it appended
        final = {outcome.job_id: outcome for outcome in outcomes}
        self.close()
        with local_io(f"reading {self.path.name}", self.path):
            last = {job_id: n for n, (job_id, _) in enumerate(self._lines()) if job_id in final}

        def merged() -> Iterator[bytes]:
            for n, (job_id, line) in enumerate(self._lines()):
                if job_id is None or (job_id in known and job_id not in final):
                    continue  # torn or unreadable, or a job that has not ended after all
                if job_id not in final:
                    yield line
                elif last[job_id] == n:  # its last line: the journal's word, in its place
                    yield _encoded(final[job_id])
            # The jobs with no line at all (the file was lost): at the end.
            yield from (_encoded(final[job_id]) for job_id in final if job_id not in last)

        self._rewrite(merged())

    def _rewrite(self, lines: Iterable[bytes]) -> None:
        self.close()
        _replace(self.path, lines, f"the folder of {self.path.name}")
        with local_io(f"opening {self.path.name}", self.path):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _lines(self) -> Iterator[tuple[str | None, bytes]]:
        """Each line of the file with its job id (None for a torn or unreadable line)."""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as handle:
            for line in handle:
                try:
                    yield ResultLine.decode(line).id, line
                except ValueError:
                    yield None, line

    def listed(self) -> int | None:
        """How many jobs the file lists (None if there is no file)."""
        if not self.path.exists():
            return None
        return len({job_id for job_id, _ in self._lines() if job_id is not None})

    def append(self, outcome: JobOutcome) -> None:
        if self._fd is None:
            raise RuntimeError("results file is not open")
        write_all(self._fd, _encoded(outcome), path=self.path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# --- the object-store mirror: segments ------------------------------------------------------------


class SegmentStore(Protocol):
    """What the mirror needs of an object-store output (``ObjectOutput``)."""

    url: str

    def location(self, name: str) -> str: ...
    async def list_keys(self, prefix: str) -> list[str]: ...
    async def get_bytes(self, key: str) -> bytes | None: ...
    async def put_bytes(self, key: str, data: bytes, *, create: bool = False) -> None: ...
    async def delete(self, keys: list[str]) -> None: ...


_SEGMENT = re.compile(r"(\d{10})\.jsonl")
_READ_AT_ONCE = 16


def segment_key(key_prefix: str, seq: int) -> str:
    return f"{key_prefix}/{seq:010d}.jsonl"


class JournalsDisagreeError(ConfigurationError):
    """The store's journal and the staging folder's copy of it are of different runs: which one
    is right is the user's call, so nothing is sent until one of them is removed."""

    def __init__(self, stored: str, local: Path, detail: str) -> None:
        self.stored = stored
        self.local = local
        super().__init__(
            f"the journal in the store ({stored}) and the staging copy ({local}) disagree: "
            f"{detail}. Nothing was sent. To keep the store's, remove the staging folder "
            f"{local.parent}; to keep the staging copy's, remove the store's journal ({stored}) "
            "or write to another prefix"
        )

    @property
    def reason(self) -> str:
        return "JOURNALS_DISAGREE"


def _tasks(data: bytes) -> dict[str, frozenset[str]]:
    """The task ids of each job the journal lines ``data`` name (an intent alone names one)."""
    records = JournalScan.of(data.splitlines(keepends=True)).records
    jobs = fold(records)[1]
    return {
        r.id: state.tasks if (state := jobs.get(r.id)) else frozenset[str]()
        for r in records
        if not isinstance(r, AssetRecord)
    }


def _disagreement(stored: bytes, local: bytes) -> str | None:
    """Why the staging copy ``local`` cannot be of the same run as the store's ``stored`` lines,
    or None. Every intent is in the store before its POST is sent, so each task the staging copy
    knows is of a job the store's journal knows too, unless the two are of different runs."""
    if not stored or not local or local.startswith(stored) or stored.startswith(local):
        return None
    in_store = _tasks(stored)
    for job_id, tasks in _tasks(local).items():
        there = in_store.get(job_id)
        if tasks and there is None:
            return f"job {job_id!r} has task {min(tasks)} here and is unknown there"
        if tasks and there and not tasks & there:
            return f"job {job_id!r} has task {min(tasks)} here and task {min(there)} there"
    return None


class JournalMirror:
    """The segments of the journal at ``journal_path`` (the working copy, in the staging folder)
    under ``key_prefix`` in ``output``. :meth:`close` compacts them into one segment repeating
    everything before it, which replaces them: a crash in between loses and doubles nothing."""

    def __init__(self, output: SegmentStore, key_prefix: str, journal_path: Path) -> None:
        self.output = output
        self.key_prefix = key_prefix.strip("/")
        self.journal_path = journal_path
        self.segments_written = 0
        """Segments this mirror has written (compaction's included)."""
        self._next_seq = 0
        self._durable = 0  # bytes of the local file known to be in segments
        self._lock = anyio.Lock()
        self._pulled = False

    async def _segments(self) -> list[tuple[int, str]]:
        found = []
        for key in await self.output.list_keys(self.key_prefix + "/"):
            folder, _, name = key.rpartition("/")
            if (match := _SEGMENT.fullmatch(name)) is not None and folder == self.key_prefix:
                found.append((int(match.group(1)), key))
        return sorted(found)

    async def pull(self) -> None:
        """Make the local journal the segments' lines, then the local lines none holds (of a run
        here that crashed before they went up); :class:`JournalsDisagreeError` if of another run."""
        segments = await self._segments()

        async def read(item: tuple[int, str]) -> bytes:
            data = await self.output.get_bytes(item[1])
            if data is None:
                raise StorageError(
                    f"the journal segment {self.output.location(item[1])} vanished while read: "
                    "is another run compacting this journal?",
                    reason="STORAGE_CONFLICT",
                    url=self.output.url,
                )
            return data

        stored = b""
        for data in await map_limited(read, segments, _READ_AT_ONCE) if segments else []:
            # A compacted segment repeats everything before it: it replaces, not extends.
            stored = data if data.startswith(stored) else stored + data
        local = await anyio.to_thread.run_sync(self._local_tail, stored)
        self._next_seq = segments[-1][0] + 1 if segments else 0
        self._durable = len(stored)
        self._pulled = True
        if local is not None:  # else the local file is the stored lines already
            lines = [stored, *local]
            await anyio.to_thread.run_sync(_replace, self.journal_path, lines, "the staging folder")

    def _local_tail(self, stored: bytes) -> list[bytes] | None:
        """The whole local lines no segment holds, or None if the local file equals ``stored``;
        :class:`JournalsDisagreeError` if the two are of different runs."""
        try:
            local = self.journal_path.read_bytes()
        except FileNotFoundError:
            local = b""
        except OSError as exc:
            raise LocalIOError.from_os_error(exc, "reading the journal") from exc
        if local == stored:
            return None
        if (detail := _disagreement(stored, local)) is not None:
            where = self.output.location(self.key_prefix) + "/"
            raise JournalsDisagreeError(where, self.journal_path, detail)
        known = set(stored.splitlines(keepends=True))
        return [
            line
            for line in local.splitlines(keepends=True)
            if line.endswith(b"\n") and line not in known
        ]

    def _size(self) -> int:
        try:
            return os.stat(self.journal_path).st_size
        except FileNotFoundError:
            return 0

    async def durable(self) -> None:
        """Return once every line written to the local journal before this call is in a segment
        (between a job's intent and its POST); callers arriving meanwhile share the next one."""
        target = self._size()
        while self._durable < target:
            async with self._lock:
                if self._durable < target:
                    await self._flush()

    async def _flush(self) -> None:
        if not self._pulled:
            raise RuntimeError("JournalMirror.pull() must come first")
        # Read up to the file's size now: the journal appends whole lines between awaits.
        end = self._size()
        if end <= self._durable:
            return
        with (
            local_io("reading the journal", self.journal_path),
            self.journal_path.open("rb") as handle,
        ):
            handle.seek(self._durable)
            data = handle.read(end - self._durable)
        # Shielded: a PUT cancelled in flight may still land, and writing its key again at
        # close would be a false STORAGE_CONFLICT on a sound run.
        with anyio.CancelScope(shield=True):
            await self._put(data)
            self._durable = end

    async def _put(self, data: bytes) -> None:
        await self.output.put_bytes(segment_key(self.key_prefix, self._next_seq), data, create=True)
        self._next_seq += 1
        self.segments_written += 1

    async def flush(self) -> None:
        """Put every line written so far into a segment (none if there is nothing new)."""
        async with self._lock:
            await self._flush()

    async def keep_flushing(self, every: float = JOURNAL_FLUSH_SECONDS) -> None:
        """Flush every ``every`` seconds until cancelled (a failure is raised)."""
        while True:
            await anyio.sleep(every)
            await self.flush()

    async def close(self) -> None:
        """The last lines up, then one segment holding everything; the older ones deleted."""
        async with self._lock:
            await self._flush()
            older = await self._segments()
            if len(older) <= 1:
                return
            with local_io("reading the journal", self.journal_path):
                everything = self.journal_path.read_bytes()
            await self._put(everything)
            await self.output.delete([k for _, k in older])
