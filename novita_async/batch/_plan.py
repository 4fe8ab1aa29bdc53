"""What a run does with each job, decided before anything is sent (:class:`Planner`), and a dry
run (:func:`dry_run`), which decides it for every job and sends nothing.

Reading the inputs (hashing, checking they are images) is part of deciding; sending is not. A dry
run reads the journal as it is (no lock, nothing written: a run may hold it meanwhile) and looks
for the images of the jobs it calls succeeded as a run does.
"""

from __future__ import annotations

import enum
import os
from collections import Counter
from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path

import attrs

from .._config import DEFAULT_ASSETS_URL, ENV_ASSETS_URL
from .._exceptions import SubmitOutcomeUnknownError
from .._failures import RETRYABLE_REASONS
from ._inputs import InputReader, PreparedJob, asset_endpoint
from ._jobs import InvalidJob, Job, JobError, JobInputError, JobSource, check_job_id
from ._journal import JOURNAL_NAME, JobPhase, JobState, JournalDamagedError, fold, scan_journal
from ._options import BatchOptions
from ._outputs import LocalOutput, check_output_names, is_run_output
from ._run_folder import OUTPUT_LOST, OUTPUT_MISSING, output_errors

__all__ = ["RESUBMIT_REASONS", "Action", "DryRun", "JobProblem", "Plan", "Planner", "dry_run"]

# Failures after which retrying the job means submitting it again; any other failure of a job
# with a task id is retried by following that task again (it may well have finished).
RESUBMIT_REASONS = frozenset({"TASK_FAILED", "TASK_NOT_FOUND", OUTPUT_LOST})


class Action(enum.Enum):
    """What the run does with one job."""

    DUPLICATE = "duplicate"
    """The id came earlier in this input: refused (not recorded: the first one stands)."""
    INVALID = "invalid"
    """The job cannot run (bad id, line or input, names too long): recorded failed, nothing sent."""
    REPLAY = "replay"
    """It ended in an earlier run: its outcome again, nothing sent."""
    CHANGED = "changed"
    """Its line differs from the request the journal paid for: recorded ``JOB_CHANGED`` with the
    earlier task and images labelled as such, nothing sent."""
    UNKNOWN = "unknown"
    """An earlier run sent it and never had the answer: ``SUBMIT_OUTCOME_UNKNOWN``, nothing sent."""
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

    @property
    def restoring(self) -> bool:
        """FOLLOW a task that had succeeded, its images gone from OUT: fetched again from its
        result, nothing submitted."""
        return self.prior is not None and _output_missing(self.prior)


class Planner:
    def __init__(self, jobs: Mapping[str, JobState], options: BatchOptions, out_dir: Path) -> None:
        self._jobs = jobs
        self._options = options
        self._out_dir = out_dir
        self._inputs = InputReader()
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
            if prior.fingerprint not in (None, prepared.fingerprint):
                if not rerun:
                    return Plan(Action.CHANGED, job, prior, prepared, _changed_error(job, prior))
                prior = None  # a different job now: its old task is not its task
            elif prior.error is not None and prior.error.reason == "JOB_CHANGED":
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
        sources = (*job.face_images, *job.ref_images, *(job.face_kps_images or ()))
        for source in (*sources, *job.inputs.values()):
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


def _output_missing(prior: JobState) -> bool:
    error = prior.error
    return error is not None and error.reason == OUTPUT_MISSING and prior.task_id is not None


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
    reason = prior.error.reason if prior.error is not None else None
    return prior.phase is JobPhase.SUBMITTED or (
        prior.phase is JobPhase.FAILED and reason is not None and reason not in RESUBMIT_REASONS
    )


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, the output folder's file system allows."""
    probe = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


@attrs.frozen
class JobProblem:
    """A job a run would refuse, and why (``reason`` as the run would record it)."""

    job_id: str
    reason: str
    message: str


