"""One job's way through a run: check, upload, submit (never paid twice), follow, download, record.

Every step of a job goes round one loop, :meth:`JobFlow._step`, around the client's own attempts.
A failed step is judged (:meth:`~._judging.Judge.judge`: the job's fault ends it, a run-level
failure stops the run, a transient one is tried again, its rounds counted only while the service
answers others), except two refusals of a submission that are nobody's fault, tried again at once:

- a 429 is the account's: it pauses every submitter (the gate) and never counts a job's round;
- a 400 ``INVALID_REQUEST_BODY`` to a body naming asset ids from the cache may mean the service
  forgot them (it documents no asset lifetime): those files are uploaded again and the body sent
  once more. A 400 made no task (the journal says ``not_submitted``), so this cannot pay twice.

A submission passes the run's gate (the rate, any pause, the run's stop) and a check of the free
space on the output disk, then, with at most ``submit_concurrency`` POSTs in flight:

1. the journal records the intent (``submitting``) before anything is sent (an object-store
   journal: the intent is in the store's segments before the POST; see ``_journal_segments``);
2. the POST is sent, shielded from cancellation: a stopping run still reads the answer of a POST it
   sent, for ``stop_grace`` seconds (or until :meth:`JobFlow.abandon_submissions`);
3. the answer is recorded in the same step that receives it: ``submitted`` with the task id, or
   ``not_submitted`` when the service refused it (no task exists). A lost answer records nothing
   more: the intent stands, and the job ends ``SUBMIT_OUTCOME_UNKNOWN``.

The download step is :class:`~._saving.ImageSaver`; a job's end is told by
:class:`~._events.Recorder` (the journal first, then the results file, then the event).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs

from .._client import NovitaClient
from .._completion import Poller, request_cost
from .._exceptions import (
    BudgetReachedError,
    LocalIOError,
    NotFoundError,
    RateLimitError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from .._failures import Kind, RetryPolicy, Step, classify, may_be_unknown_asset
from .._models import Task, TaskResult, TaskStatus
from ..webhooks import WebhookReceiver
from ._events import (
    BatchEvent,
    BatchEventHook,
    BatchEventKind,
    Recorder,
    SummaryCounter,
    emit,
    failed_outcome,
)
from ._inputs import AssetUploader, PreparedImage, PreparedJob
from ._jobs import InvalidJob, Job, JobOutcome, JobStatus
from ._journal import JobPhase, Journal, ResultsFile
from ._judging import Ended, Judge, Rounds
from ._options import BatchOptions
from ._outputs import ImageSaver, SavedImages
from ._pacing import RunGate, RunStopped
from ._plan import Action, Planner
from ._run_folder import OutputLostError

__all__ = ["DiskSpace", "JobFlow", "RunContext"]

logger = logging.getLogger("novita_async.batch")

T = TypeVar("T")

# What one image may take on disk (1024 x 1024 PNGs are about that).
_IMAGE_BYTES = 1 << 20
# Kept free on the output disk besides what the tasks in flight need.
_SPARE_BYTES = 4 << 20
# Submissions between two readings of the free space, while it is plentiful.
_RECHECK = 32


def _capped(run: RunContext) -> RetryPolicy:
    """The client's retry policy, with ``Retry-After`` capped as the run's options say: no
    request of a run waits longer than ``retry_after_cap`` on the server's word."""
    retry = run.client.config.retry
    cap = min(retry.retry_after_cap, run.options.retry_after_cap)
    return attrs.evolve(retry, retry_after_cap=cap)


@attrs.frozen(kw_only=True)
class RunContext:
    """What one run's jobs share, made once when the run opens."""

    client: NovitaClient
    options: BatchOptions
    out_dir: Path
    journal: Journal
    results: ResultsFile
    counter: SummaryCounter
    gate: RunGate
    on_event: BatchEventHook | None = None
    webhooks: WebhookReceiver | None = None
    publish: Callable[[Sequence[Path]], Awaitable[None]] | None = None
    """Hands a task's saved images on (an object-store output uploads them)."""
    durable: Callable[[], Awaitable[None]] | None = None
    """Makes the journal's last records durable (an object-store journal: in the store)."""
    retry: RetryPolicy = attrs.field(
        default=attrs.Factory(lambda run: _capped(run), takes_self=True)
    )
    submit_retry: RetryPolicy = attrs.field(
        # A 429 on a submission comes straight back to the job's loop, where it pauses every
        # submitter, instead of being waited out by this one submitter while the others send.
        default=attrs.Factory(
            lambda run: attrs.evolve(run.retry, retry_rate_limited=False), takes_self=True
        )
    )

    def on_request(self, route: str) -> None:
        self.counter.requests[route] += 1

    def emit(self, kind: BatchEventKind, job_id: str, **fields: Any) -> None:
        if self.on_event is not None:  # no observer, no event to build
            emit(self.on_event, BatchEvent(kind, job_id, **fields))


