"""Judging a failed step of a job: by whose fault the error is, and what follows.

The job's own fault ends it, recorded failed (:class:`Ended`); a run-level failure stops the run
(:class:`RunStopped`: the job ends unrecorded, and a rerun continues it); a transient one is
ridden out (the run pauses in an outage) and the step tried again, a bounded number of rounds
(:data:`MAX_JOB_ROUNDS`) counted only while the service answers other jobs.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import attrs

from .._client import NovitaClient
from ._events import BatchEventKind
from ._failures import Blame, RetriesExhaustedError, blame, is_outage
from ._job import JobOutcome
from ._limits import RunGate, RunStopped
from ._recording import Recorder

__all__ = ["MAX_JOB_ROUNDS", "Ended", "Judge", "Rounds"]

# Rounds of retries a job gets for transient failures while the service answers other jobs
# (rounds during an outage are not counted: the run pauses instead), each after the client's
# backoff for that round.
MAX_JOB_ROUNDS = 5


class Ended(Exception):
    """Internal: the job has ended (recorded); carries its outcome."""

    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__(outcome.job_id)
        self.outcome = outcome


@attrs.define
class Rounds:
    """A job's rounds of retries, counted only while the service answers others."""

    count: int = 0
    answers_seen: int = -1


class Judge:
    def __init__(
        self,
        client: NovitaClient,
        gate: RunGate,
        recorder: Recorder,
        emit: Callable[..., None],
    ) -> None:
        self._client = client
        self._gate = gate
        self._recorder = recorder
        self._emit = emit

    async def judge(
        self,
        job_id: str,
        error: Exception,
        rounds: Rounds,
        task_id: str | None,
        fingerprint: str | None,
        *,
        submitting: bool = False,
    ) -> None:
        """Return to try the failed step again, or end the job (:class:`Ended`), or stop the run
        (:class:`RunStopped`), by whose fault ``error`` is."""
        fault = blame(error, submitting=submitting)
        if fault is Blame.RUN:
            # The key, the account, the endpoint or this machine: nothing more is submitted;
            # the tasks paid for are still followed, unless their requests fail the same way.
            self._gate.stop(error)
            raise RunStopped from error
        if fault is not Blame.TRANSIENT:
            raise Ended(self._recorder.fail(job_id, error, task_id, fingerprint))
        if is_outage(error):
            self._gate.unreachable(error)
        if self._gate.answers != rounds.answers_seen:
            # The service answered something since this job's last failure: one round of its own.
            rounds.answers_seen = self._gate.answers
            rounds.count += 1
            if rounds.count > MAX_JOB_ROUNDS:
                exhausted = RetriesExhaustedError(MAX_JOB_ROUNDS, error)
                raise Ended(self._recorder.fail(job_id, exhausted, task_id, fingerprint))
        # The client's backoff, round by round: the one policy for how long to wait.
        delay = self._client.config.retry.backoff(max(rounds.count, 1))
        self._emit(
            BatchEventKind.RETRIED,
            job_id,
            task_id=task_id,
            reason=getattr(error, "reason", type(error).__name__),
            message=f"{error}; trying again in {delay:.1f}s "
            f"(round {rounds.count} of {MAX_JOB_ROUNDS})",
        )
        # A stop must not wait for this job's backoff.
        with anyio.move_on_after(delay):
            await self._gate.stopping()
        await self._gate.wait(submission=False)
