"""One job's way through a run: check, upload, submit (never paid twice), follow, download, record.

Every step of a job goes round one loop, :meth:`JobFlow._step`, around the client's own attempts.
A failed step is handled as the failure policy decides (``_failures.decide``: the job's fault ends
it, a run-level failure stops the run, a transient one is tried again, its rounds counted only
while the service answers others), except two refusals of a submission, tried again at once:

- a 429 is the account's on that endpoint: it pauses every submitter of that endpoint (the gate),
  the other endpoints' go on, and it never counts a job's round;
- a 400 ``INVALID_REQUEST_BODY`` to a body naming asset ids from the cache may mean the service
  forgot them (it documents no asset lifetime): those files are uploaded again and the body sent
  once more. A 400 made no task (the journal says ``not_submitted``), so this cannot pay twice.

A submission waits, holding no slot, until its endpoint takes it (no 429 pause, room under its
task's cap in ``task_rates``): a paused endpoint's jobs never keep the slots from the others'.
Then it passes the run's gate (the rate, any pause, the stop) and a check of the free space on the
output disk, then, with at most ``submit_concurrency`` POSTs in flight:

1. the journal records the intent (``submitting``) before anything is sent (and, an object-store
   journal, makes it durable in the store);
2. the POST is sent, shielded from cancellation: a stopping run still reads the answer of a POST it
   sent, for ``stop_grace`` seconds (or until :meth:`JobFlow.stop_submissions` says 0);
3. the answer is recorded in the step that receives it: ``submitted`` with the task id, or
   ``not_submitted`` when the service refused it. A lost answer records nothing more: the intent
   stands, and the job ends ``SUBMIT_OUTCOME_UNKNOWN``.

A job's end is told in one order (:meth:`JobFlow._end`): the journal (the source of truth), then
``results.jsonl``, then the counts and the event. A record that cannot be written stops the run
(the job ends unrecorded, a rerun continues it); so does one written with the journal's reserve.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs

from .. import _failures
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
from .._failures import Kind, Rounds, Step, classify
from .._models import (
    InstantIDRequest,
    Task,
    TaskResult,
    TaskStatus,
    endpoint_name,
    with_images,
)
from ..webhooks import WebhookReceiver
from ._events import BatchEvent, BatchEventHook, BatchEventKind, SummaryCounter, emit
from ._inputs import ASSET_FIELDS, AssetUploader, InputEncoder, PreparedImage, PreparedJob
from ._jobs import INSTANT_ID, InvalidJob, Job, JobError, JobOutcome, JobStatus
from ._journal import JobPhase, Journal, ResultsFile
from ._options import BatchOptions
from ._outputs import ImageSaver, SavedImages
from ._pacing import RunGate, RunStopped, SubmitPermits
from ._plan import Action, Planner
from ._run_folder import OutputLostError, RunFolder

__all__ = ["DiskSpace", "JobFlow"]

logger = logging.getLogger("novita_async.batch")

T = TypeVar("T")

# What one image may take on disk (1024 x 1024 PNGs are about that).
_IMAGE_BYTES = 1 << 20
# Kept free on the output disk besides what the tasks in flight need.
_SPARE_BYTES = 4 << 20
# Submissions between two readings of the free space, while it is plentiful.
_RECHECK = 32


class DiskSpace:
    """Refuses a submission while the output disk lacks room for the images of the tasks in flight:
    a task paid for must have somewhere to land. The free space is read again after ``_RECHECK``
    submissions, or at once when the last reading left room for fewer than that many tasks more.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._free = 0
        self._until_read = 0  # submissions left before the free space is read again

    def check(self, tasks_in_flight: int, images_per_task: int) -> None:
        per_task = images_per_task * _IMAGE_BYTES
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


class _NotNow(Exception):
    """The submission's endpoint is paused or capped after all: wait again, holding no slot."""


class _Ended(Exception):
    """The job has ended (recorded); carries its outcome."""

    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__(outcome.job_id)
        self.outcome = outcome


def _failed(
    job_id: str,
    task: str,
    error: BaseException,
    task_id: str | None,
    files: tuple[str, ...] = (),
) -> JobOutcome:
    error_of = JobError.from_exception(error)
    return JobOutcome(job_id, JobStatus.FAILED, task_id, files=files, error=error_of, task=task)


