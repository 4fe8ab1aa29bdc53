"""``OUT/results.jsonl``: one line per job, written as each job ends and rebuilt from the journal.

During a run each ended job appends its line (one ``os.write`` on an ``O_APPEND`` descriptor), so
the file can be followed live. The journal is the source of truth: at the start and at the end of
every run (also a cancelled one) the file is rebuilt from it, through a temporary file in the same
folder and ``os.replace``. A crash can leave a torn last line or a job listed twice (a failed job
retried with ``retry_failed``); the next run's rebuild removes both. After a run that ends, the
file lists each job the journal knows exactly once, with its last state, in the order the jobs
ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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
