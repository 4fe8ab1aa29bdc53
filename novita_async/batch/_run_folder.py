"""The run's folder: what a run keeps beyond itself, opened on the way in, closed on the way out,
and read by ``status`` without a run.

OUT is a local folder, or for an object-store OUT (``s3://BUCKET/PREFIX``...) a local staging
folder whose journal is mirrored in the store (:class:`~._journal.JournalMirror`). Its state
(journal, ``results.jsonl``, lock) lives in OUT, or for a shard in
``OUT/.novita-shards/<k>-of-<K>/``; the images always go to OUT.

**Opening**: the layout checked, the folder locked, the store's journal pulled, the journal opened,
stale temporary files removed, ``results.jsonl`` rebuilt, and the outputs checked against what is
in OUT (one ``stat`` per file, or one listing of the store's prefix): a succeeded job whose image
is missing or of another size than recorded is recorded failed ``OUTPUT_MISSING`` and fetched
again from its task at no cost, or without a task ``OUTPUT_LOST`` (paid again only with
``retry_failed``). **Closing** (shielded): the results merged, the journal closed, then for an
object-store OUT its last segment and ``results.jsonl`` uploaded; a store failing there is kept
as :attr:`RunFolder.end_error`, which stops the run.

**Status** (:func:`read_status`) sends nothing, needs no key, writes nothing and is safe while a
run holds the folder: it folds the journal's good lines as a run would (reporting damage), reads
``results.jsonl`` and looks at the images (with ``verify``, hashing each against its SHA-256).
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import anyio
import attrs

from .._exceptions import ConfigurationError, NovitaError, StorageError
from .._failures import RETRYABLE_REASONS
from .._files import file_digest, is_locked, local_io, looks_like_url, remove_stale_temp_files
from ._jobs import JobError, JobOutcome, JobStatus
from ._journal import (
    JOURNAL_NAME,
    RESULTS_NAME,
    JobPhase,
    JobState,
    Journal,
    JournalMirror,
    ResultsFile,
    fold,
    scan_journal,
)
from ._options import BatchOptions
from ._outputs import LOCK_NAME, Output, OutputLock, open_output

__all__ = [
    "OUTPUT_LOST",
    "OUTPUT_MISSING",
    "OutputLostError",
    "RunFolder",
    "RunStatus",
    "local_problems",
    "output_errors",
    "read_status",
]

OUTPUT_MISSING = "OUTPUT_MISSING"
OUTPUT_LOST = "OUTPUT_LOST"
_UNKNOWN_OUTCOME = "SUBMIT_OUTCOME_UNKNOWN"


class RunFolder:
    """OUT as one run sees it: where its images, journal, results and lock are."""

    def __init__(self, out: str | os.PathLike[str] | Output, options: BatchOptions) -> None:
        self.options = options
        self.destination = open_output(out, staging_dir=options.staging_dir)
        self.out_dir = self.destination.local_dir  # an object-store OUT's staging folder
        if (scheme := looks_like_url(str(options.journal_path or ""))) is not None:
            raise ConfigurationError(
                f"journal_path is a {scheme!r} URL: give the output as that URL instead, and the "
                "journal is kept in the store beside the images"
            )
        shard = options.shard
        # A shard's journal, results and lock are its own; its images go to OUT with the others.
        self.state_dir = self.out_dir if shard is None else shard.folder(self.out_dir)
        self.journal_path = options.journal_path or self.state_dir / JOURNAL_NAME
        self.mirror: JournalMirror | None = self.destination.journal_mirror(self.journal_path)
        self.end_error: StorageError | None = None
        """The store's failure while closing (the last segment, results.jsonl), if any."""

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[tuple[Journal, ResultsFile]]:
        """The journal (locked) and the results file, rebuilt on the way in and on the way out."""
        self.end_error = None
        results = ResultsFile(self.state_dir / RESULTS_NAME)
        lock = OutputLock(self.state_dir)

        def open_journal() -> Journal:
            for folder in (self.out_dir, self.state_dir):
                with local_io("creating the output folder", folder):
                    folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()  # first: a second run on this OUT is refused whatever its journal
            try:
                if self.mirror is not None:  # the store's segments make the local journal
                    anyio.from_thread.run(self.mirror.pull)
                return Journal(self.journal_path, fsync=self.options.journal_fsync)
            except BaseException:
                lock.release()
                raise

        # Before a shard's folder is made: OUT's folders (a store's keys) say how it is sharded.
        await self.destination.check_layout(self.options.shard)
        # Shielded: a cancellation must not lose a journal opened (and locked) in the thread.
        with anyio.CancelScope(shield=True):
            journal = await anyio.to_thread.run_sync(open_journal)
        try:
            await self._check_outputs(journal)

            def prepare() -> None:
                remove_stale_temp_files(self.out_dir)  # those a run killed mid-download left
                results.rebuild(list(journal.ended_outcomes()))

            await anyio.to_thread.run_sync(prepare)
            yield journal, results
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._close(journal, results)
            finally:
                lock.release()

    async def _check_outputs(self, journal: Journal) -> None:
        """Record the jobs ``journal`` calls succeeded whose outputs are not as recorded
        ``OUTPUT_MISSING`` (``OUTPUT_LOST`` without a task id to fetch them from)."""
        jobs = journal.jobs
        if not any(state.phase is JobPhase.SUCCEEDED for state in jobs.values()):
            return
        sizes = await self.destination.sizes()  # one listing, of a folder or of a bucket's prefix
        errors = output_errors(jobs, self.destination.url, sizes)
        for job_id, error in errors.items():
            state, failed = jobs[job_id], JobError.from_exception(error)
            outcome = JobOutcome(
                job_id, JobStatus.FAILED, state.task_id, error=failed, task=state.task
            )
            journal.record_outcome(outcome, state.fingerprint)

    async def _close(self, journal: Journal, results: ResultsFile) -> None:
        """The results merged, the journal closed; then for an object-store OUT, the journal's
        last segment (then compacted) and results.jsonl up."""

        def close_files() -> None:
            try:
                results.merge(journal.ended_outcomes(), journal.jobs)
            finally:
                results.close()
                journal.close()

        await anyio.to_thread.run_sync(close_files)
        if self.mirror is not None:
            try:
                await self.mirror.close()
                key = results.path.relative_to(self.out_dir).as_posix()
                await self.destination.publish_file(results.path, key)
            except StorageError as exc:
                self.end_error = exc


