"""BatchRunner: many jobs through one client, bounded, resumable, in completion order.

Shape of a run (every task has an owner that awaits it)::

    run()                       opens journal + results, owns the task group and the stream
    └── _drive                  closes the outcome stream when done
        ├── Poller.run          the one polling loop: hands each due task its turn to poll
        ├── bound_the_stop      on stop, gives submissions in flight ``stop_grace`` seconds
        └── workers             concurrency + upload_concurrency tasks, each taking one job at
            │                   a time from the input (read lazily; an async one under a lock)
            └── JobFlow.process check -> upload -> submit -> follow -> download -> record

Bounds: ``concurrency`` tasks in flight (held from submission until the job ends);
``upload_concurrency`` uploads at once and as many jobs read ahead; ``rate`` submissions per
second and a shared pause after a 429 (:class:`RunGate`); ``poll_concurrency`` polls at once.
Memory grows with the jobs in flight, plus one small journal entry per job id.

Leaving the ``async with runner.run(jobs)`` block early, or cancelling the enclosing scope, stops
the run: no new submissions, those in flight answered and recorded (or, unanswered after
``stop_grace`` seconds, recorded as of unknown outcome); a rerun resumes. A run-level failure
(see ``_failures``) stops it too: the tasks paid for are followed where they can be, nothing is
recorded against the jobs left unfinished, and the run raises :class:`RunStoppedError` (after
the journal and results are closed) naming the cause and the fix. A plain rerun continues.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._client import NovitaClient
from .._exceptions import RunStoppedError, StorageError
from .._failures import classify
from ._events import BatchEventHook, BatchSummary, SummaryCounter
from ._flow import JobFlow
from ._jobs import JobInput, JobOutcome, JobSource
from ._journal import JournalMirror
from ._options import BatchOptions
from ._outputs import Output
from ._pacing import SubmitPermits
from ._run_folder import RunFolder

__all__ = ["BatchRunner", "Executor"]


class Executor(Protocol):
    """What runs a batch: :class:`BatchRunner` in this process, or the shards of
    ``novita_async.ray``. A driver (the command line's ``run``) needs no more than this."""

    options: BatchOptions
    on_event: BatchEventHook | None

    async def run_all(self, jobs: Iterable[JobInput] | AsyncIterable[JobInput]) -> BatchSummary:
        """Run every job to its end; the summary, or :class:`RunStoppedError` if the run stopped."""

    @property
    def summary(self) -> BatchSummary:
        """Counts of the current (or last) run; live while it runs."""

    @property
    def awaiting_answers(self) -> int:
        """Submissions sent and not answered yet (a stop waits ``stop_grace`` for them)."""

    def abandon_submissions(self) -> None:
        """Stop waiting for the answers of the submissions in flight: each is recorded
        ``SUBMIT_OUTCOME_UNKNOWN`` (a task may exist), never sent again by default."""


class BatchRunner:
    """Run many InstantID jobs with one :class:`NovitaClient`.

    ``out_dir`` receives ``<job id>_<n>.<ext>`` images (``n`` the image's index in the task's
    answer, ``ext`` its ``image_type`` as the service names it: ``png``, ``jpeg`` or ``webp``, as
    :meth:`NovitaClient.download_images` names them), all in the one folder, ``results.jsonl``
    and, unless ``journal_path`` says otherwise, the journal ``.novita-journal.jsonl``.
    ``out_dir`` may also name an object store (``s3://BUCKET/PREFIX``, ``gs://``, ``az://``): the
    run then works in a local staging folder, uploads each image as its task ends and keeps the
    journal in the store as segments (see ``_destination`` and ``_journal_segments``).

    Rerunning with the same output folder resumes: ended jobs are replayed from the journal (their
    outcomes are yielded again with ``replayed=True``), submitted tasks are followed again (never
    resubmitted), and only jobs never submitted are submitted. What is in OUT (or the store) is
    the truth: a succeeded job whose image is missing or of another size than recorded is fetched
    again from its task's result, at no cost (``summary.restored``), or ends ``OUTPUT_LOST`` if
    the service no longer has that task (submitted again only with ``retry_failed``).
    ``retry_failed`` runs failed jobs again: a job whose task failed is submitted again; one that
    failed after its task was created for another reason (timeout, download error) follows that
    task again; one whose submission's answer was lost (``SUBMIT_OUTCOME_UNKNOWN``) is submitted
    again, knowingly.

    ``options`` (a :class:`BatchOptions`, checked when it was made) bound and pace the run;
    ``attrs.evolve(options, concurrency=10)`` makes a variant. ``on_event`` is called with every
    :class:`BatchEvent`; it is an attribute, not an option, so it can be swapped between runs.
    """

    def __init__(
        self,
        client: NovitaClient,
        out_dir: str | os.PathLike[str] | Output,
        options: BatchOptions = BatchOptions(),  # noqa: B008  (frozen: one shared default is safe)
        *,
        on_event: BatchEventHook | None = None,
    ) -> None:
        if not isinstance(options, BatchOptions):
            raise TypeError(f"options must be a BatchOptions, got {options!r}")
        self.client = client
        self.options = options
        self.folder = RunFolder(out_dir, options)
        self.destination = self.folder.destination
        self.out_dir = self.folder.out_dir
        """The local folder the run writes in: OUT, or an object-store OUT's staging folder."""
        self.on_event = on_event
        self._permits: SubmitPermits | None = None
        """Where submissions take their turns when several runners share one account's rate
        (the shards of ``novita_async.ray`` set it before running); None: ``options.rate``."""
        self._counter = SummaryCounter()
        self._running = False
        self._flow: JobFlow | None = None

    @property
    def awaiting_answers(self) -> int:
        """Submissions of the current run sent and not answered yet."""
        return 0 if self._flow is None else len(self._flow.posts)

    def abandon_submissions(self) -> None:
        """Stop waiting for the answers of the submissions in flight: each is recorded
        ``SUBMIT_OUTCOME_UNKNOWN`` (a task may exist), never sent again by default."""
        if self._flow is not None:
            self._flow.stop_submissions(0.0)

    def __repr__(self) -> str:
        concurrency = self.options.concurrency
        return f"<BatchRunner out={self.destination.url!r} concurrency={concurrency}>"

    @property
    def summary(self) -> BatchSummary:
        """Counts of the current (or last) run; live while it runs."""
        return self._counter.snapshot()

    async def run_all(self, jobs: Iterable[JobInput] | AsyncIterable[JobInput]) -> BatchSummary:
        """Run every job to its end and return the summary."""
        async with self.run(jobs) as outcomes:
            async for _ in outcomes:
                pass
        return self.summary

    @contextlib.asynccontextmanager
    async def run(
        self, jobs: Iterable[JobInput] | AsyncIterable[JobInput]
    ) -> AsyncIterator[MemoryObjectReceiveStream[JobOutcome]]:
        """Start the run; yield a stream of outcomes in the order jobs end.

        The run lives as long as the ``async with`` block: leaving it early stops the run
        cleanly (a rerun resumes). ``jobs`` is read lazily, as workers free up; a generator
        (plain or async) given is closed when the run ends, so its ``finally`` blocks run then.
        """
        if self._running:
            raise RuntimeError("this BatchRunner is already running")
        self._running = True
        stopped: BaseException | None = None
        try:
            async with self.folder.open() as (journal, results):
                self._flow = flow = JobFlow(
                    self.client,
                    self.options,
                    self.folder,
                    journal,
                    results,
                    on_event=self.on_event,
                    permits=self._permits,
                )
                self._counter = counter = flow.counter
                # Room for one outcome per worker: when a wave of tasks ends together, no worker
                # waits for the reader to take the ones before; a reader that stops reading still
                # stops them.
                workers = self.options.concurrency + self.options.upload_concurrency
                send, receive = anyio.create_memory_object_stream[JobOutcome](workers)
                done = False
                try:
                    async with anyio.create_task_group() as tg:

                        async def drive() -> None:
                            nonlocal done
                            await self._drive(jobs, flow, send, workers)
                            done = True

                        tg.start_soon(drive)
                        try:
                            yield receive
                        finally:
                            tg.cancel_scope.cancel()
                finally:
                    receive.close()
                    send.close()
                    counter.interrupted = not done or flow.failed_fast
                    counter.finished = anyio.current_time()
                    if (stopped := flow.gate.stopped) is not None:
                        counter.stopped = classify(stopped).reason
        finally:
            self._running = False
            self._flow = None
        if stopped is None and (stopped := self.folder.end_error) is not None:
            # The store failed as the run closed: a rerun finishes what the run could not.
            self._counter.stopped = stopped.reason
        if stopped is not None:
            what, fix = classify(stopped).advice()
            summary = self.summary
            raise RunStoppedError(
                stopped, what=what, fix=fix, tasks_submitted=summary.submitted, summary=summary
            )

    async def _drive(
        self,
        jobs: Iterable[JobInput] | AsyncIterable[JobInput],
        flow: JobFlow,
        send: MemoryObjectSendStream[JobOutcome],
        workers: int,
    ) -> None:
        """Run every job: ``workers`` tasks, each carrying one job at a time (those in flight and
        those read ahead), beside the poller, the journal's flushing and the stop's bound."""
        gate, webhooks = flow.gate, flow.webhooks
        async with send, contextlib.AsyncExitStack() as stack:
            if webhooks is not None:
                # Listening before the first submission asks for webhooks to come here.
                assert self.options.webhook_listen is not None
                host, _, port = self.options.webhook_listen.rpartition(":")
                listening = await stack.enter_async_context(webhooks.serve(host, int(port)))
                flow.webhook_url = webhooks.url(self.options.webhook_url or listening)
            everything = await stack.enter_async_context(anyio.create_task_group())
            everything.start_soon(flow.poller.run)

            async def keep_journal_flushed(mirror: JournalMirror) -> None:
                try:
                    await mirror.keep_flushing()
                except StorageError as exc:
                    gate.stop(exc)  # run-level: no job is blamed for the store

            if self.folder.mirror is not None:
                everything.start_soon(keep_journal_flushed, self.folder.mirror)
            everything.start_soon(flow.bound_the_stop)

            async def worker(source: JobSource) -> None:
                while gate.stopped is None and not flow.failed_fast:
                    if (job := await source.next()) is None:
                        return
                    outcome = await flow.process(job)
                    if outcome is None:
                        continue  # the run stopped before the job ended
                    try:
                        # Without a checkpoint while the buffer has room: the job's requests
                        # already gave other tasks their turns.
                        send.send_nowait(outcome)
                    except anyio.WouldBlock:
                        await send.send(outcome)
                    if flow.failed_fast:  # decided by the flow as the job ended
                        everything.cancel_scope.cancel()

            # A fixed set of workers, each holding one job from its reading to its outcome's
            # delivery: the jobs read ahead are bounded by their number, and a batch of any size
            # costs that many task spawns rather than one per job.
            source = JobSource(jobs, self.options.shard)
            async with source, anyio.create_task_group() as tasks:
                for _ in range(workers):
                    tasks.start_soon(worker, source)
            everything.cancel_scope.cancel()  # every job ended: stop the poller
