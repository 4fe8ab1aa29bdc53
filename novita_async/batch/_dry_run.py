"""A dry run: what a run would do and pay for, decided exactly as a real run decides, sending
nothing.

Every job passes the same :class:`~._plan.Planner` a real run uses (ids, output names, inputs
read and checked to be images, what the journal already holds), with the journal read as it is
(no lock, nothing written: a run may hold it meanwhile), and the images of the jobs it calls
succeeded looked for as a run looks for them (``_verify``): one missing is to be fetched again
from its task, which the run would do for nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path

import attrs

from .._config import DEFAULT_ASSETS_URL, ENV_ASSETS_URL
from ._job import InvalidJob, Job, JobError
from ._journal import JOURNAL_NAME, JobPhase, JobState, fold
from ._options import BatchOptions
from ._plan import Action, Planner
from ._records import JournalDamagedError, scan_journal
from ._uploads import asset_endpoint
from ._verify import OUTPUT_MISSING, local_problems, output_errors, stored_problems

__all__ = ["DryRun", "JobProblem", "dry_run"]


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
    if stored is None:
        errors = output_errors(known, str(out), lambda state: local_problems(out, state))
    else:
        errors = output_errors(known, "the store", lambda state: stored_problems(stored, state))
    for job_id, error in errors.items():
        # As the run records it: its task followed again, or (no task) lost.
        state = known[job_id]
        failed = JobError.from_exception(error)
        known[job_id] = JobState(JobPhase.FAILED, state.fingerprint, state.task_id, error=failed)
    planner = Planner(known, options, out)
    counts = dict.fromkeys(("jobs", "done", "failed", "to_submit", "to_follow", "to_restore",
                            "unknown", "changed", "images"), 0)  # fmt: skip
    problems: list[JobProblem] = []
    uploads: set[str] = set()

    async def one(job: Job | InvalidJob) -> None:
        counts["jobs"] += 1
        plan = await planner.plan(job)
        action = plan.action
        if action is Action.REPLAY:
            assert plan.prior is not None
            counts["done" if plan.prior.phase is JobPhase.SUCCEEDED else "failed"] += 1
        elif action is Action.SUBMIT:
            assert isinstance(job, Job) and plan.prepared is not None
            counts["to_submit"] += 1
            counts["images"] += job.request.image_num
            prepared = plan.prepared
            for image in (*prepared.faces, *prepared.refs, *(prepared.kps or ())):
                if (endpoint, image.sha256) not in assets:
                    uploads.add(image.sha256)
        elif action is Action.FOLLOW:
            earlier = plan.prior.error if plan.prior is not None else None
            restoring = earlier is not None and earlier.reason == OUTPUT_MISSING
            counts["to_restore" if restoring else "to_follow"] += 1
        elif action is Action.UNKNOWN:
            counts["unknown"] += 1
        elif action is Action.CHANGED:
            counts["changed"] += 1
        else:  # INVALID, DUPLICATE
            error = plan.error
            reason = getattr(error, "reason", type(error).__name__)
            problems.append(JobProblem(job.id, str(reason), str(error)))

    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            await one(job)
    else:
        for job in jobs:
            await one(job)
    rate = options.rate
    seconds = counts["to_submit"] / rate if rate else None
    return DryRun(**counts, uploads=len(uploads), problems=tuple(problems), seconds=seconds)
