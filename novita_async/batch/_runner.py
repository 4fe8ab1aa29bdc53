"""BatchRunner: many jobs through one client, bounded, resumable, in completion order.

Shape of a run (every task has an owner that awaits it)::

    run()                       asynccontextmanager: opens journal + results, owns the task group
    └── _drive                  closes the outcome stream when done
        ├── Poller.run          the one polling loop: hands each due task its turn to poll
        ├── bound_the_stop      on stop, gives submissions in flight ``stop_grace`` seconds
        └── workers             concurrency + upload_concurrency tasks, each taking one job at
            │                   a time from the input (read lazily; an async one under a lock)
            └── JobFlow.process check -> upload -> submit -> follow -> download -> record

Bounds: ``concurrency`` tasks in flight (held from submission until the job ends);
``upload_concurrency`` uploads at once and as many jobs read ahead of those in flight; ``rate``
submissions per second and a shared pause after a 429 (:class:`SubmitGate`); ``poll_concurrency``
polls at once. Memory grows with the jobs in flight, not with the size of the input, plus one small
journal entry per job id.

Leaving the ``async with runner.run(jobs)`` block before the stream is exhausted, or cancelling
the enclosing scope, stops the run: no new submissions, submissions in flight are answered and
recorded (or, unanswered after ``stop_grace`` seconds, recorded as of unknown outcome), the
results file is rebuilt, and a rerun with the same output folder resumes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._atomic import remove_stale_temp_files
from .._client import NovitaClient
from .._exceptions import ConfigurationError
from .._polling import PollPolicy
from ._events import BatchEventHook
from ._flow import STOP_GRACE, JobFlow
from ._job import Job, JobOutcome
from ._journal import JOURNAL_NAME, Journal
from ._limits import SubmitGate
from ._poller import Poller
from ._results import RESULTS_NAME, ResultsFile
from ._summary import BatchSummary, SummaryCounter
from ._uploads import AssetUploader

__all__ = ["BATCH_POLL_POLICY", "BatchRunner"]

# The runner times first polls from the tasks it has seen finish (see _durations), so later polls
# are the exception: when one is needed it follows the answer closely rather than adding a
# single task's comfortable half-second margin to every job of the batch.
BATCH_POLL_POLICY = PollPolicy(min_delay=0.1, margin=0.1, initial_delay=1.0)


def _count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}")
    return value


class BatchRunner:
    """Run many InstantID jobs with one :class:`NovitaClient`.

    ``out_dir`` receives ``<job id>_<n>.<ext>`` images (``n`` the image's index in the task's
    answer, ``ext`` its ``image_type`` as the service names it: ``png``, ``jpeg`` or ``webp``, as
    :meth:`NovitaClient.download_images` names them), all in the one folder, ``results.jsonl``
    and, unless ``journal_path`` says otherwise, the journal ``.novita-journal.jsonl``.

    Rerunning with the same output folder resumes: ended jobs are replayed from the journal (their
    outcomes are yielded again with ``replayed=True``), submitted tasks are followed again (never
    resubmitted), and only jobs never submitted are submitted. ``retry_failed`` runs failed jobs
    again: a job whose task failed is submitted again; one that failed after its task was created
    for another reason (timeout, download error) follows that task again; one whose submission's
    answer was lost (``SUBMIT_OUTCOME_UNKNOWN``) is submitted again, knowingly.

    ``concurrency``: tasks in flight. ``rate``: submissions per second (None: unlimited).
    ``fail_fast``: stop at the first failure (of this run, not a replayed one).
    ``on_event``: called with every :class:`BatchEvent`. ``poll``: the polling delays.
    ``upload_concurrency``: uploads at once, and jobs read ahead of those in flight.
    ``poll_concurrency``: polls at once. ``task_timeout``: seconds a task may take, counted from
    when this run began following it (None: no limit). ``journal_fsync``: fsync each journal
    record (survives power loss, not just a killed process; slower). ``submit_concurrency``:
    submissions sent at once, which bounds what one hard kill can cost (see the journal's note on
    the double-submission window). ``stop_grace``: seconds a stopping run (cancelled, or its
    ``async with`` left) still waits for the answers of submissions in flight; one still
    unanswered then fails as ``SUBMIT_OUTCOME_UNKNOWN`` (a task may exist), which a rerun does not
    submit again unless ``retry_failed``.
    """

    def __init__(
        self,
        client: NovitaClient,
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int = 50,
        rate: float | None = None,
        journal_path: str | os.PathLike[str] | None = None,
        retry_failed: bool = False,
        fail_fast: bool = False,
        on_event: BatchEventHook | None = None,
        poll: PollPolicy | None = None,
        upload_concurrency: int = 8,
        poll_concurrency: int = 16,
        task_timeout: float | None = None,
        journal_fsync: bool = False,
        submit_concurrency: int = 8,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.client = client
        self.out_dir = Path(out_dir)
        self.concurrency = _count("concurrency", concurrency)
        self.upload_concurrency = _count("upload_concurrency", upload_concurrency)
        self.poll_concurrency = _count("poll_concurrency", poll_concurrency)
        self.submit_concurrency = _count("submit_concurrency", submit_concurrency)
        self.journal_path = (
            Path(journal_path) if journal_path is not None else self.out_dir / JOURNAL_NAME
        )
        if task_timeout is not None and not task_timeout > 0:
            raise ConfigurationError("task_timeout must be a number of seconds > 0")
        self.task_timeout = task_timeout
        self.retry_failed = retry_failed
        self.fail_fast = fail_fast
        self.on_event = on_event
        self.poll = poll or BATCH_POLL_POLICY
        self.journal_fsync = journal_fsync
        grace_ok = isinstance(stop_grace, int | float) and not isinstance(stop_grace, bool)
        if not grace_ok or stop_grace < 0:
            raise ConfigurationError("stop_grace must be a number of seconds >= 0")
        self.stop_grace = float(stop_grace)
        self._gate = SubmitGate(rate)  # validates rate now rather than at run time
        self._counter = SummaryCounter()
        self._running = False

    def __repr__(self) -> str:
        return f"<BatchRunner out_dir={str(self.out_dir)!r} concurrency={self.concurrency}>"

    @property
    def _workers(self) -> int:
        """Tasks that each carry one job at a time: those in flight and those read ahead."""
        return self.concurrency + self.upload_concurrency

    @property
    def summary(self) -> BatchSummary:
        """Counts of the current (or last) run; live while it runs."""
        return self._counter.snapshot()

    async def run_all(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> BatchSummary:
        """Run every job to its end and return the summary."""
        async with self.run(jobs) as outcomes:
            async for _ in outcomes:
                pass
        return self.summary

    @contextlib.asynccontextmanager
    async def run(
        self, jobs: Iterable[Job] | AsyncIterable[Job]
    ) -> AsyncIterator[MemoryObjectReceiveStream[JobOutcome]]:
        """Start the run; yield a stream of outcomes in the order jobs end.

        The run lives as long as the ``async with`` block: leaving it early stops the run
        cleanly (a rerun resumes). ``jobs`` is read lazily, as workers free up; a generator
        (plain or async) given is closed when the run ends, so its ``finally`` blocks run then.
        """
        if self._running:
            raise RuntimeError("this BatchRunner is already running")
        self._running = True
        try:
            async with (
                self._open() as (journal, results),
                self._stream(jobs, journal, results) as outcomes,
            ):
                yield outcomes
        finally:
            self._running = False

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Journal, ResultsFile]]:
        """The journal (locked) and the results file, rebuilt on the way in and on the way out."""
        results = ResultsFile(self.out_dir / RESULTS_NAME)
        # Shielded: a cancellation must not lose a journal opened (and locked) in the thread.
        with anyio.CancelScope(shield=True):
            await anyio.Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            journal = await anyio.to_thread.run_sync(
                lambda: Journal(self.journal_path, fsync=self.journal_fsync)
            )
        try:

            def prepare() -> None:
                # A run killed mid-download (kill -9) left partial files: those whose writer
                # process no longer exists are removed.
                remove_stale_temp_files(self.out_dir)
                results.rebuild(list(journal.ended_outcomes()))

            await anyio.to_thread.run_sync(prepare)
            yield journal, results
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._finish, journal, results)

    @contextlib.asynccontextmanager
    async def _stream(
        self, jobs: Iterable[Job] | AsyncIterable[Job], journal: Journal, results: ResultsFile
    ) -> AsyncIterator[MemoryObjectReceiveStream[JobOutcome]]:
        self._counter = counter = SummaryCounter()
        completed = False
        flow, poller = self._build(journal, results, counter)
        # Room for one outcome per worker: when a wave of tasks ends together, no worker waits
        # for the reader to take the ones before; a reader that stops reading still stops them.
        send, receive = anyio.create_memory_object_stream[JobOutcome](self._workers)
        try:
            async with anyio.create_task_group() as tg:

                async def drive() -> None:
                    nonlocal completed
                    completed = await self._drive(jobs, flow, poller, send)

                tg.start_soon(drive)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()
        finally:
            receive.close()
            send.close()
            counter.interrupted = not completed
            counter.stop()

    def _finish(self, journal: Journal, results: ResultsFile) -> None:
        try:
            results.merge(journal.ended_outcomes(), journal.jobs)
        finally:
            results.close()
            journal.close()

    def _build(
        self, journal: Journal, results: ResultsFile, counter: SummaryCounter
    ) -> tuple[JobFlow, Poller]:
        def on_request(route: str) -> None:
            counter.requests[route] += 1

        poller = Poller(
            self.client,
            self.poll,
            max_concurrent=self.poll_concurrency,
            task_timeout=self.task_timeout,
            on_request=on_request,
        )
        uploader = AssetUploader(
            self.client, journal, concurrency=self.upload_concurrency, on_request=on_request
        )
        flow = JobFlow(
            client=self.client,
            out_dir=self.out_dir,
            journal=journal,
            results=results,
            counter=counter,
            uploader=uploader,
            poller=poller,
            gate=self._gate,
            posting=anyio.Semaphore(self.submit_concurrency, fast_acquire=True),
            in_flight=anyio.Semaphore(self.concurrency, fast_acquire=True),
            retry_failed=self.retry_failed,
            on_event=self.on_event,
            on_request=on_request,
        )
        return flow, poller

    async def _drive(
        self,
        jobs: Iterable[Job] | AsyncIterable[Job],
        flow: JobFlow,
        poller: Poller,
        send: MemoryObjectSendStream[JobOutcome],
    ) -> bool:
        """Run every job; return False if stopped early (fail_fast)."""
        stopped = False
        async with send, anyio.create_task_group() as everything:
            everything.start_soon(poller.run)

            async def bound_the_stop() -> None:
                # Cancelled when the run stops (or ends): from then on, the submissions in
                # flight (shielded) get a bounded grace.
                try:
                    await anyio.sleep_forever()
                finally:
                    flow.stop(self.stop_grace)

            everything.start_soon(bound_the_stop)

            async def worker(source: _JobSource) -> None:
                nonlocal stopped
                while (job := await source.next()) is not None:
                    outcome = await flow.process(job)
                    try:
                        # Without a checkpoint while the buffer has room: the job's requests
                        # already gave other tasks their turns.
                        send.send_nowait(outcome)
                    except anyio.WouldBlock:
                        await send.send(outcome)
                    if self.fail_fast and outcome.status == "failed" and not outcome.replayed:
                        stopped = True
                        everything.cancel_scope.cancel()

            # A fixed set of workers, each holding one job from its reading to its outcome's
            # delivery: the jobs read ahead are bounded by their number, and a batch of any size
            # costs that many task spawns rather than one per job.
            async with _JobSource(jobs) as source, anyio.create_task_group() as workers:
                for _ in range(self._workers):
                    workers.start_soon(worker, source)
            everything.cancel_scope.cancel()  # every job ended: stop the poller
        return not stopped


_END = object()


class _JobSource:
    """The run's input, read one job at a time by many workers; closed when the run stops."""

    def __init__(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> None:
        self._jobs: Iterator[Job] | None = None
        self._async_jobs: AsyncIterator[Job] | None = None
        if isinstance(jobs, AsyncIterable):
            self._async_jobs = aiter(jobs)
        else:
            self._jobs = iter(jobs)
        # An async iterator cannot be advanced by two tasks at once; a plain one is advanced
        # without a pause, so no other task can come between.
        self._reading = anyio.Lock(fast_acquire=True)
        self._exhausted = False

    async def next(self) -> Job | None:
        """The next job, or None once the input is exhausted."""
        job: object
        if self._jobs is not None:
            job = next(self._jobs, _END)
            if job is _END:
                return None
        else:
            assert self._async_jobs is not None
            async with self._reading:
                if self._exhausted:
                    return None
                try:
                    job = await anext(self._async_jobs)
                except StopAsyncIteration:
                    self._exhausted = True
                    return None
        if not isinstance(job, Job):
            raise TypeError(f"BatchRunner.run takes Job objects, got {job!r}")
        return job

    async def __aenter__(self) -> _JobSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A generator given is closed now, not whenever it is collected (its finally blocks run).
        if self._async_jobs is not None:
            aclose = getattr(self._async_jobs, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        elif isinstance(self._jobs, Generator):
            self._jobs.close()
