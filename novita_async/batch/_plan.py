"""What a run does with each job, decided before anything is sent.

One decision for a real run and a dry run alike (:class:`Planner`): a job id seen twice, an id or
input that cannot be used, a job the journal already finished, a job whose line changed since its
task was paid for, a submission whose answer never came, a task to follow, or a new task to pay
for. Reading the inputs (hashing, checking they are images) is part of deciding; sending is not.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from .._exceptions import SubmitOutcomeUnknownError
from ._failures import RETRYABLE_REASONS
from ._inputs import InputReader, PreparedJob
from ._job import InvalidJob, Job, JobInputError, check_job_id
from ._journal import JobPhase, JobState
from ._options import BatchOptions
from ._outputs import check_output_names, is_run_output
from ._verify import OUTPUT_LOST, OUTPUT_MISSING

__all__ = ["RESUBMIT_REASONS", "Action", "Plan", "Planner"]

# Failures after which retrying the job means submitting it again; any other failure of a job
# with a task id is retried by following that task again (it may well have finished).
RESUBMIT_REASONS = frozenset({"TASK_FAILED", "TASK_NOT_FOUND", OUTPUT_LOST})


class Action(enum.Enum):
    """What the run does with one job."""

    DUPLICATE = "duplicate"
    """The id came earlier in this input: refused (not recorded: the first one stands)."""
    INVALID = "invalid"
    """The job cannot run (bad id or line, an input missing or not an image, names too long):
    recorded failed, nothing sent."""
    REPLAY = "replay"
    """It ended in an earlier run: its outcome again, nothing sent."""
    CHANGED = "changed"
    """Its line differs from the request the journal paid for: recorded ``JOB_CHANGED`` with the
    earlier task and images labelled as such, nothing sent."""
    UNKNOWN = "unknown"
    """An earlier run sent its submission and never had the answer: recorded
    ``SUBMIT_OUTCOME_UNKNOWN``, nothing sent."""
    FOLLOW = "follow"
    """A task of an earlier run exists: it is followed to its end, never submitted again (also
    the task of a job whose images went missing from OUT: they are fetched again from it)."""
    SUBMIT = "submit"
    """Its inputs are uploaded (those not known yet) and a new task is paid for."""


@attrs.frozen
class Plan:
    action: Action
    job: Job | InvalidJob
    prior: JobState | None = None
    prepared: PreparedJob | None = None
    error: Exception | None = None
    """Why the job is refused (DUPLICATE, INVALID, CHANGED, UNKNOWN)."""


class Planner:
    def __init__(
        self,
        jobs: Mapping[str, JobState],
        options: BatchOptions,
        out_dir: Path,
        inputs: InputReader | None = None,
    ) -> None:
        self._jobs = jobs
        self._options = options
        self._out_dir = out_dir
        self._inputs = inputs or InputReader()
        self._seen: set[str] = set()  # every job id of the run, to refuse a second use of one
        self._name_max = _name_max(out_dir)

    async def plan(self, job: Job | InvalidJob) -> Plan:
        if job.id in self._seen:
            error = JobInputError(
                "DUPLICATE_JOB_ID", f"job id {job.id!r} appears twice in the input"
            )
            return Plan(Action.DUPLICATE, job, error=error)
        self._seen.add(job.id)
        prior = self._jobs.get(job.id)
        rerun = prior is not None and _runs_again(prior, self._options)
        # An input that never became a job (a bad job-file line) keeps its own, fuller reason.
        input_error: Exception | None = job.error if isinstance(job, InvalidJob) else None
        try:
            check_job_id(job.id)
            if isinstance(job, Job):
                check_output_names(job, self._name_max)
        except JobInputError as exc:
            if prior is not None and prior.ended and not rerun:
                return Plan(Action.REPLAY, job, prior)
            return Plan(Action.INVALID, job, error=input_error or exc)

        prepared: PreparedJob | None = None
        if isinstance(job, Job):
            try:
                self._check_not_outputs(job)
                prepared = await self._inputs.prepare(job)
            except JobInputError as exc:
                input_error = exc

        if prior is not None and prepared is not None:
            if _changed(prior, prepared):
                if not rerun:
                    return Plan(Action.CHANGED, job, prior, prepared, _changed_error(job, prior))
                prior = None  # a different job now: its old task is not its task
            elif _is_changed_record(prior):
                # The line is back to the request the task was paid for: follow that task.
                rerun = True
        if prior is not None and prior.ended and not rerun:
            if _output_missing(prior):
                # Its images went missing from OUT: fetched again from its task, nothing paid.
                return Plan(Action.FOLLOW, job, prior, prepared)
            return Plan(Action.REPLAY, job, prior)
        if prior is not None and prior.phase is JobPhase.SUBMITTING and not rerun:
            unknown = SubmitOutcomeUnknownError(
                "an earlier run sent this job's submission and stopped before its answer came; "
                "a task may exist and be billed: look for it before submitting again",
                method="POST",
            )
            return Plan(Action.UNKNOWN, job, prior, prepared, unknown)
        if prior is not None and prior.task_id is not None and _resumable(prior):
            # Submitted (or failed after submission) earlier: follow that task, never resubmit.
            return Plan(Action.FOLLOW, job, prior, prepared)
        if isinstance(job, Job) and prepared is not None:
            return Plan(Action.SUBMIT, job, prior, prepared)
        assert input_error is not None  # what kept the inputs from being prepared
        return Plan(Action.INVALID, job, prior, error=input_error)

    def _check_not_outputs(self, job: Job) -> None:
        for source in (*job.face_images, *job.ref_images, *(job.face_kps_images or ())):
            if not isinstance(source, bytes) and is_run_output(source, self._out_dir):
                raise JobInputError(
                    "INPUT_IS_OUTPUT",
                    f"input {os.fspath(source)!r} is a file this run writes in its output "
                    "folder; move it out of the output folder",
                )


def _runs_again(prior: JobState, options: BatchOptions) -> bool:
    """Whether a job the journal knows is run again rather than replayed or reported."""
    if prior.phase is JobPhase.SUBMITTING:
        return options.retry_unknown_submits or options.retry_failed
    if prior.phase is not JobPhase.FAILED or prior.error is None:
        return False
    reason = prior.error.reason
    if reason == "SUBMIT_OUTCOME_UNKNOWN" and options.retry_unknown_submits:
        return True
    return options.retry_failed or reason in RETRYABLE_REASONS


def _changed(prior: JobState, prepared: PreparedJob) -> bool:
    return prior.fingerprint is not None and prior.fingerprint != prepared.fingerprint


def _output_missing(prior: JobState) -> bool:
    error = prior.error
    return error is not None and error.reason == OUTPUT_MISSING and prior.task_id is not None


def _is_changed_record(prior: JobState) -> bool:
    return prior.error is not None and prior.error.reason == "JOB_CHANGED"


def _changed_error(job: Job | InvalidJob, prior: JobState) -> JobInputError:
    earlier = f"task {prior.task_id}" if prior.task_id else "an earlier submission"
    shown = " (the images listed are of that request)" if prior.files else ""
    return JobInputError(
        "JOB_CHANGED",
        f"job {job.id!r} differs from the request this output folder's journal recorded for it "
        f"({earlier}, {prior.phase}){shown}; use a new job id or output folder, or pass "
        "retry_failed (--retry-failed) to submit the new request",
    )


def _resumable(prior: JobState) -> bool:
    if prior.phase is JobPhase.SUBMITTED:
        return True
    return (
        prior.phase is JobPhase.FAILED
        and prior.error is not None
        and prior.error.reason not in RESUBMIT_REASONS
    )


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, the output folder's file system allows."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255