class DiskSpace:
    """Refuses a submission while the output disk lacks room for the images of the tasks in flight:
    a task paid for must have somewhere to land.

    The free space is read again after ``_RECHECK`` submissions, or at once when the last reading
    left room for fewer than that many tasks more.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._image_bytes = _IMAGE_BYTES
        self._free = 0
        self._until_read = 0  # submissions left before the free space is read again

    def check(self, tasks_in_flight: int, images_per_task: int) -> None:
        per_task = images_per_task * self._image_bytes
        need = (tasks_in_flight + 1) * per_task + _SPARE_BYTES
        if self._until_read <= 0 or self._free < need + _RECHECK * per_task:
            try:
                self._free = shutil.disk_usage(self._folder).free
            except OSError as exc:
                where = str(self._folder)
                raise LocalIOError.from_os_error(exc, "checking free space", where) from exc
            self._until_read = _RECHECK
        self._until_read -= 1
        if self._free < need:
            self._until_read = 0  # read it again next time: space may have been freed
            raise LocalIOError(
                f"only {self._free / 1e6:.1f} MB free on the output disk ({self._folder}), "
                f"less than the {need / 1e6:.1f} MB the tasks in flight and the next one may need",
                errno=28,  # ENOSPC
                path=str(self._folder),
            )


@attrs.define
class _Submission:
    """A new job's submission as its loop goes round."""

    job: Job
    prepared: PreparedJob
    body: dict[str, Any] | None = None
    """The body to send; None until the inputs are uploaded (again, after a refusal)."""
    cached: list[tuple[PreparedImage, str]] = attrs.Factory(list)
    """The asset ids in the body that came from the cache, with their images."""
    uploaded_again: bool = False
    posting: bool = False
    """The step has reached the POST: a failure from there on is the submission's (its answer,
    or the lack of one, says whether a task exists)."""


