"""Where the run of an output folder stands, read from its journal and results file.

:func:`read_status` sends nothing and needs no key: it reads the journal's lines (the good ones,
as a run would fold them into each job's state) and ``results.jsonl``, and looks at the images
on disk (each one there and of the size recorded; with ``verify``, its SHA-256 too, as
``rclone check`` does). It is safe while a run holds the folder: it takes no lock but a shared
one, at once released, to ask whether a run holds it; it writes nothing and makes no reserve
file. A damaged journal is reported (its line numbers) rather than refused, with what its good
lines say.

Without the job file, jobs never submitted cannot be known: the journal only names the jobs a run
reached. Given the ids of the job file (``job_ids``), those the journal does not know are counted.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ._failures import RETRYABLE_REASONS
from ._journal import JOURNAL_NAME, JobPhase, JobState, fold
from ._locks import is_locked
from ._outputs import LOCK_NAME
from ._records import scan_journal
from ._results import RESULTS_NAME, ResultLine
from ._verify import Problem, local_problems

try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunStatus", "read_status"]

_UNKNOWN_OUTCOME = "SUBMIT_OUTCOME_UNKNOWN"


@attrs.frozen(kw_only=True)
class RunStatus:
    """Where the run of one output folder stands (see :func:`read_status`).

    The jobs the journal knows are ``succeeded + outputs_missing + failed + unfinished +
    unanswered``: a job the journal recorded succeeded whose images are not all in the folder, as
    recorded, is not counted succeeded.
    """

    out_dir: Path
    journal_path: Path
    journal_found: bool
    """False when there is no journal: nothing has run here (or its journal is elsewhere)."""
    in_use: bool
    """A run holds the folder now: the numbers are moving, and a submission without an answer
    may simply be in flight."""
    damaged_lines: tuple[int, ...] = ()
    """Lines of the journal (from 1) that cannot be read: ``novita-async journal repair``."""
    last_run: datetime | None = None
    """When the journal was last written to (its last record's time, UTC)."""
    jobs: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs the journal knows."""
    succeeded: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs recorded succeeded whose images are all in the folder (as checked)."""
    outputs_missing: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs recorded succeeded with an image missing or damaged: a rerun with them fetches
    their images again from their tasks, at no cost."""
    failed: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    failures_by_reason: Mapping[str, int] = attrs.field(factory=dict)
    """The failed jobs by their error's reason (``TASK_FAILED``, ``RETRIES_EXHAUSTED``...)."""
    unfinished: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs submitted (their task id recorded) that have not ended: a rerun follows their tasks."""
    unanswered: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs whose submission was sent (or about to be) with no answer recorded."""
    unknown_outcome: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Jobs of unknown outcome: ``unanswered`` ones and those failed ``SUBMIT_OUTCOME_UNKNOWN``
    (a task may exist and be billed; a rerun does not send them again unless told to)."""
    retryable: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Failed jobs a plain rerun tries again (``RETRIES_EXHAUSTED``)."""
    never_submitted: int | None = None
    """Jobs of the job file the journal does not know; None when no job file was given."""
    images: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Images of the succeeded jobs that are in the output folder."""
    images_missing: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Images of the succeeded jobs that are not (moved or deleted since)."""
    images_damaged: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Images of the succeeded jobs that are there but not as recorded: of another size, or
    (``verified``) of another SHA-256."""
    verified: bool = False
    """The images were hashed against the SHA-256 the journal recorded (``verify``)."""
    unverifiable: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Images checked for being there only: their journal (from an older version) recorded no
    size or SHA-256 for them."""
    results_listed: int | None = None
    """Jobs ``results.jsonl`` lists; None when there is no such file."""


def read_status(
    out_dir: str | os.PathLike[str],
    journal_path: str | os.PathLike[str] | None = None,
    *,
    job_ids: Iterable[str] | None = None,
    verify: bool = False,
) -> RunStatus:
    """Where the run of ``out_dir`` stands (see the module's docstring). ``journal_path`` is the
    run's ``journal_path`` if it had one; ``job_ids`` the ids of its job file, if known;
    ``verify``: hash every image of the succeeded jobs against the journal's SHA-256.

    Blocking (it reads files): call it from a worker thread in async code.
    """
    out = Path(out_dir)
    journal = Path(journal_path) if journal_path is not None else out / JOURNAL_NAME
    in_use = is_locked(out / LOCK_NAME) or is_locked(journal)
    found = journal.is_file()
    scan = scan_journal(journal)
    _, jobs = fold(scan.records)
    phases = Counter(state.phase for state in jobs.values())
    reasons = Counter(_reason(state) for state in jobs.values() if state.phase is JobPhase.FAILED)
    images = _images(out, jobs.values(), verify)
    unanswered = phases[JobPhase.SUBMITTING]
    return RunStatus(
        out_dir=out,
        journal_path=journal,
        journal_found=found,
        in_use=in_use,
        damaged_lines=scan.damaged,
        last_run=datetime.fromtimestamp(scan.records[-1].t, UTC) if scan.records else None,
        jobs=len(jobs),
        succeeded=phases[JobPhase.SUCCEEDED] - images.jobs_short,
        outputs_missing=images.jobs_short,
        failed=phases[JobPhase.FAILED],
        failures_by_reason=dict(sorted(reasons.items())),
        unfinished=phases[JobPhase.SUBMITTED],
        unanswered=unanswered,
        unknown_outcome=unanswered + reasons[_UNKNOWN_OUTCOME],
        retryable=sum(reasons[reason] for reason in RETRYABLE_REASONS),
        never_submitted=None if job_ids is None else _unknown_to(jobs, job_ids),
        images=images.found,
        images_missing=images.missing,
        images_damaged=images.damaged,
        verified=verify,
        unverifiable=images.unverifiable,
        results_listed=_results_listed(out / RESULTS_NAME),
    )


def _reason(state: JobState) -> str:
    return state.error.reason if state.error is not None else "UNKNOWN"


def _unknown_to(jobs: Collection[str], job_ids: Iterable[str]) -> int:
    return len({job_id for job_id in job_ids if job_id not in jobs})


@attrs.define
class _Images:
    found: int = 0
    missing: int = 0
    damaged: int = 0
    unverifiable: int = 0
    jobs_short: int = 0
    """Succeeded jobs with an image missing or damaged."""


def _images(out: Path, states: Iterable[JobState], verify: bool) -> _Images:
    """The images of the succeeded jobs in ``out``: there (as recorded), missing or damaged."""
    images = _Images()
    for state in states:
        if state.phase is not JobPhase.SUCCEEDED:
            continue
        problems = local_problems(out, state, rehash=verify)
        missing = sum(problem.problem is Problem.MISSING for problem in problems)
        images.missing += missing
        images.damaged += len(problems) - missing
        images.found += len(state.files) - missing
        recorded = len(state.digests) if verify else len(state.sizes)
        images.unverifiable += max(0, len(state.files) - recorded)
        images.jobs_short += bool(problems)
    return images


def _results_listed(path: Path) -> int | None:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    listed: set[str] = set()
    with handle:
        for line in handle:
            with contextlib.suppress(ValueError):  # torn by a crash: the next run rebuilds it
                listed.add(ResultLine.decode(line).id)
    return len(listed)
