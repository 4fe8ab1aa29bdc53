"""Applying the failure policy's decision (``_failures.decide``) to a failed step of a job.

The job's own fault ends it, recorded failed (:class:`Ended`); a run-level failure stops the run
(:class:`RunStopped`: the job ends unrecorded, and a rerun continues it); a transient one is
ridden out (the run pauses in an outage) and the step tried again.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from .._client import NovitaClient
from .._failures import MAX_JOB_ROUNDS, Action, Pause, Rounds, Step, decide
from ._events import BatchEventKind, Recorder
from ._jobs import JobOutcome
from ._pacing import RunGate, RunStopped

__all__ = ["MAX_JOB_ROUNDS", "Ended", "Judge", "Rounds"]


class Ended(Exception):
    """Internal: the job has ended (recorded); carries its outcome."""

    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__(outcome.job_id)
        self.outcome = outcome


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
        (:class:`RunStopped`), as the policy decides."""
        step = Step.SUBMIT if submitting else Step.OTHER
        nxt = decide(
            error,
            step=step,
            rounds=rounds,
            answers=self._gate.answers,
            policy=self._client.config.retry,
        )
        if nxt.action is Action.STOP_RUN:
            # Nothing more is submitted; the tasks paid for are still followed, unless their
            # requests fail the same way.
            self._gate.stop(error)
            raise RunStopped from error
        if nxt.pause is Pause.EVERYTHING:
            self._gate.unreachable(error)
        if nxt.record is not None:
            raise Ended(self._recorder.fail(job_id, nxt.record, task_id, fingerprint))
        if nxt.counted:
            rounds.answers_seen = self._gate.answers
            rounds.count = nxt.round
        self._emit(
            BatchEventKind.RETRIED,
            job_id,
            task_id=task_id,
            reason=nxt.verdict.reason,
            message=f"{error}; trying again in {nxt.wait:.1f}s "
            f"(round {rounds.count} of {MAX_JOB_ROUNDS})",
        )
        # A stop must not wait for this job's backoff.
        with anyio.move_on_after(nxt.wait):
            await self._gate.stopping()
        await self._gate.wait(submission=False)
