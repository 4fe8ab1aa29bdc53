"""One job's way through a run: check, upload, submit, follow, download, record.

Every step that ends the job goes through :meth:`JobFlow._end`, which writes the journal first
(the source of truth), then the results file, then the progress event. Errors of one job become its
failed outcome; only cancellation propagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs

from .._client import NovitaClient
from .._events import ClientEvent, EventKind
from .._exceptions import (
    InvalidResponseError,
    RateLimitError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from .._models import InstantIDRequest, Task, TaskResult, TaskStatus
from ._durations import request_cost
from ._events import BatchEvent, BatchEventHook, BatchEventKind, emit
from ._inputs import InputReader, PreparedJob
from ._job import InvalidJob, Job, JobError, JobInputError, JobOutcome, JobStatus, check_job_id
from ._journal import JobPhase, JobState, Journal
from ._limits import RunGate
from ._poller import Poller
from ._results import ResultsFile
from ._summary import SummaryCounter
from ._uploads import AssetUploader

__all__ = ["JobFlow"]

# Consecutive 429s one job rides out before it fails (each after the client's own retries).
MAX_RATE_LIMITED_SUBMITS = 30
# Attempts at least for each image download: an unattended run rides out a 429 or 5xx spell
# longer than an interactive caller would (the task is paid for; its image must not be lost).
MIN_DOWNLOAD_ATTEMPTS = 4
# Failures after which retrying the job means submitting it again; any other failure of a job
# with a task id is retried by following that task again (it may well have finished).
RESUBMIT_REASONS = frozenset({"TASK_FAILED"})
# Seconds a stopping run still waits for the answers of the POSTs it has in flight.
STOP_GRACE = 10.0


class _Failure(Exception):
    """Internal: a job failed after its task was created; carries the task id."""

    def __init__(self, error: Exception, task_id: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.task_id = task_id


class JobFlow:
    def __init__(
        self,
        *,
        client: NovitaClient,
        out_dir: Path,
        journal: Journal,
        results: ResultsFile,
        counter: SummaryCounter,
        uploader: AssetUploader,
        poller: Poller,
        gate: RunGate,
        posting: anyio.Semaphore,
        in_flight: anyio.Semaphore,
        retry_failed: bool,
        on_event: BatchEventHook | None,
        on_request: Callable[[str], None],
    ) -> None:
        self._client = client
        self._out_dir = out_dir
        self._journal = journal
        self._results = results
        self._counter = counter
        self._uploader = uploader
        self._poller = poller
        self._gate = gate
        self._posting = posting
        self._in_flight = in_flight
        self._retry_failed = retry_failed
        self._on_event = on_event
        self._on_request = on_request
        self._inputs = InputReader()
        # A 429 on a submission comes straight back here, where it pauses every submitter,
        # instead of being waited out by this one submitter while the others keep sending.
        retry = client.config.retry
        self._submit_retry = attrs.evolve(retry, retry_rate_limited=False)
        self._download_retry = attrs.evolve(
            retry, attempts=max(retry.attempts, MIN_DOWNLOAD_ATTEMPTS)
        )
        self._seen: set[str] = set()  # every job id of the run, to refuse a second use of one
        self._posts: set[anyio.CancelScope] = set()
        self._stop_deadline = math.inf

    def stop(self, grace: float = STOP_GRACE) -> None:
        """The run is stopping: the POSTs in flight get ``grace`` more seconds to be answered."""
        self._stop_deadline = min(self._stop_deadline, anyio.current_time() + grace)
        for post in self._posts:
            post.deadline = min(post.deadline, self._stop_deadline)

    def _emit(self, kind: BatchEventKind, job_id: str, **fields: object) -> None:
        if self._on_event is not None:  # no observer, no event to build
            emit(self._on_event, BatchEvent(kind, job_id, **fields))  # type: ignore[arg-type]

    # --- deciding what to do -------------------------------------------------------------------

    async def process(self, job: Job | InvalidJob) -> JobOutcome:
        self._emit(BatchEventKind.QUEUED, job.id)
        if job.id in self._seen:
            error = JobInputError(
                "DUPLICATE_JOB_ID", f"job id {job.id!r} appears twice in the input"
            )
            return self._end(_failed(job.id, error, None), None, record=False)
        self._seen.add(job.id)
        prior = self._journal.jobs.get(job.id)
        rerun = prior is not None and prior.phase is JobPhase.FAILED and self._retry_failed
        # An input that never became a job (a bad job-file line) keeps its own, fuller reason.
        input_error: Exception | None = job.error if isinstance(job, InvalidJob) else None
        try:
            check_job_id(job.id)
        except JobInputError as exc:
            if prior is not None and prior.ended and not rerun:
                return self._end(prior.outcome(job.id, replayed=True), None, record=False)
            return self._fail(job.id, input_error or exc, None, None)

        prepared: PreparedJob | None = None
        if isinstance(job, Job):
            try:
                prepared = await self._inputs.prepare(job)
            except JobInputError as exc:
                input_error = exc

        if prior is not None and prepared is not None and _changed(prior, prepared):
            if not rerun:
                failed = prior.phase is JobPhase.FAILED
                hint = " (pass retry_failed to run it again)" if failed else ""
                error = JobInputError(
                    "JOB_CHANGED",
                    f"job {job.id!r} differs from the one this output folder's journal recorded "
                    f"({prior.phase}); use a new job id or output folder{hint}",
                )
                return self._end(_failed(job.id, error, prior.task_id), None, record=False)
            prior = None  # a different job now: its old task is not its task
        if prior is not None and prior.ended and not rerun:
            outcome = prior.outcome(job.id, replayed=True)
            return self._end(outcome, prior.fingerprint, record=False)
        if prior is not None and prior.task_id is not None and _resumable(prior):
            # Submitted (or failed after submission) earlier: follow that task, never resubmit.
            return await self._resume(job.id, prior.task_id, prior.fingerprint)
        if isinstance(job, Job) and prepared is not None:
            return await self._fresh(job, prepared)
        assert input_error is not None  # what kept the inputs from being prepared
        return self._fail(job.id, input_error, None, None)

    async def _resume(self, job_id: str, task_id: str, fingerprint: str | None) -> JobOutcome:
        async with self._in_flight:
            self._counter.resumed += 1
            self._emit(BatchEventKind.RESUMED, job_id, task_id=task_id)
            try:
                return await self._follow(job_id, task_id, fingerprint)
            except _Failure as failure:
                return self._fail(job_id, failure.error, failure.task_id, fingerprint)

    async def _fresh(self, job: Job, prepared: PreparedJob) -> JobOutcome:
        fingerprint = prepared.fingerprint
        try:
            request = await self._request(job, prepared)
        except Exception as exc:
            return self._fail(job.id, exc, None, fingerprint)
        async with self._in_flight:
            try:
                task_id = await self._submit(job.id, request, fingerprint)
            except Exception as exc:
                return self._fail(job.id, exc, None, fingerprint)
            try:
                return await self._follow(job.id, task_id, fingerprint, request_cost(job.request))
            except _Failure as failure:
                return self._fail(job.id, failure.error, failure.task_id, fingerprint)

    # --- steps -----------------------------------------------------------------------------------

    async def _request(self, job: Job, prepared: PreparedJob) -> InstantIDRequest:
        """The request to submit: the job's template with the uploaded inputs' asset ids."""
        faces = [await self._uploader.asset_id(image) for image in prepared.faces]
        refs = [await self._uploader.asset_id(image) for image in prepared.refs]
        kps = (
            None
            if prepared.kps is None
            else [await self._uploader.asset_id(image) for image in prepared.kps]
        )
        self._emit(BatchEventKind.UPLOADED, job.id)
        return attrs.evolve(
            job.request,
            face_image_assets_ids=faces,
            ref_image_assets_ids=refs,
            face_kps_assets_ids=kps,
        )

    async def _submit(self, job_id: str, request: InstantIDRequest, fingerprint: str) -> str:
        rate_limited = 0
        while True:
            await self._gate.wait()
            try:
                # Few POSTs in flight at once: each is a task a hard kill could leave unrecorded.
                async with self._posting:
                    # Shielded: a cancelled run still reads the answer of a POST it sent and
                    # records the task id, instead of abandoning a task it will be billed for;
                    # but only for a grace period once the run stops (see stop()): an answer
                    # that never comes must not hold the stop for ever.
                    with anyio.CancelScope(shield=True, deadline=self._stop_deadline) as post:
                        self._posts.add(post)
                        try:
                            self._on_request("submit")
                            task_id = await self._client.submit_instant_id(
                                request, retry=self._submit_retry
                            )
                            # Nothing is awaited between the answer and this record (_journal).
                            self._journal.record_submitted(job_id, task_id, fingerprint)
                        finally:
                            self._posts.discard(post)
                    if post.cancelled_caught:
                        raise SubmitOutcomeUnknownError(
                            "the run stopped before the submission was answered; a task may "
                            "exist and be billed: look for it before submitting again",
                            method="POST",
                        )
            except RateLimitError as exc:
                rate_limited += 1
                if rate_limited > MAX_RATE_LIMITED_SUBMITS:
                    raise
                pause = self._gate.rate_limited(exc.retry_after)
                self._emit(
                    BatchEventKind.RETRIED,
                    job_id,
                    reason=exc.reason,
                    message=f"submissions paused for {pause:.1f}s",
                )
                continue
            self._gate.answered()
            self._counter.submitted += 1
            self._emit(BatchEventKind.SUBMITTED, job_id, task_id=task_id)
            return task_id

    async def _follow(
        self, job_id: str, task_id: str, fingerprint: str | None, cost: float | None = None
    ) -> JobOutcome:
        def progress(task: Task) -> None:
            self._emit(
                BatchEventKind.RUNNING,
                job_id,
                task_id=task_id,
                progress_percent=task.progress_percent,
                eta=task.eta,
            )

        try:
            result = await self._poller.wait(task_id, progress, cost)
            self._counter.tasks += 1
            if result.status is TaskStatus.FAILED:
                raise TaskFailedError(task_id, result.task.reason)
            files, result = await self._download(job_id, task_id, result)
        except Exception as exc:
            raise _Failure(exc, task_id) from exc
        outcome = JobOutcome(
            job_id=job_id,
            status=JobStatus.SUCCEEDED,
            task_id=task_id,
            seed=result.extra.seed,
            files=files,
        )
        return self._end(outcome, fingerprint, record=True)

    async def _download(
        self, job_id: str, task_id: str, result: TaskResult
    ) -> tuple[list[str], TaskResult]:
        if not result.images:
            raise InvalidResponseError(f"task {task_id} succeeded without images")

        def observe(event: ClientEvent) -> None:
            if event.kind is EventKind.REQUEST:
                self._on_request(event.route)
            elif event.kind is EventKind.RETRY:
                message = "image URL expired: fetching fresh ones"
                if event.error != "IMAGE_URL_EXPIRED":
                    message = f"image download retried in {event.delay or 0.0:.1f}s"
                self._emit(
                    BatchEventKind.RETRIED,
                    job_id,
                    task_id=task_id,
                    reason=event.error,
                    message=message,
                )

        # One folder for every image (no folder per job): the job id names the file.
        paths = await self._client.download_images(
            result, self._out_dir, stem=f"{job_id}_", retry=self._download_retry, on_event=observe
        )
        self._counter.images += len(paths)
        return [path.name for path in paths], result

    # --- ending ----------------------------------------------------------------------------------

    def _fail(
        self, job_id: str, error: BaseException, task_id: str | None, fingerprint: str | None
    ) -> JobOutcome:
        return self._end(_failed(job_id, error, task_id), fingerprint, record=True)

    def _end(self, outcome: JobOutcome, fingerprint: str | None, *, record: bool) -> JobOutcome:
        if record:
            self._journal.record_outcome(outcome, fingerprint)
            self._results.append(outcome)
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


def _failed(job_id: str, error: BaseException, task_id: str | None) -> JobOutcome:
    return JobOutcome(
        job_id=job_id,
        status=JobStatus.FAILED,
        task_id=task_id,
        error=JobError.from_exception(error),
    )


def _changed(prior: JobState, prepared: PreparedJob) -> bool:
    return prior.fingerprint is not None and prior.fingerprint != prepared.fingerprint


def _resumable(prior: JobState) -> bool:
    if prior.phase is JobPhase.SUBMITTED:
        return True
    return (
        prior.phase is JobPhase.FAILED
        and prior.error is not None
        and prior.error.reason not in RESUBMIT_REASONS
    )
