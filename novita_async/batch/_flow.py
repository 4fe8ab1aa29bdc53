"""One job's way through a run: check, upload, submit, follow, download, record.

(The download step, a task's images into OUT, is :class:`~._saving.ImageSaver`.)

Every error of a step is judged in one place, :meth:`~._judging.Judge.judge`. Every step that
ends the job goes through :class:`~._recording.Recorder`, which writes the journal first (the
source of truth), then the results file, then the progress event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs

from .._client import NovitaClient
from .._exceptions import (
    NotFoundError,
    RateLimitError,
    TaskFailedError,
)
from .._models import Task, TaskResult, TaskStatus
from .._retry import RetryPolicy
from ._durations import request_cost
from ._events import BatchEvent, BatchEventHook, BatchEventKind, emit
from ._failures import may_be_unknown_asset, run_stop_advice
from ._inputs import PreparedImage, PreparedJob
from ._job import InvalidJob, Job, JobOutcome, JobStatus
from ._journal import JobPhase, Journal
from ._judging import Ended, Judge, Rounds
from ._limits import RunGate, RunStopped
from ._options import BatchOptions
from ._plan import Action, Planner
from ._poller import Poller
from ._recording import Recorder, failed_outcome
from ._results import ResultsFile
from ._saving import ImageSaver, SavedImages
from ._submission import DiskSpace, Submitter
from ._summary import SummaryCounter
from ._uploads import AssetUploader
from ._verify import OUTPUT_MISSING, OutputLostError

__all__ = ["JobFlow"]

logger = logging.getLogger("novita_async.batch")

T = TypeVar("T")


class JobFlow:
    def __init__(
        self,
        *,
        client: NovitaClient,
        out_dir: Path,
        options: BatchOptions,
        journal: Journal,
        results: ResultsFile,
        counter: SummaryCounter,
        uploader: AssetUploader,
        poller: Poller,
        gate: RunGate,
        on_event: BatchEventHook | None,
        on_request: Callable[[str], None],
        publish: Callable[[Sequence[Path]], Awaitable[None]] | None = None,
        durable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._options = options
        self._journal = journal
        self._results = results
        self._counter = counter
        self._uploader = uploader
        self._poller = poller
        self._gate = gate
        self._on_event = on_event
        self._on_request = on_request
        self._planner = Planner(journal.jobs, options, out_dir)
        self._recorder = Recorder(journal, results, counter, gate, self._emit)
        self._judge = Judge(client, gate, self._recorder, self._emit)
        self.webhook_url: str | None = None
        """Where the service sends the run's webhooks (set once the receiver listens)."""
        self._disk = DiskSpace(out_dir)
        retry = run_retry(client, options)
        self.submitter = Submitter(
            client=client,
            journal=journal,
            gate=gate,
            disk=self._disk,
            retry=attrs.evolve(retry, retry_rate_limited=False),
            posting=options.submit_concurrency,
            max_tasks=options.max_tasks,
            on_request=on_request,
            on_paused=self._rate_limited,
            durable=durable,
        )
        self._images = ImageSaver(
            client=client,
            out_dir=out_dir,
            retry=retry,
            counter=counter,
            on_request=on_request,
            emit=self._emit,
            publish=publish,
        )
        # A job holds a slot from its submission to its end: ``concurrency`` tasks in flight.
        self._slots = anyio.Semaphore(options.concurrency, fast_acquire=True)
        self._in_flight = 0
        self._fail_fast = options.fail_fast
        self._failed_fast = False

    @property
    def stopped_by(self) -> BaseException | None:
        """The run-level failure that stopped the run, if one did."""
        return self._gate.stopped

    @property
    def failed_fast(self) -> bool:
        """A job failed under ``fail_fast``: nothing more is submitted, and the run ends early."""
        return self._failed_fast

    @property
    def stopping_submissions(self) -> bool:
        """A run-level failure stopped the run, or a job failed under ``fail_fast``."""
        return self._gate.stopped is not None or self._failed_fast

    def stop_run(self, error: BaseException) -> None:
        """Stop the run for a run-level ``error`` found outside any job (the output's store)."""
        self._gate.stop(error)

    async def stopping(self) -> None:
        """Return once a run-level failure stops the run."""
        await self._gate.stopping()

    def announce_stop(self) -> None:
        error = self._gate.stopped
        if error is not None:
            what, fix = run_stop_advice(error)
            reason = getattr(error, "reason", type(error).__name__)
            logger.error("the run stops: %s (%s): %s", what, reason, fix)
            self._emit(BatchEventKind.STOPPED, "", reason=reason, message=f"{what}: {fix}")

    def _emit(self, kind: BatchEventKind, job_id: str, **fields: object) -> None:
        if self._on_event is not None:  # no observer, no event to build
            emit(self._on_event, BatchEvent(kind, job_id, **fields))  # type: ignore[arg-type]

    # --- deciding what to do -------------------------------------------------------------------

    async def process(self, job: Job | InvalidJob) -> JobOutcome | None:
        """The job's outcome; None if the run stopped before the job ended (nothing recorded)."""
        try:
            outcome = await self._decide(job)
        except Ended as ended:
            outcome = ended.outcome
        except RunStopped:
            return None  # counted not finished (SummaryCounter.snapshot)
        if self._fail_fast and not outcome.ok and not outcome.replayed:
            # Said before this task yields: the job that takes the slot just freed must not
            # submit (the runner's cancel of the workers comes a step later).
            self._failed_fast = True
        return outcome

    async def _decide(self, job: Job | InvalidJob) -> JobOutcome:
        self._emit(BatchEventKind.QUEUED, job.id)
        plan = await self._planner.plan(job)
        prior, error = plan.prior, plan.error
        fingerprint = prior.fingerprint if prior is not None else None
        if plan.action is Action.DUPLICATE:
            assert error is not None
            return self._recorder.end(failed_outcome(job.id, error, None), None, record=False)
        if plan.action is Action.REPLAY:
            assert prior is not None
            return self._recorder.end(
                prior.outcome(job.id, replayed=True), fingerprint, record=False
            )
        if plan.action is Action.CHANGED:
            assert prior is not None and error is not None
            outcome = failed_outcome(job.id, error, prior.task_id, prior.files)
            # Recorded (with the earlier task and images) unless the journal holds an unanswered
            # submission: that must stay an unknown outcome.
            recorded = prior.phase is not JobPhase.SUBMITTING
            return self._recorder.end(outcome, fingerprint, record=recorded)
        if plan.action is Action.UNKNOWN or plan.action is Action.INVALID:
            assert error is not None
            return self._recorder.fail(job.id, error, None, fingerprint)
        if plan.action is Action.FOLLOW:
            assert prior is not None and prior.task_id is not None
            restoring = prior.error is not None and prior.error.reason == OUTPUT_MISSING
            return await self._resume(job.id, prior.task_id, fingerprint, restoring=restoring)
        assert isinstance(job, Job) and plan.prepared is not None
        return await self._fresh(job, plan.prepared)

    async def _resume(
        self, job_id: str, task_id: str, fingerprint: str | None, *, restoring: bool = False
    ) -> JobOutcome:
        """Follow a task of an earlier run to its end; ``restoring``: the task had succeeded and
        its images are gone from OUT, fetched again from its result (nothing is submitted)."""
        async with self._slots:
            if restoring:
                self._counter.restored += 1
            else:
                self._counter.resumed += 1
            self._emit(BatchEventKind.RESUMED, job_id, task_id=task_id)
            return await self._follow(job_id, task_id, fingerprint, Rounds(), restoring=restoring)

    async def _fresh(self, job: Job, prepared: PreparedJob) -> JobOutcome:
        fingerprint = prepared.fingerprint
        rounds = Rounds()
        request = await self._step(
            job.id, rounds, None, fingerprint, lambda: self._request(job, prepared)
        )
        async with self._slots:
            if self._failed_fast:
                raise RunStopped  # --fail-fast: a job failed, nothing more is paid for
            task_id = await self._submit(job, prepared, request, rounds)
            cost = request_cost(job.request)
            return await self._follow(job.id, task_id, fingerprint, rounds, cost)

    # --- steps -----------------------------------------------------------------------------------

    async def _step(
        self,
        job_id: str,
        rounds: Rounds,
        task_id: str | None,
        fingerprint: str | None,
        step: Callable[[], Awaitable[T]],
    ) -> T:
        """``step()``'s result, after riding out its transient failures."""
        while True:
            try:
                result = await step()
            except (Ended, RunStopped):
                raise
            except Exception as exc:
                await self._judge.judge(job_id, exc, rounds, task_id, fingerprint)
                continue
            return result

    async def _request(self, job: Job, prepared: PreparedJob) -> _Request:
        """The body to submit: the job's request (validated when it was made, its body made once
        to fingerprint the job) with the uploaded inputs' asset ids and the run's webhook; and
        the ids in it that came from the cache."""
        cached: list[tuple[PreparedImage, str]] = []

        async def ids(images: Sequence[PreparedImage]) -> list[str]:
            found = []
            for image in images:
                asset_id, from_cache = await self._uploader.asset_id(image)
                if from_cache:
                    cached.append((image, asset_id))
                found.append(asset_id)
            return found

        body = {
            **prepared.body,
            "face_image_assets_ids": await ids(prepared.faces),
            "ref_image_assets_ids": await ids(prepared.refs),
        }
        if prepared.kps is not None:
            body["face_kps_assets_ids"] = await ids(prepared.kps)
        self._emit(BatchEventKind.UPLOADED, job.id)
        extra = body.get("extra") or {}
        if self.webhook_url is not None and "webhook" not in extra:
            # A job that names its own webhook keeps it: its task is then followed by polling.
            body["extra"] = {**extra, "webhook": {"url": self.webhook_url}}
        return _Request(body, cached)

    async def _submit(
        self, job: Job, prepared: PreparedJob, request: _Request, rounds: Rounds
    ) -> str:
        fingerprint = prepared.fingerprint

        async def again() -> _Request:
            return await self._step(
                job.id, rounds, None, fingerprint, lambda: self._request(job, prepared)
            )

        uploaded_again = False
        while True:
            if not uploaded_again and self._uploader.replaced(request.cached):
                # Another job had these ids refused and uploaded the files again meanwhile:
                # its ids, rather than one more refusal of the old ones.
                request = await again()
            try:
                task_id = await self.submitter.submit(
                    job.id, request.body, job.request.image_num, fingerprint, self._in_flight
                )
            except (Ended, RunStopped):
                raise
            except Exception as exc:
                if request.cached and not uploaded_again and may_be_unknown_asset(exc):
                    # The service documents no asset lifetime and no error of its own for an
                    # asset it no longer knows: a refused body that named cached ids is sent once
                    # more, with those files uploaded again. A 400 made no task (the journal says
                    # not_submitted), so this cannot pay twice; refused again, the refusal is the
                    # job's own.
                    uploaded_again = True
                    self._gate.answered()
                    for image, asset_id in request.cached:
                        self._uploader.forget(image, asset_id)
                    request = await again()
                    continue
                await self._judge.judge(job.id, exc, rounds, None, fingerprint, submitting=True)
                continue
            self._recorder.check_reserve()
            self._gate.answered()
            self._counter.submitted += 1
            self._emit(BatchEventKind.SUBMITTED, job.id, task_id=task_id)
            return task_id

    async def _follow(
        self,
        job_id: str,
        task_id: str,
        fingerprint: str | None,
        rounds: Rounds,
        cost: float | None = None,
        *,
        restoring: bool = False,
    ) -> JobOutcome:
        def progress(task: Task) -> None:
            self._emit(
                BatchEventKind.RUNNING,
                job_id,
                task_id=task_id,
                progress_percent=task.progress_percent,
                eta=task.eta,
            )

        async def to_the_end() -> tuple[SavedImages, TaskResult]:
            try:
                result = await self._poller.wait(task_id, progress, cost)
            except NotFoundError as exc:
                if restoring and exc.reason == "TASK_NOT_FOUND":
                    # Paid for once already: a new task only when the user says so.
                    detail = "its images are missing from the output"
                    raise OutputLostError(task_id, detail) from exc
                raise
            if result.status is TaskStatus.FAILED:
                raise TaskFailedError(task_id, result.task.reason)
            return await self._images.save(job_id, task_id, result), result

        self._in_flight += 1
        try:
            saved, result = await self._step(job_id, rounds, task_id, fingerprint, to_the_end)
        finally:
            self._in_flight -= 1
        outcome = JobOutcome(
            job_id=job_id,
            status=JobStatus.SUCCEEDED,
            task_id=task_id,
            seed=result.extra.seed,
            files=saved.names,
        )
        return self._recorder.end(
            outcome, fingerprint, record=True, sizes=saved.sizes, digests=saved.digests
        )

    def _rate_limited(self, job_id: str, error: RateLimitError, pause: float) -> None:
        self._emit(
            BatchEventKind.RETRIED,
            job_id,
            reason=error.reason,
            message=f"submissions paused for {pause:.1f}s",
        )


def run_retry(client: NovitaClient, options: BatchOptions) -> RetryPolicy:
    """The client's retry policy, with ``Retry-After`` capped as the run's options say: no
    request of a run waits longer than ``retry_after_cap`` on the server's word."""
    retry = client.config.retry
    return attrs.evolve(retry, retry_after_cap=min(retry.retry_after_cap, options.retry_after_cap))


@attrs.frozen
class _Request:
    """A body to submit, and the asset ids in it that came from the cache (with their images)."""

    body: dict[str, Any]
    cached: list[tuple[PreparedImage, str]]
