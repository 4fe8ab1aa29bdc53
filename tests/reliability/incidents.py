"""Run-level incidents of a chaos run: an outage window and an account error (see ``chaos``).

The outage must pause the run and fail no job: no job's error may carry the words of a refused
connection, which only the outage produces (the chaos resets connections, it never refuses them).
The account error must stop the run (:class:`~novita_async.RunStoppedError`) once exactly its
number of tasks exists, with nothing recorded against the jobs the run had not finished, and a
plain rerun must finish.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from novita_async.batch import BatchEvent, BatchEventKind
from novita_async.emulator import Faults

if TYPE_CHECKING:
    from .chaos import ChaosRun

# What a refused connection says (the client's words): only an outage refuses connections here.
REFUSED = "cannot connect"
ACCOUNT_REASON = "BILLING_BALANCE_NOT_ENOUGH"


@attrs.frozen
class Incidents:
    """Run-level incidents on top of the per-request chaos (see the module's docstring)."""

    outage_seconds: float | None = None
    """Seconds the API origin refuses connections (None: no outage)."""
    outage_after: int = 0
    """Tasks created before the outage begins."""
    account_after: int | None = None
    """Tasks created before every submission is refused for the balance (None: never)."""

    def start(self, faults: Faults) -> None:
        if self.outage_seconds is not None:
            faults.outage(seconds=self.outage_seconds, after=self.outage_after)
        if self.account_after is not None:
            faults.account_error(after=self.account_after, reason=ACCOUNT_REASON)

    def describe(self) -> dict[str, str]:
        shown = {}
        if self.outage_seconds is not None:
            shown["outage"] = (
                f"connections refused for {self.outage_seconds:g}s once {self.outage_after} "
                "tasks exist"
            )
        if self.account_after is not None:
            shown["account error"] = f"400 {ACCOUNT_REASON} once {self.account_after} tasks exist"
        return shown


def _outage_pause(event: BatchEvent) -> bool:
    return event.kind is BatchEventKind.PAUSED and "unreachable" in (event.message or "")


def incident_problems(run: ChaosRun) -> list[str]:
    """The outage paused the run and failed no job; the account error stopped it, recorded
    nothing against the jobs it had not finished, and a plain rerun finished."""
    problems: list[str] = []
    incidents, first, stats = run.incidents, run.parts[0], run.stats
    every_outcome = [o for part in run.parts for o in part.outcomes]
    if incidents.outage_seconds is not None:
        if stats.outages != 1:
            problems.append(f"{stats.outages} outages instead of 1")
        if not any(_outage_pause(event) for event in run.batch_events):
            problems.append("the outage was never announced as a pause")
        for outcome in every_outcome:
            if outcome.error is not None and REFUSED in outcome.error.message:
                problems.append(f"{outcome.job_id} failed for the outage: {outcome.error}")
    if incidents.account_after is None:
        if len(run.parts) != 1 or first.stopped is not None:
            problems.append(f"the run stopped with no account error: {first.stopped}")
        return problems
    stop = first.stopped
    if stop is None or stop.reason != ACCOUNT_REASON:
        problems.append(f"the account error did not stop the run ({stop!r})")
    elif getattr(stop.cause, "status", None) != 400 or "top it up" not in str(stop):
        problems.append(f"the stop does not name the cause and the fix: {stop}")
    if first.tasks_created != incidents.account_after:
        problems.append(f"{first.tasks_created} tasks before the stop, not the account's limit")
    if len(first.outcomes) >= len(run.job_ids):
        problems.append("the first run ended every job: the account error came too late to test")
    for outcome in every_outcome:
        if outcome.error is not None and outcome.error.reason == ACCOUNT_REASON:
            problems.append(f"{outcome.job_id} recorded failed for the account: {outcome.error}")
    if len(run.parts) != 2 or run.parts[1].stopped is not None:
        problems.append("the plain rerun after the account error did not finish")
    return problems


def incident_figures(run: ChaosRun) -> dict[str, Any]:
    if not run.incidents.describe():
        return {}
    first, paused = run.parts[0], Counter[str]()
    for event in run.batch_events:
        if event.kind is BatchEventKind.PAUSED:
            paused["outage" if _outage_pause(event) else "429"] += 1
    every_outcome = [o for part in run.parts for o in part.outcomes]
    shown: dict[str, Any] = dict(run.incidents.describe())
    shown |= {
        "outages": run.stats.outages,
        "pauses announced (outage / 429)": [paused["outage"], paused["429"]],
        "jobs failed for the outage": sum(
            1 for o in every_outcome if o.error is not None and REFUSED in o.error.message
        ),
        "runs": len(run.parts),
        "first run ended": "finished"
        if first.stopped is None
        else f"RunStoppedError {first.stopped.reason} (the CLI exits 3): {first.stopped}",
        "tasks created before the stop": first.tasks_created,
        "jobs the first run ended / left unrecorded": [
            len(first.outcomes),
            len(run.job_ids) - len(first.outcomes),
        ],
        "jobs recorded failed for the account": sum(
            1 for o in every_outcome if o.error is not None and o.error.reason == ACCOUNT_REASON
        ),
        "rerun": "plain (no flags): "
        + ("finished" if run.parts[-1].stopped is None else "STOPPED"),
    }
    return shown