# --- the outputs of succeeded jobs, checked -------------------------------------------------------


class Problem(enum.StrEnum):
    """What is wrong with one file of a succeeded job."""

    MISSING = "missing"
    WRONG_SIZE = "of another size than recorded"
    DAMAGED = "damaged (its SHA-256 differs from the one recorded)"


FileProblem: TypeAlias = tuple[str, Problem]
"""A file of a succeeded job by name, and what is wrong with it."""


def _shown(problems: tuple[FileProblem, ...]) -> str:
    shown = "; ".join(f"{name} is {problem}" for name, problem in problems[:3])
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


class OutputMissingError(NovitaError):
    """A job the journal recorded succeeded has an image missing or damaged: the run fetches its
    images again from its task's result (free: nothing is submitted)."""

    def __init__(self, where: str, task_id: str, problems: tuple[FileProblem, ...]) -> None:
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
    """What is wrong with the files of a succeeded job, given each file's size (None: not there)
    and, with ``digest_of``, its SHA-256 by name."""
    problems: list[FileProblem] = []
    for n, name in enumerate(state.files):
        size = size_of(name)
        if size is None:
            problems.append((name, Problem.MISSING))
        elif n < len(state.sizes) and size != state.sizes[n]:
            problems.append((name, Problem.WRONG_SIZE))
        elif (
            digest_of is not None
            and n < len(state.digests)
            and (digest := digest_of(name)) != state.digests[n]
        ):
            problems.append((name, Problem.MISSING if digest is None else Problem.DAMAGED))
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


def output_errors(
    jobs: Mapping[str, JobState], where: str, sizes: Mapping[str, int]
) -> dict[str, NovitaError]:
    """The jobs of ``jobs`` recorded succeeded whose files are not in ``sizes`` (OUT's files by
    name, one listing) as recorded, each with the error to record: ``OUTPUT_MISSING`` (fetched
    again from its task), or ``OUTPUT_LOST`` when no task id was recorded to fetch them from."""
    errors: dict[str, NovitaError] = {}
    for job_id, state in jobs.items():
        if state.phase is not JobPhase.SUCCEEDED:
            continue
        if not (problems := tuple(_problems(state, sizes.get))):
            continue
        if state.task_id is None:
            detail = f"recorded succeeded, but in {where} {_shown(problems)}"
            errors[job_id] = OutputLostError(None, detail)
        else:
            errors[job_id] = OutputMissingError(where, state.task_id, problems)
    return errors


# --- status ---------------------------------------------------------------------------------------


