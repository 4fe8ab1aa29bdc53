"""How a job's end is recorded: the journal first (the source of truth), then ``results.jsonl``,
then the summary's counts and the progress event.

A record that cannot be written (the disk is full, the folder became read-only) stops the run: the
job ends unrecorded and a rerun continues it. A record written with the journal's reserve (the
disk had no room left) stops the run too, once that record is safe.
"""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import LocalIOError
from ._events import BatchEventKind
from ._job import JobError, JobOutcome, JobStatus
from ._journal import Journal
from ._limits import RunGate, RunStopped
from ._results import ResultsFile
from ._summary import SummaryCounter

__all__ = ["Recorder", "failed_outcome"]

Emit = Callable[..., None]


def failed_outcome(
    job_id: str, error: BaseException, task_id: str | None, files: tuple[str, ...] = ()
) -> JobOutcome:
    return JobOutcome(
        job_id=job_id,
        status=JobStatus.FAILED,
        task_id=task_id,
        files=files,
        error=JobError.from_exception(error),
    )


class Recorder:
    def __init__(
        self,
        journal: Journal,
        results: ResultsFile,
        counter: SummaryCounter,
        gate: RunGate,
        emit: Emit,
    ) -> None:
        self._journal = journal
        self._results = results
        self._counter = counter
        self._gate = gate
        self._emit = emit

    def fail(
        self, job_id: str, error: BaseException, task_id: str | None, fingerprint: str | None
    ) -> JobOutcome:
        return self.end(failed_outcome(job_id, error, task_id), fingerprint, record=True)

    def end(
        self,
        outcome: JobOutcome,
        fingerprint: str | None,
        *,
        record: bool,
        sizes: tuple[int, ...] = (),
        digests: tuple[str, ...] = (),
    ) -> JobOutcome:
        if record:
            try:
                self._journal.record_outcome(outcome, fingerprint, sizes=sizes, digests=digests)
                self._results.append(outcome)
            except LocalIOError as error:
                self._gate.stop(error)
                raise RunStopped from error
            self.check_reserve()
        self._counter.count_outcome(outcome)
        if outcome.ok:
            self._emit(
                BatchEventKind.SUCCEEDED,
                outcome.job_id,
                task_id=outcome.task_id,
                files=outcome.files,
                replayed=outcome.replayed,
            )
        else:
            assert outcome.error is not None
            self._emit(
                BatchEventKind.FAILED,
                outcome.job_id,
                task_id=outcome.task_id,
                reason=outcome.error.reason,
                message=outcome.error.message,
                replayed=outcome.replayed,
            )
        return outcome

    def check_reserve(self) -> None:
        """Stop the run once the journal had to spend its reserve: the disk is full."""
        if self._journal.reserve_used:
            error = LocalIOError(
                f"the output disk is full: the journal used its reserve ({self._journal.path})",
                errno=28,  # ENOSPC
                path=str(self._journal.path),
            )
            self._gate.stop(error)
