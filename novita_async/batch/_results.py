"""``OUT/results.jsonl``: one line per job, written as each job ends and rebuilt from the journal.

During a run each ended job appends its line (one ``os.write`` on an ``O_APPEND`` descriptor), so
the file can be followed live. The journal is the source of truth: at the start and at the end of
every run (also a cancelled one) the file is rebuilt from it, through a temporary file in the same
folder and ``os.replace`` (at the end, the lines of jobs new to this run are carried over from the
file itself, since the journal keeps no state in memory for them). A crash can leave a torn last
line or a job listed twice (a failed job retried with ``retry_failed``); the next run's rebuild
removes both. After a run that ends, the
file lists each job the journal knows exactly once, with its last state, in the order the jobs
ended.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Container, Iterable
from pathlib import Path

from .._atomic import write_atomically
from ._job import JobOutcome

__all__ = ["RESULTS_NAME", "ResultsFile", "result_line"]

RESULTS_NAME = "results.jsonl"


def result_line(outcome: JobOutcome) -> bytes:
    return (json.dumps(outcome.to_result_line(), ensure_ascii=False) + "\n").encode()


class ResultsFile:
    """The results file of one output folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def rebuild(self, outcomes: Iterable[JobOutcome]) -> None:
        """Replace the file with exactly ``outcomes``, atomically; then reopen it for appending."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, map(result_line, outcomes))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def merge(self, outcomes: Iterable[JobOutcome], known: Container[str]) -> None:
        """Replace the lines of the ``known`` jobs with ``outcomes``, keep every other line.

        At the end of a run the journal holds only the jobs it knew before the run (see
        :class:`~._journal.Journal`); the lines this run appended for new jobs are kept as they
        are, streamed from the file, so memory does not grow with the size of the run.
        """
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                existing: Iterable[bytes] = stack.enter_context(self.path.open("rb"))
            except FileNotFoundError:
                existing = ()
            others = (line for line in existing if _new_job_line(line, known))
            write_atomically(self.path, itertools.chain(map(result_line, outcomes), others))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, outcome: JobOutcome) -> None:
        if self._fd is None:
            raise RuntimeError("results file is not open")
        data = memoryview(result_line(outcome))
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _new_job_line(line: bytes, known: Container[str]) -> bool:
    if not line.endswith(b"\n"):
        return False  # torn by a crash: the job's state is in the journal
    try:
        job_id = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return False
    return isinstance(job_id, str) and job_id not in known
