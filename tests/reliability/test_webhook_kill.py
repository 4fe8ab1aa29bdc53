"""A run that learns of its tasks' ends by webhook, killed (SIGKILL) mid-run and resumed by a plain
rerun, again with webhooks (issue "Completion by webhook").

The kill lands at a moment chosen from the journal, never by sleeping: when every slot
(``--concurrency``) holds a task the emulator is running. A job sends its POST only while it holds
a slot, and keeps the slot until its task ends, so no POST can be on its way then; the test still
checks afterwards that every task the emulator created is in the journal. The tasks cut off this
way end while nobody listens: the emulator's deliveries to the dead run's address fail, and the
rerun, listening on an address (and secret token) of its own, must follow them by polling.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checks import API_KEY, leaks_in_folder, read_results, results_problems, tree_problems
from .crashes import (
    FREEZE_LIMIT,
    WATCH_INTERVAL,
    CrashRun,
    EmulatorProcess,
    ended_jobs,
    in_flight,
    journal_records,
    unanswered,
    watch,
)

CONCURRENCY = 8
JOBS = 3 * CONCURRENCY  # three waves: ended by webhook, cut off by the kill, left to the rerun
# Tasks long enough that a wave still runs when the kill lands (it lands as soon as the journal
# shows the wave submitted); webhook retries a hundred times faster than the documented 1..16 s.
# Read by the emulator and crash_run fixtures (tests/reliability/conftest.py).
EMULATOR_OPTIONS = (
    "--seed",
    "14",
    "--task-seconds",
    "1.5",
    "--image-mode",
    "tiny",
    "--webhook-backoff-scale",
    "0.01",
)
WEBHOOKS = ("--webhook-listen", "127.0.0.1:0")


def every_slot_holds_a_running_task(out: Path) -> Callable[[], bool]:
    """True once a wave after the first has ended and ``CONCURRENCY`` submitted tasks are in
    flight: every slot is held, so no job can be sending a POST."""

    def held() -> bool:
        records = journal_records(out)
        flying, _, _ = in_flight(records)
        return len(ended_jobs(records)) >= CONCURRENCY and len(flying) == CONCURRENCY

    return held


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Look at the emulator's counters until ``condition`` holds."""
    deadline = time.monotonic() + FREEZE_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the emulator never reached {what}")
        time.sleep(WATCH_INTERVAL)  # the counters come over HTTP, with no change notification


def webhooks_of_tasks(emulator: EmulatorProcess) -> dict[str, dict[str, int]]:
    """Per task id: the webhook deliveries ``attempted``, ``delivered``, ``failed``..."""
    per_task: dict[str, dict[str, int]] = emulator.control("GET", "/__emulator/webhooks")
    return per_task


def test_a_webhook_run_killed_mid_run_resumes_with_every_job_once(crash_run: CrashRun) -> None:
    emulator = crash_run.emulator
    process = crash_run.start(*WEBHOOKS)
    try:
        assert watch(process, every_slot_holds_a_running_task(crash_run.out), 120), "it ended"
        process.send_signal(signal.SIGKILL)
    finally:
        assert crash_run.finish(process) == -signal.SIGKILL

    records = journal_records(crash_run.out)
    cut_off, submitted, tasks = in_flight(records)
    ended_before = ended_jobs(records)
    assert len(cut_off) == CONCURRENCY and len(submitted) == 2 * CONCURRENCY
    assert unanswered(records) == set()  # no POST was on its way
    stats: dict[str, Any] = emulator.stats()
    assert stats["submissions"] == len(tasks)  # every task created is in the journal
    task_of = {r["id"]: r["task_id"] for r in records if r.get("type") == "submitted"}
    orphans = {task_of[job] for job in cut_off}
    # The first wave's ends came by webhook to the run's receiver, polls only checking on them.
    per_task = webhooks_of_tasks(emulator)
    assert sum(per_task[task_of[job]]["delivered"] for job in ended_before) >= 1

    # The cut-off tasks end while nobody listens: every delivery and its retries fail.
    def given_up() -> bool:
        counts = webhooks_of_tasks(emulator)
        return all(counts.get(task, {}).get("failed") == 1 for task in orphans)

    wait_for(given_up, "the end of the cut-off tasks' deliveries")
    assert all(webhooks_of_tasks(emulator)[task]["delivered"] == 0 for task in orphans)

    # A plain rerun, with webhooks again: it follows the cut-off tasks, submits the rest.
    assert crash_run.run_to_end(*WEBHOOKS) == 0
    stats = emulator.stats()
    assert stats["submissions"] == JOBS and stats["duplicate_submissions"] == 0
    assert stats["unexpected_auth"] == 0
    ids = [f"job{n:04d}" for n in range(JOBS)]
    assert results_problems(crash_run.out, ids) == []
    rows = read_results(crash_run.out)
    assert {row["status"] for row in rows} == {"succeeded"}
    assert tree_problems(crash_run.out, rows) == []
    by_job = {row["id"]: row["task_id"] for row in rows}
    assert {by_job[job] for job in cut_off} == orphans  # followed, not submitted again
    assert len(set(by_job.values())) == JOBS
    per_task = webhooks_of_tasks(emulator)
    # No event of theirs ever reached a receiver: polling alone found their ends.
    assert all(per_task[task]["delivered"] == 0 for task in orphans)
    assert stats["requests"]["result"].get("200", 0) >= len(orphans)
    # The rerun's own tasks were told to come to its receiver, and came.
    fresh = set(by_job.values()) - set(tasks)
    assert len(fresh) == JOBS - 2 * CONCURRENCY
    assert all(per_task[task]["attempted"] >= 1 for task in fresh)
    assert leaks_in_folder(crash_run.out, API_KEY) == []
    assert leaks_in_folder(crash_run.logs, API_KEY) == []