@attrs.define(kw_only=True)
class _Way:
    """A job on its way, as its loop goes round."""

    id: str
    fingerprint: str | None
    task: str = INSTANT_ID
    rounds: Rounds = attrs.Factory(Rounds)
    task_id: str | None = None


@attrs.define(kw_only=True)
class _Submission(_Way):
    """A new job's way, from its upload to its submission's answer."""

    job: Job
    prepared: PreparedJob
    body: dict[str, Any] | None = None
    """The body to send; None until the inputs are uploaded (again, after a refusal)."""
    cached: list[tuple[PreparedImage, str]] = attrs.Factory(list)
    """The asset ids in the body that came from the cache, with their images."""
    uploaded_again: bool = False
    posting: bool = False
    """The step has reached the POST: a failure from there on is the submission's."""


class JobFlow:
    """One run's jobs, each from its plan to its record, and what they share (made once a run)."""

    def __init__(
        self,
        client: NovitaClient,
        options: BatchOptions,
        folder: RunFolder,
        journal: Journal,
        results: ResultsFile,
        *,
        on_event: BatchEventHook | None,
        permits: SubmitPermits | None,
    ) -> None:
        self.options = options
        self.counter = SummaryCounter(started=anyio.current_time())
        self._client, self._journal, self._results = client, journal, results
        self._on_event = on_event
        out_dir = folder.out_dir
        # Makes the journal's last records durable (an object-store journal: in the store).
        self._durable = None if folder.mirror is None else folder.mirror.durable
        self.gate = RunGate(
            options.rate,
            retry_after_cap=options.retry_after_cap,
            max_outage=options.max_outage,
            on_pause=self._paused,
            permits=permits,
            caps=options.task_rates,  # a task's name is its endpoint's
        )
        self.webhooks = None if options.webhook_listen is None else WebhookReceiver()
        self.webhook_url: str | None = None
        """Where the service sends the run's webhooks (set once the receiver listens)."""
        # No request of a run waits longer than ``retry_after_cap`` on the server's word.
        retry = client.config.retry
        retry = attrs.evolve(
            retry, retry_after_cap=min(retry.retry_after_cap, options.retry_after_cap)
        )
        # A 429 on a submission comes straight back to the job's loop, where it pauses every
        # submitter, instead of being waited out by this one submitter while the others send.
        self._submit_retry = attrs.evolve(retry, retry_rate_limited=False)
        self._planner = Planner(journal.jobs, options, out_dir)
        self.poller = Poller(
            client,
            options.poll,
            self.gate,
            retry=retry,
            events=self.webhooks,
            max_concurrent=options.poll_concurrency,
            task_timeout=options.task_timeout,
            on_request=self._on_request,
        )
        self._uploader = AssetUploader(
            client, journal, concurrency=options.upload_concurrency, on_request=self._on_request
        )
        self._encoder = InputEncoder(options.max_inline_bytes)
        self._images = ImageSaver(
            client=client,
            out_dir=out_dir,
            retry=retry,
            counter=self.counter,
            on_request=self._on_request,
            emit=self._emit,
            publish=folder.destination.publish,
        )
        self._disk = DiskSpace(out_dir)
        # A job holds a slot from its submission to its end: ``concurrency`` tasks in flight.
        self._slots = anyio.Semaphore(options.concurrency, fast_acquire=True)
        # Few POSTs in flight at once: each is a task whose answer a stop may have to wait for.
        self._posting = anyio.Semaphore(options.submit_concurrency, fast_acquire=True)
        self.posts: set[anyio.CancelScope] = set()
        """The POSTs sent and not answered yet."""
        self._stop_deadline = math.inf
        self._spent = 0  # submissions sent this run that may have made a task
        self._in_flight = 0
        self.failed_fast = False
        """A job failed under ``fail_fast``: nothing more is submitted, and the run ends early."""

    def _on_request(self, route: str) -> None:
        self.counter.requests[route] += 1

    def _emit(self, kind: BatchEventKind, job_id: str, **fields: Any) -> None:
        if self._on_event is not None:  # no observer, no event to build
            emit(self._on_event, BatchEvent(kind, job_id, **fields))

    def _paused(self, message: str, paused: bool) -> None:
        self._emit(
            BatchEventKind.PAUSED if paused else BatchEventKind.CONTINUED, "", message=message
        )

    # --- the run's stop ------------------------------------------------------------------------

    def stop_submissions(self, grace: float) -> None:
        """The run is stopping: the POSTs in flight get ``grace`` more seconds to be answered."""
        self._stop_deadline = min(self._stop_deadline, anyio.current_time() + grace)
        for post in self.posts:
            post.deadline = min(post.deadline, self._stop_deadline)

    async def bound_the_stop(self) -> None:
        """Once the run stops (or, cancelled, ends), tell why, and give the submissions in flight
        (shielded) ``stop_grace`` more seconds."""
        try:
            await self.gate.stopping()
            if (error := self.gate.stopped) is not None:
                verdict = classify(error)
                what, fix = verdict.advice()
                logger.error("the run stops: %s (%s): %s", what, verdict.reason, fix)
                self._emit(
                    BatchEventKind.STOPPED, "", reason=verdict.reason, message=f"{what}: {fix}"
                )
            await anyio.sleep_forever()
        finally:
            self.stop_submissions(self.options.stop_grace)

    # --- deciding what to do -------------------------------------------------------------------

    async def process(self, job: Job | InvalidJob) -> JobOutcome | None:
        """The job's outcome; None if the run stopped before the job ended (nothing recorded)."""
        self.counter.taken += 1
        try:
            outcome = await self._decide(job)
        except _Ended as ended:
            outcome = ended.outcome
        except RunStopped:
            return None  # counted not finished (SummaryCounter.snapshot)
        if self.options.fail_fast and not outcome.ok and not outcome.replayed:
            # Said before this task yields: the job that takes the slot just freed must not
            # submit (the runner's cancel of the workers comes a step later).
            self.failed_fast = True
        return outcome

    async def _decide(self, job: Job | InvalidJob) -> JobOutcome:
        self._emit(BatchEventKind.QUEUED, job.id)
        plan = await self._planner.plan(job)
        prior, error = plan.prior, plan.error
        fingerprint = prior.fingerprint if prior is not None else None
        if plan.action is Action.DUPLICATE:
            assert error is not None
            return self._end(_failed(job.id, job.task, error, None), None, record=False)
        if plan.action is Action.REPLAY:
            assert prior is not None
            return self._end(prior.outcome(job.id, replayed=True), fingerprint, record=False)
        if plan.action is Action.CHANGED:
            assert prior is not None and error is not None
            outcome = _failed(job.id, job.task, error, prior.task_id, prior.files)
            # Recorded (with the earlier task and images) unless the journal holds an unanswered
            # submission: that must stay an unknown outcome.
            return self._end(outcome, fingerprint, record=prior.phase is not JobPhase.SUBMITTING)
        if plan.action is Action.UNKNOWN or plan.action is Action.INVALID:
            assert error is not None
            return self._end(_failed(job.id, job.task, error, None), fingerprint, record=True)
        if plan.action is Action.FOLLOW:
            assert prior is not None and prior.task_id is not None
            async with self._slots:
                if plan.restoring:
                    self.counter.restored += 1
                else:
                    self.counter.resumed += 1
                self._emit(BatchEventKind.RESUMED, job.id, task_id=prior.task_id)
                way = _Way(
                    id=job.id, fingerprint=fingerprint, task=prior.task, task_id=prior.task_id
                )
                return await self._follow(way, restoring=plan.restoring)
        assert isinstance(job, Job) and plan.prepared is not None
        submission = _Submission(
            id=job.id,
            fingerprint=plan.prepared.fingerprint,
            task=job.task,
            job=job,
            prepared=plan.prepared,
        )
        # Its inputs uploaded before it takes a slot: a slot is a task in flight.
        await self._step(submission, lambda: self._upload(submission))
        request = job.request
        while True:
            # Its endpoint's pause or cap waited out holding no slot: the slots are for the
            # endpoints that take submissions now.
            await self.gate.until_ready(endpoint_name(request), request.images_out)
            async with self._slots:
                try:
                    submission.task_id = await self._step(
                        submission, lambda: self._submit(submission)
                    )
                except _NotNow:
                    continue
                submission.posting = False  # answered: what fails from now on is not the POST
                return await self._follow(submission, request_cost(request))

    # --- the job's loop ------------------------------------------------------------------------

    async def _step(self, way: _Way, step: Callable[[], Awaitable[T]]) -> T:
        """``step()``'s result, after riding out its failures as the module says."""
        while True:
            try:
                return await step()
            except (_Ended, RunStopped, _NotNow):
                raise
            except Exception as exc:
                error = exc
            posting = isinstance(way, _Submission) and way.posting
            if isinstance(way, _Submission) and way.posting:
                if isinstance(error, RateLimitError):
                    endpoint = endpoint_name(way.job.request)
                    pause = self.gate.rate_limited(error.retry_after, endpoint)
                    message = f"submissions paused for {pause:.1f}s: rate limited on {endpoint}"
                    self._emit(BatchEventKind.RETRIED, way.id, reason=error.reason, message=message)
                    raise _NotNow from error  # its slots freed while its endpoint pauses
                if way.cached and not way.uploaded_again and _failures.may_be_unknown_asset(error):
                    # Refused again after this, the refusal is the job's own.
                    way.uploaded_again = True
                    self.gate.answered()
                    for image, asset_id in way.cached:
                        self._uploader.forget(image, asset_id)
                    way.body = None
                    continue
            nxt = _failures.decide(
                error,
                step=Step.SUBMIT if posting else Step.OTHER,
                rounds=way.rounds,
                answers=self.gate.answers,
                policy=self._client.config.retry,
            )
            if nxt.action is _failures.Action.STOP_RUN:
                # Nothing more is submitted; the tasks paid for are still followed, unless their
                # requests fail the same way.
                self.gate.stop(error)
                raise RunStopped from error
            if nxt.pause is _failures.Pause.EVERYTHING:
                self.gate.unreachable(error)
            if nxt.record is not None:
                outcome = _failed(way.id, way.task, nxt.record, way.task_id)
                raise _Ended(self._end(outcome, way.fingerprint, record=True))
            if nxt.counted:
                way.rounds.answers_seen = self.gate.answers
                way.rounds.count = nxt.round
            self._emit(
                BatchEventKind.RETRIED,
                way.id,
                task_id=way.task_id,
                reason=nxt.verdict.reason,
                message=f"{error}; trying again in {nxt.wait:.1f}s "
                f"(round {way.rounds.count} of {_failures.MAX_JOB_ROUNDS})",
            )
            # A stop must not wait for this job's backoff.
            with anyio.move_on_after(nxt.wait):
                await self.gate.stopping()
            await self.gate.wait(submission=False)

    async def _upload(self, submission: _Submission) -> None:
        """Make the body to submit: the job's request (validated when it was made, its body made
        once to fingerprint the job) with the uploaded inputs' asset ids and the run's webhook."""
        prepared = submission.prepared
        submission.posting = False
        body, cached = dict(prepared.body), []
        # A v3 task's inputs are not uploaded: they go inline, at its submission.
        uploads = isinstance(submission.job.request, InstantIDRequest)
        every = (prepared.faces, prepared.refs, prepared.kps) if uploads else ()
        for field, images in zip(ASSET_FIELDS, every, strict=False):
            if images is None:
                continue
            body[field] = ids = []
            for image in images:
                asset_id, from_cache = await self._uploader.asset_id(image)
                ids.append(asset_id)
                if from_cache:
                    cached.append((image, asset_id))
        if uploads:
            self._emit(BatchEventKind.UPLOADED, submission.id)
        extra = body.get("extra") or {}
        if self.webhook_url is not None and "webhook" not in extra:
            # A job that names its own webhook keeps it: its task is then followed by polling.
            body["extra"] = {**extra, "webhook": {"url": self.webhook_url}}
        submission.body, submission.cached = body, cached

    async def _submit(self, submission: _Submission) -> str:
        """Send the job's submission once, as the module says; its task id, recorded."""
        if self.failed_fast:
            raise RunStopped  # --fail-fast: a job failed, nothing more is paid for
        if submission.body is None or (
            not submission.uploaded_again and self._uploader.replaced(submission.cached)
        ):
            # Uploaded again after a refusal, or another job had these ids refused and uploaded
            # the files again meanwhile: its ids, rather than one more refusal of the old ones.
            await self._upload(submission)
        assert submission.body is not None
        submission.posting = True
        request = submission.job.request
        endpoint, images = endpoint_name(request), request.images_out
        async with self._posting:
            # Passed with the slot held, so a stop or pause that came while this submitter
            # waited for its slot still holds it back; its endpoint's, with no slot held.
            if self.gate.ready_in(endpoint, images) > 0:
                raise _NotNow
            await self.gate.wait(endpoint=endpoint, images=images)
            self._disk.check(self._in_flight, images)
            max_tasks = self.options.max_tasks
            if max_tasks is not None and self._spent >= max_tasks:
                self.gate.stop(BudgetReachedError(max_tasks))
                raise RunStopped
            async with self._encoder.encoded(submission.prepared.inputs) as encoded:
                body = with_images(submission.body, encoded) if encoded else submission.body
                return await self._post(submission, endpoint, body)

    async def _post(self, submission: _Submission, endpoint: str, body: dict[str, Any]) -> str:
        """Send ``body`` once, with its intent recorded before and its answer after."""
        job_id, fingerprint, task = submission.id, submission.fingerprint, submission.task
        self._journal.record_submitting(job_id, fingerprint, task)
        if self._durable is not None:
            try:
                await self._durable()
            except BaseException:
                self._journal.record_not_submitted(job_id)  # nothing was sent
                raise
        self._spent += 1
        with anyio.CancelScope(shield=True, deadline=self._stop_deadline) as post:
            self.posts.add(post)
            try:
                self._on_request("submit")
                task_id = await self._client._submit_body(endpoint, body, retry=self._submit_retry)
            except Exception as exc:
                if classify(exc, step=Step.SUBMIT).kind is not Kind.UNKNOWN_OUTCOME:
                    self._spent -= 1
                    self._journal.record_not_submitted(job_id)  # answered: no task made
                raise
            finally:
                self.posts.discard(post)
            # Nothing is awaited between the answer and its record.
            self._journal.record_submitted(job_id, task_id, fingerprint, task)
            self._check_reserve()
            self.gate.answered()
            self.counter.submitted += 1
            self._emit(BatchEventKind.SUBMITTED, job_id, task_id=task_id)
            return task_id
        # Only a stop's grace running out ends up here (the shielded scope's deadline).
        raise SubmitOutcomeUnknownError(
            "the run stopped before the submission was answered; a task may exist and be "
            "billed: look for it before submitting again",
            method="POST",
        )

    async def _follow(
        self, way: _Way, cost: float | None = None, *, restoring: bool = False
    ) -> JobOutcome:
        task_id = way.task_id
        assert task_id is not None

        def progress(task: Task) -> None:
            eta, percent = task.eta, task.progress_percent
            self._emit(
                BatchEventKind.RUNNING, way.id, task_id=task_id, progress_percent=percent, eta=eta
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
            return await self._images.save(way.id, task_id, result), result

        self._in_flight += 1
        try:
            saved, result = await self._step(way, to_the_end)
        finally:
            self._in_flight -= 1
        outcome = JobOutcome(
            way.id,
            JobStatus.SUCCEEDED,
            task_id,
            result.extra.seed,
            files=saved.names,
            task=way.task,
        )
        return self._end(
            outcome, way.fingerprint, record=True, sizes=saved.sizes, digests=saved.digests
        )

    # --- a job's end ---------------------------------------------------------------------------

    def _end(
        self,
        outcome: JobOutcome,
        fingerprint: str | None,
        *,
        record: bool,
        sizes: tuple[int, ...] = (),
        digests: tuple[str, ...] = (),
    ) -> JobOutcome:
        """Tell the job's end, in the module's order."""
        if record:
            try:
                self._journal.record_outcome(outcome, fingerprint, sizes=sizes, digests=digests)
                self._results.append(outcome)
            except LocalIOError as error:
                self.gate.stop(error)
                raise RunStopped from error
            self._check_reserve()
        self.counter.count_outcome(outcome)
        fields: dict[str, Any]
        if (failure := outcome.error) is None:
            kind, fields = BatchEventKind.SUCCEEDED, {"files": outcome.files}
        else:
            kind = BatchEventKind.FAILED
            fields = {"reason": failure.reason, "message": failure.message}
        self._emit(
            kind, outcome.job_id, task_id=outcome.task_id, replayed=outcome.replayed, **fields
        )
        return outcome

    def _check_reserve(self) -> None:
        """Stop the run once the journal had to spend its reserve: the disk is full."""
        if self._journal.reserve_used:
            path = self._journal.path
            message = f"the output disk is full: the journal used its reserve ({path})"
            self.gate.stop(LocalIOError(message, errno=28, path=str(path)))  # ENOSPC