class JobFlow:
    def __init__(self, context: RunContext) -> None:
        self.context = run = context
        self._gate = gate = run.gate
        self._journal = journal = run.journal
        self._counter = run.counter
        self._client = client = run.client
        options = run.options
        self._planner = Planner(journal.jobs, options, run.out_dir)
        self._recorder = Recorder(journal, run.results, run.counter, gate, run.emit)
        self._judge = Judge(client, gate, self._recorder, run.emit)
        self.poller = Poller(
            client,
            options.poll,
            gate,
            retry=run.retry,
            events=run.webhooks,
            max_concurrent=options.poll_concurrency,
            task_timeout=options.task_timeout,
            on_request=run.on_request,
        )
        self._uploader = AssetUploader(
            client, journal, concurrency=options.upload_concurrency, on_request=run.on_request
        )
        self._images = ImageSaver(
            client=client,
            out_dir=run.out_dir,
            retry=run.retry,
            counter=run.counter,
            on_request=run.on_request,
            emit=run.emit,
            publish=run.publish,
        )
        self._disk = DiskSpace(run.out_dir)
        self.webhook_url: str | None = None
        """Where the service sends the run's webhooks (set once the receiver listens)."""
        # A job holds a slot from its submission to its end: ``concurrency`` tasks in flight.
        self._slots = anyio.Semaphore(options.concurrency, fast_acquire=True)
        # Few POSTs in flight at once: each is a task whose answer a stop may have to wait for.
        self._posting = anyio.Semaphore(options.submit_concurrency, fast_acquire=True)
        self._posts: set[anyio.CancelScope] = set()
        self._stop_deadline = math.inf
        self._spent = 0  # submissions sent this run that may have made a task
        self._in_flight = 0
        self._failed_fast = False

    # --- the run's view ----------------------------------------------------------------------

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

    @property
    def awaiting_answers(self) -> int:
        """Submissions sent and not answered yet."""
        return len(self._posts)

    def stop_submissions(self, grace: float) -> None:
        """The run is stopping: the POSTs in flight get ``grace`` more seconds to be answered."""
        self._stop_deadline = min(self._stop_deadline, anyio.current_time() + grace)
        for post in self._posts:
            post.deadline = min(post.deadline, self._stop_deadline)

    def abandon_submissions(self) -> None:
        """Stop waiting for the answers of the POSTs in flight (each becomes an unknown outcome)."""
        self.stop_submissions(0.0)

    def announce_stop(self) -> None:
        error = self._gate.stopped
        if error is not None:
            what, fix = classify(error).advice()
            reason = getattr(error, "reason", type(error).__name__)
            logger.error("the run stops: %s (%s): %s", what, reason, fix)
            self.context.emit(BatchEventKind.STOPPED, "", reason=reason, message=f"{what}: {fix}")

    # --- deciding what to do -------------------------------------------------------------------

    async def process(self, job: Job | InvalidJob) -> JobOutcome | None:
        """The job's outcome; None if the run stopped before the job ended (nothing recorded)."""
        try:
            outcome = await self._decide(job)
        except Ended as ended:
            outcome = ended.outcome
        except RunStopped:
            return None  # counted not finished (SummaryCounter.snapshot)
        if self.context.options.fail_fast and not outcome.ok and not outcome.replayed:
            # Said before this task yields: the job that takes the slot just freed must not
            # submit (the runner's cancel of the workers comes a step later).
            self._failed_fast = True
        return outcome

    async def _decide(self, job: Job | InvalidJob) -> JobOutcome:
        self.context.emit(BatchEventKind.QUEUED, job.id)
        plan = await self._planner.plan(job)
        prior, error = plan.prior, plan.error
        fingerprint = prior.fingerprint if prior is not None else None
        end = self._recorder.end
        if plan.action is Action.DUPLICATE:
            assert error is not None
            return end(failed_outcome(job.id, error, None), None, record=False)
        if plan.action is Action.REPLAY:
            assert prior is not None
            return end(prior.outcome(job.id, replayed=True), fingerprint, record=False)
        if plan.action is Action.CHANGED:
            assert prior is not None and error is not None
            outcome = failed_outcome(job.id, error, prior.task_id, prior.files)
            # Recorded (with the earlier task and images) unless the journal holds an unanswered
            # submission: that must stay an unknown outcome.
            return end(outcome, fingerprint, record=prior.phase is not JobPhase.SUBMITTING)
        if plan.action is Action.UNKNOWN or plan.action is Action.INVALID:
            assert error is not None
            return self._recorder.fail(job.id, error, None, fingerprint)
        if plan.action is Action.FOLLOW:
            assert prior is not None and prior.task_id is not None
            restoring = plan.restoring
            async with self._slots:
                if restoring:
                    self._counter.restored += 1
                else:
                    self._counter.resumed += 1
                self.context.emit(BatchEventKind.RESUMED, job.id, task_id=prior.task_id)
                return await self._follow(
                    job.id, prior.task_id, fingerprint, Rounds(), restoring=restoring
                )
        assert isinstance(job, Job) and plan.prepared is not None
        fingerprint = plan.prepared.fingerprint
        rounds = Rounds()
        submission = _Submission(job, plan.prepared)
        # Its inputs uploaded before it takes a slot: a slot is a task in flight.
        await self._step(job.id, rounds, None, fingerprint, lambda: self._upload(submission))
        async with self._slots:
            task_id = await self._step(
                job.id, rounds, None, fingerprint, lambda: self._submit(submission), submission
            )
            cost = request_cost(job.request)
            return await self._follow(job.id, task_id, fingerprint, rounds, cost)

    # --- the job's loop ------------------------------------------------------------------------

    async def _step(
        self,
        job_id: str,
        rounds: Rounds,
        task_id: str | None,
        fingerprint: str | None,
        step: Callable[[], Awaitable[T]],
        submission: _Submission | None = None,
    ) -> T:
        """``step()``'s result, after riding out its failures as the module says."""
        while True:
            try:
                return await step()
            except (Ended, RunStopped):
                raise
            except Exception as exc:
                posting = submission is not None and submission.posting
                if posting and isinstance(exc, RateLimitError):
                    pause = self._gate.rate_limited(exc.retry_after)
                    message = f"submissions paused for {pause:.1f}s"
                    self.context.emit(
                        BatchEventKind.RETRIED, job_id, reason=exc.reason, message=message
                    )
                    continue
                if (
                    posting
                    and submission is not None
                    and submission.cached
                    and not submission.uploaded_again
                    and may_be_unknown_asset(exc)
                ):
                    # Refused again after this, the refusal is the job's own.
                    submission.uploaded_again = True
                    self._gate.answered()
                    for image, asset_id in submission.cached:
                        self._uploader.forget(image, asset_id)
                    submission.body = None
                    continue
                await self._judge.judge(
                    job_id, exc, rounds, task_id, fingerprint, submitting=posting
                )

    async def _upload(self, submission: _Submission) -> None:
        """Make the body to submit: the job's request (validated when it was made, its body made
        once to fingerprint the job) with the uploaded inputs' asset ids and the run's webhook."""
        prepared = submission.prepared
        submission.posting = False
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
        self.context.emit(BatchEventKind.UPLOADED, submission.job.id)
        extra = body.get("extra") or {}
        if self.webhook_url is not None and "webhook" not in extra:
            # A job that names its own webhook keeps it: its task is then followed by polling.
            body["extra"] = {**extra, "webhook": {"url": self.webhook_url}}
        submission.body, submission.cached = body, cached

    async def _submit(self, submission: _Submission) -> str:
        """Send the job's submission once, as the module says; its task id, recorded."""
        if self._failed_fast:
            raise RunStopped  # --fail-fast: a job failed, nothing more is paid for
        if submission.body is None or (
            not submission.uploaded_again and self._uploader.replaced(submission.cached)
        ):
            # Uploaded again after a refusal, or another job had these ids refused and uploaded
            # the files again meanwhile: its ids, rather than one more refusal of the old ones.
            await self._upload(submission)
        assert submission.body is not None
        job_id, fingerprint = submission.job.id, submission.prepared.fingerprint
        submission.posting = True
        async with self._posting:
            # Passed with the slot held, so a stop or pause that came while this submitter
            # waited for its slot still holds it back.
            await self._gate.wait()
            self._disk.check(self._in_flight, submission.job.request.image_num)
            max_tasks = self.context.options.max_tasks
            if max_tasks is not None and self._spent >= max_tasks:
                self._gate.stop(BudgetReachedError(max_tasks))
                raise RunStopped
            self._journal.record_submitting(job_id, fingerprint)
            if self.context.durable is not None:
                try:
                    await self.context.durable()
                except BaseException:
                    self._journal.record_not_submitted(job_id)  # nothing was sent
                    raise
            self._spent += 1
            with anyio.CancelScope(shield=True, deadline=self._stop_deadline) as post:
                self._posts.add(post)
                try:
                    self.context.on_request("submit")
                    task_id = await self._client._submit_body(
                        "instant-id", submission.body, retry=self.context.submit_retry
                    )
                except Exception as exc:
                    if classify(exc, step=Step.SUBMIT).kind is not Kind.UNKNOWN_OUTCOME:
                        self._spent -= 1
                        self._journal.record_not_submitted(job_id)  # answered: no task made
                    raise
                finally:
                    self._posts.discard(post)
                # Nothing is awaited between the answer and its record.
                self._journal.record_submitted(job_id, task_id, fingerprint)
                self._recorder.check_reserve()
                self._gate.answered()
                self._counter.submitted += 1
                self.context.emit(BatchEventKind.SUBMITTED, job_id, task_id=task_id)
                return task_id
        # Only a stop's grace running out ends up here (the shielded scope's deadline).
        raise SubmitOutcomeUnknownError(
            "the run stopped before the submission was answered; a task may exist and be "
            "billed: look for it before submitting again",
            method="POST",
        )

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
            self.context.emit(
                BatchEventKind.RUNNING,
                job_id,
                task_id=task_id,
                progress_percent=task.progress_percent,
                eta=task.eta,
            )

        async def to_the_end() -> tuple[SavedImages, TaskResult]:
            try:
                result = await self.poller.wait(task_id, progress, cost)
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