def _count() -> int:
    return attrs.field(default=0, validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class RunStatus:
    """Where the run of one output folder stands (see :func:`read_status`). The jobs the journal
    knows are ``succeeded + outputs_missing + failed + unfinished + unanswered``."""

    out_dir: Path
    journal_path: Path
    journal_found: bool
    """False when there is no journal: nothing has run here (or its journal is elsewhere)."""
    in_use: bool
    """A run holds the folder now: numbers move, and an unanswered submission may be in flight."""
    damaged_lines: tuple[int, ...] = ()
    """Lines of the journal (from 1) that cannot be read: ``novita-async journal repair``."""
    last_run: datetime | None = None
    """When the journal was last written to (its last record's time, UTC)."""
    jobs: int = _count()
    """Jobs the journal knows."""
    succeeded: int = _count()
    """Jobs recorded succeeded whose images are all in the folder (as checked)."""
    outputs_missing: int = _count()
    """Jobs recorded succeeded with an image missing or damaged: a rerun fetches it again, free."""
    failed: int = _count()
    failures_by_reason: Mapping[str, int] = attrs.field(factory=dict)
    """The failed jobs by their error's reason (``TASK_FAILED``, ``RETRIES_EXHAUSTED``...)."""
    unfinished: int = _count()
    """Jobs submitted (their task id recorded) that have not ended: a rerun follows their tasks."""
    unanswered: int = _count()
    """Jobs whose submission was sent (or about to be) with no answer recorded."""
    unknown_outcome: int = _count()
    """``unanswered`` jobs and those failed ``SUBMIT_OUTCOME_UNKNOWN`` (a task may be billed)."""
    retryable: int = _count()
    """Failed jobs a plain rerun tries again (``RETRIES_EXHAUSTED``)."""
    never_submitted: int | None = None
    """Jobs of the job file the journal does not know; None when no job file was given."""
    images: int = _count()
    """Images of the succeeded jobs that are in the output folder."""
    images_missing: int = _count()
    """Images of the succeeded jobs that are not (moved or deleted since)."""
    images_damaged: int = _count()
    """Images there but not as recorded: of another size, or (``verified``) another SHA-256."""
    verified: bool = False
    """The images were hashed against the SHA-256 the journal recorded (``verify``)."""
    unverifiable: int = _count()
    """Images checked for being there only: their (older) journal recorded no size or SHA-256."""
    results_listed: int | None = None
    """Jobs ``results.jsonl`` lists; None when there is no such file."""
    jobs_by_task: Mapping[str, int] = attrs.field(factory=dict)
    """The jobs the journal knows by their task (``instant-id``, ``txt2img``, ...)."""


def read_status(
    out_dir: str | os.PathLike[str],
    journal_path: str | os.PathLike[str] | None = None,
    *,
    job_ids: Iterable[str] | None = None,
    verify: bool = False,
) -> RunStatus:
    """Where the run of ``out_dir`` stands (see the module's docstring). ``journal_path``: the
    run's, if it had one; ``job_ids``: those of its job file, to count the jobs never submitted;
    ``verify``: hash each image of the succeeded jobs. Blocking: call it from a worker thread."""
    out = Path(out_dir)
    journal = Path(journal_path) if journal_path is not None else out / JOURNAL_NAME
    in_use, found = is_locked(out / LOCK_NAME) or is_locked(journal), journal.is_file()
    scan = scan_journal(journal)
    jobs = fold(scan.records)[1]
    phases = Counter(state.phase for state in jobs.values())
    reasons = Counter(
        state.error.reason if state.error is not None else "UNKNOWN"
        for state in jobs.values()
        if state.phase is JobPhase.FAILED
    )
    images = missing = damaged = unverifiable = jobs_short = 0
    for state in jobs.values():
        if state.phase is JobPhase.SUCCEEDED:
            problems = local_problems(out, state, rehash=verify)
            lacking = sum(problem is Problem.MISSING for _, problem in problems)
            missing += lacking
            damaged += len(problems) - lacking
            images += len(state.files) - lacking
            unverifiable += max(0, len(state.files) - len(state.digests if verify else state.sizes))
            jobs_short += bool(problems)
    unanswered = phases[JobPhase.SUBMITTING]
    return RunStatus(
        out_dir=out,
        journal_path=journal,
        journal_found=found,
        in_use=in_use,
        damaged_lines=scan.damaged,
        last_run=datetime.fromtimestamp(scan.records[-1].t, UTC) if scan.records else None,
        jobs=len(jobs),
        succeeded=phases[JobPhase.SUCCEEDED] - jobs_short,
        outputs_missing=jobs_short,
        failed=phases[JobPhase.FAILED],
        failures_by_reason=dict(sorted(reasons.items())),
        unfinished=phases[JobPhase.SUBMITTED],
        unanswered=unanswered,
        unknown_outcome=unanswered + reasons[_UNKNOWN_OUTCOME],
        retryable=sum(reasons[reason] for reason in RETRYABLE_REASONS),
        never_submitted=None if job_ids is None else len(set(job_ids) - jobs.keys()),
        images=images,
        images_missing=missing,
        images_damaged=damaged,
        verified=verify,
        unverifiable=unverifiable,
        results_listed=ResultsFile(out / RESULTS_NAME).listed(),
        jobs_by_task=dict(sorted(Counter(state.task for state in jobs.values()).items())),
    )
