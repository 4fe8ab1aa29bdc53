"""What is in OUT (or the store) is the truth: the outputs of the jobs the journal calls succeeded,
checked against it.

On resume (:func:`check_outputs`, before ``results.jsonl`` is rebuilt) each succeeded job's files
are looked at: in a local OUT one ``stat`` per file (there, and of the size recorded); in an
object store one listing of the prefix (keys and sizes). A job whose image is missing or of
another size is recorded failed ``OUTPUT_MISSING`` with its task id, so nothing says it succeeded;
the run fetches its images again from that task's result, which costs nothing (no submission),
and a job the service no longer has a task for ends ``OUTPUT_LOST``, paid for again only with
``retry_failed``. ``status --verify`` (:func:`local_problems` with ``rehash``) hashes each file
against the SHA-256 the journal recorded, as ``rclone check`` does.

A journal written before sizes and digests were recorded has neither: its files are only checked
for being there.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio.to_thread
import attrs

from .._exceptions import NovitaError
from ._destination import Destination, ObjectOutput
from ._journal import JobPhase, JobState, Journal
from ._recording import failed_outcome
from ._saving import file_digest

__all__ = [
    "OUTPUT_LOST",
    "OUTPUT_MISSING",
    "FileProblem",
    "OutputLostError",
    "OutputMissingError",
    "Problem",
    "check_outputs",
    "find_output_errors",
    "local_problems",
    "output_errors",
    "stored_problems",
]

OUTPUT_MISSING = "OUTPUT_MISSING"
OUTPUT_LOST = "OUTPUT_LOST"


class Problem(enum.StrEnum):
    """What is wrong with one file of a succeeded job."""

    MISSING = "missing"
    WRONG_SIZE = "of another size than recorded"
    DAMAGED = "damaged (its SHA-256 differs from the one recorded)"


@attrs.frozen
class FileProblem:
    name: str
    problem: Problem

    def __str__(self) -> str:
        return f"{self.name} is {self.problem}"


def _shown(problems: tuple[FileProblem, ...]) -> str:
    shown = "; ".join(map(str, problems[:3]))
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


class OutputMissingError(NovitaError):
    """A job the journal recorded succeeded has an image missing or damaged: the run fetches its
    images again from its task's result (free: nothing is submitted)."""

    def __init__(self, where: str, task_id: str, problems: tuple[FileProblem, ...]) -> None:
        self.task_id = task_id
        self.problems = problems
        super().__init__(
            f"recorded succeeded, but in {where} {_shown(problems)}: a run with this job fetches "
            f"its images again from task {task_id}, at no cost"
        )

    @property
    def reason(self) -> str:
        return OUTPUT_MISSING


class OutputLostError(NovitaError):
    """A job's image is missing and the service no longer has its task: only a new task (paid
    for) can make it again, which a run does only when told to (``retry_failed``)."""

    def __init__(self, task_id: str | None, detail: str) -> None:
        self.task_id = task_id
        what = f"the service no longer has task {task_id}" if task_id else "no task id recorded"
        super().__init__(
            f"{detail}, and {what} to fetch it again from; rerun with --retry-failed "
            "(retry_failed) to pay for a new task"
        )

    @property
    def reason(self) -> str:
        return OUTPUT_LOST


def _problems(
    state: JobState,
    size_of: Callable[[str], int | None],
    digest_of: Callable[[str], str | None] | None = None,
) -> list[FileProblem]:
    """What is wrong with the files of a succeeded job, each file's size (None: not there) and,
    with ``digest_of``, its SHA-256 given by name: missing, of another size than recorded, or of
    another SHA-256."""
    problems = []
    for n, name in enumerate(state.files):
        size = size_of(name)
        if size is None:
            problems.append(FileProblem(name, Problem.MISSING))
        elif n < len(state.sizes) and size != state.sizes[n]:
            problems.append(FileProblem(name, Problem.WRONG_SIZE))
        elif digest_of is not None and n < len(state.digests):
            digest = digest_of(name)
            if digest is None:
                problems.append(FileProblem(name, Problem.MISSING))
            elif digest != state.digests[n]:
                problems.append(FileProblem(name, Problem.DAMAGED))
    return problems


def local_problems(folder: Path, state: JobState, *, rehash: bool = False) -> list[FileProblem]:
    """What is wrong with the files of a succeeded job in ``folder`` (blocking): one ``stat`` per
    file, and (``rehash``) its content hashed."""

    def size_of(name: str) -> int | None:
        try:
            found = os.stat(folder / name)
        except OSError:
            return None
        return found.st_size if stat.S_ISREG(found.st_mode) else None

    def digest_of(name: str) -> str | None:
        try:
            return file_digest(folder / name)[1]
        except OSError:
            return None

    return _problems(state, size_of, digest_of if rehash else None)


def stored_problems(sizes: Mapping[str, int], state: JobState) -> list[FileProblem]:
    """What is wrong with the files of a succeeded job, given the store's ``sizes`` by key."""
    return _problems(state, sizes.get)


def _succeeded(jobs: Mapping[str, JobState]) -> dict[str, JobState]:
    return {job_id: state for job_id, state in jobs.items() if state.phase is JobPhase.SUCCEEDED}


def output_errors(
    jobs: Mapping[str, JobState], where: str, look: Callable[[JobState], list[FileProblem]]
) -> dict[str, NovitaError]:
    """The jobs of ``jobs`` recorded succeeded whose files ``look`` finds wrong, each with the
    error to record: ``OUTPUT_MISSING`` (fetched again from its task), or ``OUTPUT_LOST`` when
    no task id was recorded to fetch them from."""
    errors: dict[str, NovitaError] = {}
    for job_id, state in _succeeded(jobs).items():
        problems = tuple(look(state))
        if not problems:
            continue
        if state.task_id is None:
            detail = f"recorded succeeded, but in {where} {_shown(problems)}"
            errors[job_id] = OutputLostError(None, detail)
        else:
            errors[job_id] = OutputMissingError(where, state.task_id, problems)
    return errors


async def find_output_errors(
    destination: Destination, out_dir: Path, jobs: Mapping[str, JobState]
) -> dict[str, NovitaError]:
    """:func:`output_errors` of ``jobs`` in ``destination``: a local OUT's files looked at in a
    worker thread, a store's in one listing of its prefix."""
    if not _succeeded(jobs):
        return {}
    if isinstance(destination, ObjectOutput):
        sizes = await destination.list_sizes()
        return output_errors(jobs, destination.url, lambda state: stored_problems(sizes, state))
    return await anyio.to_thread.run_sync(
        lambda: output_errors(jobs, str(out_dir), lambda state: local_problems(out_dir, state))
    )


async def check_outputs(destination: Destination, out_dir: Path, journal: Journal) -> int:
    """Check the outputs of every job ``journal`` calls succeeded; record those whose images are
    missing or of another size ``OUTPUT_MISSING`` (``OUTPUT_LOST`` without a task id to fetch
    them from). Returns how many were recorded."""
    errors = await find_output_errors(destination, out_dir, journal.jobs)
    for job_id, error in errors.items():
        state = journal.jobs[job_id]
        journal.record_outcome(failed_outcome(job_id, error, state.task_id), state.fingerprint)
    return len(errors)
