"""``OUT/results.jsonl``: one line per job, written as each job ends and rebuilt from the journal.

During a run each ended job appends its line (one ``os.write`` on an ``O_APPEND`` descriptor), so
the file can be followed live. The journal is the source of truth: at the start of every run the
file is rebuilt from it, through a temporary file in the same folder and ``os.replace``; at the end
(also of a cancelled run) the lines of the jobs the journal knew before the run are brought up to
date in place (:meth:`ResultsFile.merge`), while the lines of jobs new to this run are carried over
from the file itself, since the journal keeps no state in memory for them. A crash can leave a
torn last line or a job listed twice (a failed job retried with ``retry_failed``); the next run's
rebuild removes both. After a run that ends, the file lists each job the journal knows exactly
once, with its last state, in the order the jobs ended. A write the file system refuses (a full
disk) raises :class:`~novita_async.LocalIOError` and leaves no part of a line behind.

Each line is a :class:`ResultLine`: ``id``, ``status`` (``"succeeded"`` or ``"failed"``),
``task_id``, ``seed``, ``files`` and ``error`` (``{type, reason, message}`` or ``null``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Container, Iterable, Iterator
from pathlib import Path

import attrs
import cattrs

from .._atomic import local_io, write_all, write_atomically
from .._converter import converter
from ._job import JobError, JobOutcome, JobStatus

__all__ = ["RESULTS_NAME", "ResultLine", "ResultsFile"]

RESULTS_NAME = "results.jsonl"


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # built once: json.dumps builds one per call


@attrs.frozen
class ResultLine:
    """One line of ``results.jsonl``: a job's outcome under the file's names."""

    id: str
    status: JobStatus
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    error: JobError | None = None

    @classmethod
    def of(cls, outcome: JobOutcome) -> ResultLine:
        return cls(
            id=outcome.job_id,
            status=outcome.status,
            task_id=outcome.task_id,
            seed=outcome.seed,
            files=outcome.files,
            error=outcome.error,
        )

    def encode(self) -> bytes:
        return (_ENCODER.encode(converter.unstructure(self)) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> ResultLine:
        """The line's record; ``ValueError`` if it is torn or not one."""
        if not line.endswith(b"\n"):
            raise ValueError("a torn line")  # by a crash: the job's state is in the journal
        try:
            parsed: ResultLine = converter.structure(json.loads(line), cls)
        except (TypeError, KeyError, AttributeError, cattrs.BaseValidationError) as exc:
            raise ValueError(f"not a results line: {exc}") from None
        return parsed


def _encoded(outcome: JobOutcome) -> bytes:
    return ResultLine.of(outcome).encode()


class ResultsFile:
    """The results file of one output folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def rebuild(self, outcomes: Iterable[JobOutcome]) -> None:
        """Replace the file with exactly ``outcomes``, atomically; then reopen it for appending."""
        self.close()
        self._make_folder()
        write_atomically(self.path, map(_encoded, outcomes))
        self._open()

    def merge(self, outcomes: Iterable[JobOutcome], known: Container[str]) -> None:
        """Bring the lines of the ``known`` jobs up to date with ``outcomes``, in place.

        At the end of a run the journal holds only the jobs it knew before the run (see
        :class:`~._journal.Journal`), whose ended ``outcomes`` it gives here; the lines this run
        appended for new jobs are kept as they are, streamed from the file, so memory does not
        grow with the size of the run. A known job keeps the place of its last line, which is
        where the journal orders it too (by when it last ended): a later run that only replays
        the journal writes the very same file.
        """
        if not known:
            # A run that began with no jobs known: its lines are exactly the ones it appended.
            return
        final = {outcome.job_id: outcome for outcome in outcomes}
        self.close()
        self._make_folder()
        lines_left = dict.fromkeys(final, 0)
        with local_io(f"reading {self.path.name}", self.path):
            for job_id, _ in self._lines():
                if job_id in lines_left:
                    lines_left[job_id] += 1

        missing = [job_id for job_id, count in lines_left.items() if count == 0]

        def merged() -> Iterator[bytes]:
            for job_id, line in self._lines():
                if job_id is None or (job_id in known and job_id not in final):
                    continue  # torn or unreadable, or a job that has not ended after all
                if job_id not in final:
                    yield line
                    continue
                lines_left[job_id] -= 1
                if lines_left[job_id] == 0:  # its last line: the journal's word, in its place
                    yield _encoded(final[job_id])
            for job_id in missing:  # no line at all (the file was lost): at the end
                yield _encoded(final[job_id])

        write_atomically(self.path, merged())
        self._open()

    def _make_folder(self) -> None:
        with local_io(f"creating the folder of {self.path.name}", self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        with local_io(f"opening {self.path.name}", self.path):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _lines(self) -> Iterator[tuple[str | None, bytes]]:
        """Each line of the file with its job id (None for a torn or unreadable line)."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                yield _job_id(line), line

    def append(self, outcome: JobOutcome) -> None:
        if self._fd is None:
            raise RuntimeError("results file is not open")
        write_all(self._fd, _encoded(outcome), path=self.path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _job_id(line: bytes) -> str | None:
    try:
        return ResultLine.decode(line).id
    except ValueError:
        return None
