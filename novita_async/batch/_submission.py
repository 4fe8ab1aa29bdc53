"""Sending a job's submission so that it is never paid twice.

Every submission passes the run's gate (the rate, any pause, the run's stop) and a check of the
free space on the output disk, then, with at most ``submit_concurrency`` POSTs in flight:

1. the journal records the intent (``submitting``) before anything is sent (an object-store
   journal: the intent is in the store's segments before the POST; see ``_journal_segments``);
2. the POST is sent, shielded from cancellation: a stopping run still reads the answer of a POST it
   sent, for ``stop_grace`` seconds (or until :meth:`Submitter.abandon`);
3. the answer is recorded in the same step that receives it: ``submitted`` with the task id, or
   ``not_submitted`` when the service refused it (no task exists). A lost answer records nothing
   more: the intent stands, and the caller records the job ``SUBMIT_OUTCOME_UNKNOWN``.

A 429 pauses every submitter (the gate) and this one tries again when the pause ends; any other
error is the caller's to judge (see ``_failures``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from .._client import NovitaClient
from .._exceptions import LocalIOError, RateLimitError, SubmitOutcomeUnknownError
from .._retry import RetryPolicy
from ._failures import Blame, BudgetReachedError, blame
from ._journal import Journal
from ._limits import RunGate, RunStopped

__all__ = ["DiskSpace", "Submitter"]

# What one image may take on disk (1024 x 1024 PNGs are about that).
_IMAGE_BYTES = 1 << 20
# Kept free on the output disk besides what the tasks in flight need.
_SPARE_BYTES = 4 << 20
# Submissions between two readings of the free space, while it is plentiful.
_RECHECK = 32


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


class Submitter:
    def __init__(
        self,
        *,
        client: NovitaClient,
        journal: Journal,
        gate: RunGate,
        disk: DiskSpace,
        retry: RetryPolicy,
        posting: int,
        max_tasks: int | None,
        on_request: Callable[[str], None],
        on_paused: Callable[[str, RateLimitError, float], None],
        durable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        # An object-store journal: the intent is in the store before its POST goes.
        self._durable = durable
        self._journal = journal
        self._gate = gate
        self._disk = disk
        # A 429 on a submission comes straight back here, where it pauses every submitter,
        # instead of being waited out by this one submitter while the others keep sending.
        self._retry = retry
        self._posting = anyio.Semaphore(posting, fast_acquire=True)
        self._on_request = on_request
        self._on_paused = on_paused
        self._posts: set[anyio.CancelScope] = set()
        self._stop_deadline = math.inf
        self._max_tasks = max_tasks
        self._spent = 0  # submissions sent this run that may have made a task

    @property
    def awaiting(self) -> int:
        """Submissions sent and not answered yet."""
        return len(self._posts)

    def stop(self, grace: float) -> None:
        """The run is stopping: the POSTs in flight get ``grace`` more seconds to be answered."""
        self._stop_deadline = min(self._stop_deadline, anyio.current_time() + grace)
        for post in self._posts:
            post.deadline = min(post.deadline, self._stop_deadline)

    def abandon(self) -> None:
        """Stop waiting for the answers of the POSTs in flight (each becomes an unknown outcome)."""
        self.stop(0.0)

    async def submit(
        self,
        job_id: str,
        body: Mapping[str, Any],
        images: int,
        fingerprint: str,
        tasks_in_flight: int,
    ) -> str:
        """Submit ``body`` (a task of ``images`` images); its task id, recorded. Raises what went
        wrong, recorded as above."""
        while True:
            try:
                return await self._post(job_id, body, images, fingerprint, tasks_in_flight)
            except RateLimitError as exc:
                self._on_paused(job_id, exc, self._gate.rate_limited(exc.retry_after))

    async def _post(
        self,
        job_id: str,
        body: Mapping[str, Any],
        images: int,
        fingerprint: str,
        tasks_in_flight: int,
    ) -> str:
        # Few POSTs in flight at once: each is a task whose answer a stop may have to wait for.
        async with self._posting:
            # Passed with the slot held, so a stop or pause that came while this submitter
            # waited for its slot still holds it back.
            await self._gate.wait()
            self._disk.check(tasks_in_flight, images)
            if self._max_tasks is not None and self._spent >= self._max_tasks:
                self._gate.stop(BudgetReachedError(self._max_tasks))
                raise RunStopped
            self._journal.record_submitting(job_id, fingerprint)
            if self._durable is not None:
                try:
                    await self._durable()
                except BaseException:
                    self._journal.record_not_submitted(job_id)  # nothing was sent
                    raise
            self._spent += 1
            with anyio.CancelScope(shield=True, deadline=self._stop_deadline) as post:
                self._posts.add(post)
                try:
                    self._on_request("submit")
                    task_id = await self._client._submit_body("instant-id", body, retry=self._retry)
                except Exception as exc:
                    if blame(exc, submitting=True) is not Blame.UNKNOWN_OUTCOME:
                        self._spent -= 1
                        self._journal.record_not_submitted(job_id)  # answered: no task made
                    raise
                finally:
                    self._posts.discard(post)
                # Nothing is awaited between the answer and its record.
                self._journal.record_submitted(job_id, task_id, fingerprint)
                return task_id
        # Only a stop's grace running out ends up here (the shielded scope's deadline).
        raise SubmitOutcomeUnknownError(
            "the run stopped before the submission was answered; a task may exist and be "
            "billed: look for it before submitting again",
            method="POST",
        )