@attrs.frozen
class DryRun:
    """What a run over the same jobs and output folder would do."""

    jobs: int = 0
    done: int = 0
    """Succeeded in an earlier run: replayed, nothing sent."""
    failed: int = 0
    """Failed in an earlier run and left alone (``retry_failed`` would run them)."""
    to_submit: int = 0
    """New tasks the run would pay for."""
    to_follow: int = 0
    """Tasks of earlier runs it would follow to their end (nothing paid)."""
    to_restore: int = 0
    """Jobs done earlier whose images are missing or damaged: fetched again from their tasks
    (nothing paid)."""
    unknown: int = 0
    """Submissions of earlier runs whose outcome is unknown: reported, not sent."""
    changed: int = 0
    """Jobs whose line changed since their task was paid for: reported, not sent."""
    images: int = 0
    """Images the new tasks would make."""
    tasks_by_type: Mapping[str, int] = attrs.field(factory=dict)
    """The new tasks by task type (``instant-id``, ``txt2img``, ...), in the order first met."""
    images_by_type: Mapping[str, int] = attrs.field(factory=dict)
    """The images they would make, by task type."""
    uploads: int = 0
    """Distinct input files the run would upload (contents the journal does not know yet)."""
    problems: tuple[JobProblem, ...] = ()
    """Jobs that cannot run as given (bad line, id, input, names), and ids given twice."""
    seconds: float | None = None
    """The time the submissions need at ``rate`` (None without a rate)."""

    @property
    def ok(self) -> bool:
        """Every job can run as given."""
        return not self.problems


async def dry_run(
    jobs: Iterable[Job | InvalidJob] | AsyncIterable[Job | InvalidJob],
    out_dir: str | os.PathLike[str],
    options: BatchOptions | None = None,
    *,
    assets_url: str | None = None,
    stored: Mapping[str, int] | None = None,
) -> DryRun:
    """Decide, for every job, what ``BatchRunner(client, out_dir, options).run(jobs)`` would do,
    without a client: nothing is sent, uploaded or written. A damaged journal raises
    :class:`JournalDamagedError`, as the run would. ``assets_url``: the client's asset URL, which
    decides the uploads the journal saves (default: ``NOVITA_ASSETS_URL``, else the service's).
    ``stored``: for an object-store OUT whose journal was read into ``out_dir``, the size of each
    object of its prefix by key (one listing), where its images are looked for instead."""
    endpoint = asset_endpoint(assets_url or os.environ.get(ENV_ASSETS_URL) or DEFAULT_ASSETS_URL)
    options = options or BatchOptions()
    out = Path(out_dir)
    journal_path = options.journal_path or out / JOURNAL_NAME
    scan = scan_journal(journal_path)
    if scan.damaged:
        raise JournalDamagedError(journal_path, scan.damaged)
    assets, known = fold(scan.records)
    # One listing, of the folder or (given) of the store's prefix, as the run looks.
    sizes = await LocalOutput(out).sizes() if stored is None else stored
    where = str(out) if stored is None else "the store"
    errors = output_errors(known, where, sizes)
    for job_id, error in errors.items():
        # As the run records it: its task followed again, or (no task) lost.
        state = known[job_id]
        failed = JobError.from_exception(error)
        known[job_id] = JobState(
            JobPhase.FAILED, state.fingerprint, state.task_id, error=failed, task=state.task
        )
    planner = Planner(known, options, out)
    counts: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    images: Counter[str] = Counter()
    problems: list[JobProblem] = []
    uploads: set[str] = set()

    async with JobSource(jobs) as source:
        while (job := await source.next()) is not None:
            counts["jobs"] += 1
            plan = await planner.plan(job)
            if plan.action is Action.REPLAY:
                assert plan.prior is not None
                counts["done" if plan.prior.phase is JobPhase.SUCCEEDED else "failed"] += 1
            elif plan.action is Action.FOLLOW:
                counts["to_restore" if plan.restoring else "to_follow"] += 1
            elif plan.action is Action.UNKNOWN or plan.action is Action.CHANGED:
                counts[plan.action.value] += 1  # the field of the same name
            elif plan.action is Action.SUBMIT:
                assert isinstance(job, Job) and plan.prepared is not None
                counts["to_submit"] += 1
                counts["images"] += job.request.images_out
                tasks[job.task] += 1
                images[job.task] += job.request.images_out
                prepared = plan.prepared
                for image in (*prepared.faces, *prepared.refs, *(prepared.kps or ())):
                    if (endpoint, image.sha256) not in assets:
                        uploads.add(image.sha256)
            else:  # INVALID, DUPLICATE
                refused = plan.error
                reason = getattr(refused, "reason", type(refused).__name__)
                problems.append(JobProblem(job.id, str(reason), str(refused)))
    rate = options.rate
    seconds = counts["to_submit"] / rate if rate else None
    return DryRun(
        **counts,
        tasks_by_type=dict(tasks),
        images_by_type=dict(images),
        uploads=len(uploads),
        problems=tuple(problems),
        seconds=seconds,
    )
