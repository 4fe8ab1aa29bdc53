"""The durable journal: one JSON line per state change, the run's memory across crashes.

Records (``"t"`` is a Unix timestamp on each)::

    {"type": "asset", "sha256", "asset_id"}                 an input content was uploaded
    {"type": "submitted", "id", "task_id", "fingerprint"}   the POST answered with a task id
    {"type": "succeeded", "id", "task_id", "seed", "files"} every image is on disk
    {"type": "failed", "id", "task_id", "fingerprint", "error": {type, reason, message}}

Durability: each record is one ``os.write`` of one line to a file descriptor opened with
``O_APPEND``. The line is in the kernel's page cache when ``write`` returns, so ``kill -9`` at any
moment loses nothing already written and can tear at most the line being written; the loader
ignores a line that does not parse and cuts a torn tail off before appending. Surviving a power
loss as well needs ``fsync=True`` (one ``fsync`` per record, which blocks the event loop briefly).

Writes are synchronous on purpose: the ``submitted`` record is written in the same step that
receives the task id, with no ``await`` in between, so no cancellation can fall between the two.
That leaves one window where a crash can cause a second submission of the same job: after the POST
has been sent and before its answer has been read and recorded (the time of one HTTP round trip).
A process killed in that window left a task the journal does not know about; the rerun submits the
job again. At most ``submit_concurrency`` POSTs (8 by default) are in flight at any moment, so one
hard kill costs at most that many duplicate tasks, whatever the run's concurrency. Cancellation
(Ctrl-C, ``fail_fast``) does not open the window: the runner shields a submission in flight until
its answer is recorded.

The journal is locked (``flock``) while a run holds it, so two runs cannot share an output folder.
Journals written before ``submitted`` carried the fingerprint have a ``validated`` record (id and
fingerprint) before it; they load as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeAlias

import attrs

from .._atomic import write_all
from .._exceptions import ConfigurationError
from ._job import JobError, JobOutcome

try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["JOURNAL_NAME", "JobState", "Journal", "open_journal", "read_records"]

JOURNAL_NAME = ".novita-journal.jsonl"

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once, not per line

JobPhase: TypeAlias = Literal["validated", "submitted", "succeeded", "failed"]


@attrs.define
class JobState:
    """What the journal knows about one job id: the last thing that happened to it."""

    phase: JobPhase
    fingerprint: str | None = None
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    error: JobError | None = None

    @property
    def ended(self) -> bool:
        return self.phase in ("succeeded", "failed")

    def outcome(self, job_id: str, *, replayed: bool) -> JobOutcome:
        if self.phase not in ("succeeded", "failed"):
            raise ValueError(f"job {job_id!r} has not ended")
        return JobOutcome(
            job_id=job_id,
            status="succeeded" if self.phase == "succeeded" else "failed",
            task_id=self.task_id,
            seed=self.seed,
            files=self.files,
            error=self.error,
            replayed=replayed,
        )


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's records in order, skipping lines that do not parse (a torn last line)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                return  # torn by a crash mid-write
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("type"), str):
                yield record


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


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
        self.assets: dict[str, str] = {}
        self.jobs: dict[str, JobState] = {}
        self._fd: int | None = None
        self._loading = True
        self._load()
        self._loading = False
        self._open()

    # --- loading ------------------------------------------------------------------------------

    def _load(self) -> None:
        for record in read_records(self.path):
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "asset":
            sha, asset_id = record.get("sha256"), record.get("asset_id")
            if isinstance(sha, str) and isinstance(asset_id, str) and asset_id:
                self.assets[sha] = asset_id
            return
        job_id = record.get("id")
        if not isinstance(job_id, str):
            return
        previous = self.jobs.get(job_id)
        if previous is None and not self._loading:
            return  # a job new to this run: its records are on disk, not needed in memory
        if kind == "validated":
            self.jobs[job_id] = JobState("validated", _str_or_none(record.get("fingerprint")))
        elif kind == "submitted":
            self.jobs[job_id] = JobState(
                "submitted",
                _str_or_none(record.get("fingerprint"))
                or (previous.fingerprint if previous else None),
                task_id=_str_or_none(record.get("task_id")),
            )
        elif kind in ("succeeded", "failed"):
            files = record.get("files")
            state = JobState(
                "succeeded" if kind == "succeeded" else "failed",
                _str_or_none(record.get("fingerprint"))
                or (previous.fingerprint if previous else None),
                task_id=_str_or_none(record.get("task_id")),
                seed=_int_or_none(record.get("seed")),
                files=tuple(f for f in files if isinstance(f, str))
                if isinstance(files, list)
                else (),
                error=None if kind == "succeeded" else JobError.from_json(record.get("error")),
            )
            # Keep ``jobs`` in the order jobs ended, which is the order results.jsonl lists them.
            self.jobs.pop(job_id, None)
            self.jobs[job_id] = state

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ConfigurationError(
                        f"{self.path} is in use by another run; one run per output folder"
                    ) from None
            self._cut_torn_tail(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

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

    def _append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        record["t"] = round(time.time(), 3)
        write_all(self._fd, (_ENCODER.encode(record) + "\n").encode())
        if self._fsync:
            os.fsync(self._fd)
        self._apply(record)

    def record_asset(self, sha256: str, asset_id: str) -> None:
        if self.assets.get(sha256) != asset_id:
            self._append({"type": "asset", "sha256": sha256, "asset_id": asset_id})

    def record_submitted(self, job_id: str, task_id: str, fingerprint: str | None) -> None:
        record = {"type": "submitted", "id": job_id, "task_id": task_id, "fingerprint": fingerprint}
        self._append(record)

    def record_outcome(self, outcome: JobOutcome, fingerprint: str | None) -> None:
        record: dict[str, Any] = {
            "type": outcome.status,
            "id": outcome.job_id,
            "task_id": outcome.task_id,
            "fingerprint": fingerprint,
        }
        if outcome.status == "succeeded":
            record.update(seed=outcome.seed, files=list(outcome.files))
        else:
            record["error"] = outcome.error.to_json() if outcome.error else None
        self._append(record)

    def ended_outcomes(self) -> Iterator[JobOutcome]:
        """Every ended job's outcome, in the order the jobs ended."""
        for job_id, state in self.jobs.items():
            if state.ended:
                yield state.outcome(job_id, replayed=True)


@contextlib.contextmanager
def open_journal(path: Path, *, fsync: bool = False) -> Iterator[Journal]:
    journal = Journal(path, fsync=fsync)
    try:
        yield journal
    finally:
        journal.close()
