"""A chaos run: the batch runner against the in-process emulator with every fault at once.

Faults, per request, on top of latency jitter on every route:

======== =========================================================================================
upload   5% 5xx (half JSON, half gateway HTML), 5% 429, 2% reset
submit   5% 5xx, 5% 429, 1% reset *before* the task is created, 1% reset *after* it is created
result   5% 5xx, 5% 429, 2% reset
image    5% 5xx, 5% 429, 2% reset, 2% truncated body, 3% expired URL (403 "Request has expired")
tasks    3% end TASK_STATUS_FAILED
======== =========================================================================================

429 answers carry ``Retry-After``, half as delta-seconds and half as an HTTP date.

Why both resets on submit: to the client they are the same event (the body was sent, the
connection died), so it must raise ``SubmitOutcomeUnknownError`` and never resubmit. ``reset_after``
is the dangerous one (a task exists and is billed): resubmitting would show up as a duplicate in
the emulator's count. ``reset_before`` is the harmless twin (no task) and checks that the client
does not guess. Each such job fails ``SUBMIT_OUTCOME_UNKNOWN``, so their count must equal the
emulator's count of reset submissions, and the tasks the emulator created must equal the jobs with
a task id plus the ``reset_after`` count: no task unaccounted for, none created twice.

Run-level incidents (:class:`Incidents`, optional) come on top: an outage window (the API origin
refuses connections for a few seconds once some tasks exist) and an account error (400
``BILLING_BALANCE_NOT_ENOUGH`` to every submission once N tasks exist). The outage must pause the
run and fail no job; the account error must stop it (:class:`RunStoppedError`, the CLI's exit
status 3) with nothing recorded against the jobs it had not finished. The fault is then cleared
(the balance topped up) and a plain rerun, chaos still on, must finish: its outcomes are the ones
checked, and the emulator's counters cover both runs. The outage closes the connections open when
it begins, so a few submissions in flight then lose their answer as a reset would (at most one per
submission slot): each is ``SUBMIT_OUTCOME_UNKNOWN`` too, and any task it made is accounted for.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
from PIL import Image

from novita_async import (
    ClientEvent,
    Extra,
    InstantIDRequest,
    NovitaClient,
    PollPolicy,
    RetryPolicy,
    RunStoppedError,
)
from novita_async.batch import (
    BatchEvent,
    BatchOptions,
    BatchRunner,
    BatchSummary,
    Job,
    JobOutcome,
)
from novita_async.emulator import Emulator, EmulatorConfig, EmulatorStats, FaultSpec

from .checks import (
    API_KEY,
    SIGNATURE_MARK,
    leaks_in_folder,
    leaks_in_texts,
    read_results,
    results_problems,
    tree_problems,
)
from .incidents import Incidents, incident_figures, incident_problems

IMAGE_TYPES = ("png", "jpeg", "webp")
DISTINCT_INPUTS = 6

# How a failed job's error is explained. Anything else is a bug.
INJECTED_TASK_FAILURE = "injected task failure"
SUBMIT_UNKNOWN = "submit outcome unknown"
RETRIES_EXHAUSTED = "retries exhausted"
# Submissions in flight at once: the most an outage's closing of connections can cut off.
SUBMIT_SLOTS = BatchOptions().submit_concurrency


def chaos_faults(*, retry_after: float = 0.0, jitter: float = 0.01) -> dict[str, FaultSpec]:
    common: dict[str, Any] = {
        "error_5xx": 0.025,
        "html_5xx": 0.025,
        "rate_429": 0.05,
        "retry_after": retry_after,
        "retry_after_http_date": 0.5,
        "jitter": jitter,
    }
    return {
        "upload": FaultSpec(**common, reset_before=0.02),
        "submit": FaultSpec(**common, reset_before=0.01, reset_after=0.01),
        "result": FaultSpec(**common, reset_before=0.02),
        "image": FaultSpec(**common, reset_before=0.02, truncate=0.02, expire=0.03),
    }


def chaos_config(
    seed: int, *, retry_after: float = 0.0, image_mode: str = "tiny"
) -> EmulatorConfig:
    return EmulatorConfig(
        seed=seed,
        api_keys={API_KEY},
        task_base_seconds=0.0,
        task_failure_rate=0.03,
        image_mode=image_mode,  # type: ignore[arg-type]
        faults=chaos_faults(retry_after=retry_after),
        workers=256,
    )


def write_inputs(folder: Path) -> list[Path]:
    """A handful of distinct small input pictures (faces and references are shared by jobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(DISTINCT_INPUTS):
        path = folder / f"input{n}.png"
        Image.new("RGB", (16, 16), (40 * n % 256, 90, 160)).save(path, "PNG")
        paths.append(path)
    return paths


def chaos_job(n: int, inputs: list[Path]) -> Job:
    half = len(inputs) // 2
    request = InstantIDRequest(
        prompt=f"chaos job {n}",  # distinct bodies: the emulator's duplicate count is meaningful
        width=128,
        height=128,
        image_num=2 if n % 10 == 0 else 1,
        extra=Extra(response_image_type=IMAGE_TYPES[n % 3]),
    )
    return Job(
        id=f"job{n:05d}",
        face_images=[inputs[n % half]],
        ref_images=[inputs[half + n % half]],
        request=request,
    )


def expected_type(job_id: str) -> str:
    return IMAGE_TYPES[int(job_id[3:]) % 3]


@attrs.define
class RunPart:
    """One run of the batch over the same output folder (a rerun is a new client and runner)."""

    outcomes: list[JobOutcome]
    summary: BatchSummary
    stopped: RunStoppedError | None
    tasks_created: int
    """The emulator's task count when this run ended (all runs so far)."""
    wall_seconds: float


@attrs.define
class ChaosRun:
    out: Path
    job_ids: list[str]
    outcomes: list[JobOutcome]
    """The last run's outcomes: one per job (those of earlier runs replayed)."""
    stats: EmulatorStats
    client_events: list[ClientEvent]
    batch_events: list[BatchEvent]
    reprs: dict[str, str]
    wall_seconds: float
    task_statuses: dict[str, str]
    task_ids: list[str]
    """Every task the emulator created, over all the runs."""
    parts: list[RunPart]
    incidents: Incidents
    categories: Counter[str] = attrs.field(factory=Counter)
    reasons: Counter[str] = attrs.field(factory=Counter)


async def run_chaos(
    out: Path,
    inputs: list[Path],
    *,
    jobs: int,
    seed: int,
    concurrency: int = 64,
    retry_after: float = 0.0,
    incidents: Incidents | None = None,
) -> ChaosRun:
    """The chaos run; if an incident stops it, the fault is cleared and one plain rerun made."""
    incidents = incidents or Incidents()
    client_events: list[ClientEvent] = []
    batch_events: list[BatchEvent] = []
    reprs: dict[str, str] = {}

    def lazily() -> Iterator[Job]:
        for n in range(jobs):
            yield chaos_job(n, inputs)

    async def one_run(emu: Emulator) -> RunPart:
        began = time.monotonic()
        outcomes: list[JobOutcome] = []
        stopped: RunStoppedError | None = None
        retry = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
        async with NovitaClient(
            API_KEY,
            base_url=emu.base_url,
            assets_url=emu.assets_url,
            retry=retry,
            on_event=client_events.append,
        ) as client:
            poll = PollPolicy(min_delay=0.01, max_delay=0.2, margin=0.01, initial_delay=0.02)
            runner = BatchRunner(
                client,
                out,
                BatchOptions(concurrency=concurrency, poll=poll, poll_concurrency=32),
                on_event=batch_events.append,
            )
            try:
                async with runner.run(lazily()) as stream:
                    async for outcome in stream:
                        outcomes.append(outcome)
            except RunStoppedError as stop:
                stopped = stop
                reprs[f"run {len(parts) + 1}: the stop"] = f"{stop} {stop!r} {stop.cause!r}"
            reprs.update(
                {
                    "repr(client)": repr(client),
                    "repr(client.config)": repr(client.config),
                    "repr(runner)": repr(runner),
                    f"run {len(parts) + 1}: repr(summary)": repr(runner.summary),
                    "repr(emulator)": repr(emu),
                }
            )
        return RunPart(
            outcomes=outcomes,
            summary=runner.summary,
            stopped=stopped,
            tasks_created=emu.stats().submissions,
            wall_seconds=time.monotonic() - began,
        )

    parts: list[RunPart] = []
    started = time.monotonic()
    async with Emulator(chaos_config(seed, retry_after=retry_after)) as emu:
        incidents.start(emu.faults)
        limit = max(60.0, jobs * 0.2) + 4 * (incidents.outage_seconds or 0.0)
        with anyio.fail_after(limit):
            parts.append(await one_run(emu))
            if parts[0].stopped is not None:
                # The cause fixed (the balance topped up), the same command again: no flags,
                # the per-request chaos still on.
                emu.faults.clear()
                for route, spec in chaos_faults(retry_after=retry_after).items():
                    emu.faults.set(route, spec)
                parts.append(await one_run(emu))
        stats = emu.stats()
        task_ids = emu.task_ids()
        outcomes = parts[-1].outcomes
        statuses = {o.task_id: emu.task_status(o.task_id) for o in outcomes if o.task_id}
    return ChaosRun(
        out=out,
        job_ids=[f"job{n:05d}" for n in range(jobs)],
        outcomes=outcomes,
        stats=stats,
        client_events=client_events,
        batch_events=batch_events,
        reprs=reprs,
        wall_seconds=time.monotonic() - started,
        task_statuses=statuses,
        task_ids=task_ids,
        parts=parts,
        incidents=incidents,
    )


def categorise(outcome: JobOutcome) -> str | None:
    """Which injected fault explains a failed job (None: nothing does)."""
    error = outcome.error
    if error is None:
        return None
    if error.reason == "TASK_FAILED" and error.type == "TaskFailedError":
        return INJECTED_TASK_FAILURE
    if error.reason == "SUBMIT_OUTCOME_UNKNOWN" and error.type == "SubmitOutcomeUnknownError":
        return SUBMIT_UNKNOWN
    if error.reason == "RETRIES_EXHAUSTED" and error.type == "RetriesExhaustedError":
        return RETRIES_EXHAUSTED
    return None


def verify(run: ChaosRun) -> list[str]:
    """Every promise of the chaos run; returns the broken ones."""
    problems: list[str] = []
    stats = run.stats
    by_id = {o.job_id: o for o in run.outcomes}
    if len(run.outcomes) != len(run.job_ids) or set(by_id) != set(run.job_ids):
        problems.append(f"{len(run.outcomes)} outcomes for {len(run.job_ids)} jobs")

    for outcome in run.outcomes:
        if outcome.status == "succeeded":
            continue
        category = categorise(outcome)
        run.reasons[outcome.error.reason if outcome.error else "?"] += 1
        if category is None:
            problems.append(f"unexplained failure of {outcome.job_id}: {outcome.error}")
        else:
            run.categories[category] += 1

    # Each category matches what the emulator says happened, task by task.
    for outcome in run.outcomes:
        status = run.task_statuses.get(outcome.task_id or "")
        if outcome.task_id and status is None:
            problems.append(f"{outcome.job_id}: task {outcome.task_id} unknown to the emulator")
        elif outcome.ok and status != "TASK_STATUS_SUCCEED":
            problems.append(f"{outcome.job_id} succeeded but its task is {status}")
        elif categorise(outcome) == INJECTED_TASK_FAILURE and status != "TASK_STATUS_FAILED":
            problems.append(f"{outcome.job_id} failed TASK_FAILED but its task is {status}")
    # Every lost answer is an unknown outcome, and every task no job holds is one of them.
    reset_submits = stats.count("submit", "reset")
    cut = run.categories[SUBMIT_UNKNOWN] - reset_submits  # answers the outage's closing cut
    if not 0 <= cut <= SUBMIT_SLOTS * stats.outages:
        problems.append(
            f"{run.categories[SUBMIT_UNKNOWN]} SUBMIT_OUTCOME_UNKNOWN outcomes for "
            f"{reset_submits} submissions whose connection was reset and {stats.outages} outages"
        )
    held = {o.task_id for o in run.outcomes if o.task_id}
    orphans = len(set(run.task_ids) - held)
    lost_answers = stats.faults.get("reset_after", 0)  # only the submit route has reset_after
    if len(run.task_ids) != stats.submissions or not lost_answers <= orphans <= lost_answers + cut:
        problems.append(
            f"the emulator created {stats.submissions} tasks; jobs hold {len(held)} distinct "
            f"task ids, {lost_answers} answers were lost and {max(cut, 0)} cut by an outage"
        )
    failed_tasks = stats.tasks.get("TASK_STATUS_FAILED", 0)
    if not run.categories[INJECTED_TASK_FAILURE] <= failed_tasks:
        problems.append(f"more TASK_FAILED outcomes than the {failed_tasks} failed tasks")
    if stats.duplicate_submissions:
        problems.append(f"{stats.duplicate_submissions} duplicate submissions")
    if stats.unexpected_auth:
        problems.append(f"{stats.unexpected_auth} requests carried Authorization off the API")

    # Disk: results, images, no temporary files.
    problems += results_problems(run.out, run.job_ids)
    if not problems:
        rows = read_results(run.out)
        for row in rows:
            ended = by_id.get(row["id"])
            if ended is None or ended.status != row["status"]:
                problems.append(f"results.jsonl disagrees with the outcome of {row['id']}")
        problems += tree_problems(run.out, rows, {i: expected_type(i) for i in run.job_ids})
        for row in rows:
            wanted = 2 if int(row["id"][3:]) % 10 == 0 else 1
            if row["status"] == "succeeded" and len(row["files"]) != wanted:
                problems.append(f"{row['id']}: {len(row['files'])} files, {wanted} expected")

    problems += incident_problems(run)

    # Secrets: no key anywhere; no signed query string in anything a user may log.
    texts = dict(run.reprs)
    for outcome in run.outcomes:
        texts[f"repr(outcome {outcome.job_id})"] = repr(outcome)
        if outcome.error is not None:
            texts[f"error of {outcome.job_id}"] = f"{outcome.error.message} {outcome.error!r}"
    texts["client events"] = "\n".join(map(repr, run.client_events))
    texts["batch events"] = "\n".join(map(repr, run.batch_events))
    problems += leaks_in_texts(texts, API_KEY, SIGNATURE_MARK)
    problems += leaks_in_folder(run.out, API_KEY, SIGNATURE_MARK)
    return problems


def figures(run: ChaosRun) -> dict[str, Any]:
    """The numbers worth recording for one chaos run (call after :func:`verify`)."""
    stats = run.stats
    return {
        "jobs": len(run.job_ids),
        "succeeded": sum(1 for o in run.outcomes if o.ok),
        "failed": sum(1 for o in run.outcomes if not o.ok),
        "failures by category": dict(run.categories),
        "failures by reason": dict(run.reasons),
        "tasks created": stats.submissions,
        "tasks whose submit answer was lost": stats.faults.get("reset_after", 0),
        "submissions whose answer the outage cut": run.categories[SUBMIT_UNKNOWN]
        - stats.count("submit", "reset"),
        "duplicate submissions": stats.duplicate_submissions,
        "unexpected auth": stats.unexpected_auth,
        "faults injected": dict(sorted(stats.faults.items())),
        "requests": {route: sum(c.values()) for route, c in sorted(stats.requests.items())},
        "client retries": sum(1 for e in run.client_events if e.kind == "retry"),
        "images on disk": sum(len(o.files) for o in run.outcomes if o.ok),
        "wall seconds": round(run.wall_seconds, 1),
    } | incident_figures(run)
