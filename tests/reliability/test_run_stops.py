"""Run-level failures through the command, end to end: ``novita-async run`` in a subprocess against
the emulator in another, each cause injected by the emulator.

A run-level cause (a wrong key, the balance running out, an outage longer than ``--max-outage``)
must stop the run with exit status 3 and one line on stderr naming the cause and the fix, record
nothing against the jobs it did not finish (no ``failed`` record, no intent left without its
answer), keep in the journal every task it paid for, and let a plain rerun, the cause fixed, finish
with every job submitted exactly once. A ``Retry-After`` of a day must pause the run only as long
as ``--retry-after-cap``. The runner-level twins of these tests are in ``tests/batch``; the
messages' wording in ``tests/cli``.
"""

from __future__ import annotations

import re
import time
import urllib.error

from .checks import leaks_in_folder, read_results, tree_problems
from .crashes import (
    WATCH_INTERVAL,
    CrashRun,
    EmulatorProcess,
    in_flight,
    journal_records,
    unanswered,
)
from .test_crash_resume import CONCURRENCY, assert_complete

WRONG_KEY = "sk-wrong-reliability-5be0d1c93a7f"
CAP = 0.5


def stop_line(run: CrashRun) -> str:
    """The stopped run's exit status is 3 and its stderr one line, naming the cause and the fix."""
    stdout, stderr = run.said()
    assert run.exit_codes[-1] == 3, stdout + stderr
    assert "Traceback" not in stdout + stderr and "ExceptionGroup" not in stdout + stderr
    (line,) = stderr.splitlines()
    assert line.startswith("novita-async: error: run stopped: "), line
    assert line.endswith("; rerun to continue"), line
    return line


def paid_and_unrecorded(run: CrashRun) -> set[str]:
    """Nothing recorded against the jobs: no failure, no intent without its answer, and every task
    the emulator created is in the journal. Returns the jobs holding a task."""
    records = journal_records(run.out)
    assert [r for r in records if r["type"] == "failed"] == []
    assert unanswered(records) == set()  # a stop leaves no submission of unknown outcome
    _, submitted, tasks = in_flight(records)
    assert run.emulator.stats()["submissions"] == len(tasks) == len(submitted)
    rows = read_results(run.out) if (run.out / "results.jsonl").exists() else []
    assert {row["status"] for row in rows} <= {"succeeded"}
    assert tree_problems(run.out, rows) == []
    return submitted


def listening(emulator: EmulatorProcess) -> bool:
    try:
        return not emulator.stats()["outage_active"]
    except (urllib.error.URLError, ConnectionError):
        return False


def test_a_wrong_key_stops_the_run_before_any_task_and_the_right_key_finishes(
    crash_run: CrashRun,
) -> None:
    crash_run.finish(crash_run.start(env={"NOVITA_API_KEY": WRONG_KEY}, debug=False))
    line = stop_line(crash_run)
    assert "the service refused the API key (403 INVALID_API_KEY): check NOVITA_API_KEY" in line
    assert "0 tasks submitted" in line
    assert paid_and_unrecorded(crash_run) == set()
    for folder in (crash_run.out, crash_run.logs):
        assert leaks_in_folder(folder, WRONG_KEY) == []

    assert crash_run.run_to_end() == 0  # the right key (the emulator's), no flag
    assert_complete(crash_run)


def test_the_balance_running_out_stops_submitting_lands_the_tasks_paid_for_and_a_rerun_finishes(
    crash_run: CrashRun,
) -> None:
    paid = CONCURRENCY + 2  # a wave of submissions, then two more as slots free up
    crash_run.emulator.control("POST", "/__emulator/account-error", {"after": paid})
    crash_run.finish(crash_run.start(debug=False))
    line = stop_line(crash_run)
    assert "the account's balance has run out (400 BILLING_BALANCE_NOT_ENOUGH): top it up" in line
    assert f"{paid} tasks submitted" in line
    with_task = paid_and_unrecorded(crash_run)
    assert len(with_task) == paid
    # The tasks paid for were followed to their end: their images are on disk.
    assert {row["id"] for row in read_results(crash_run.out)} == with_task
    stdout, _ = crash_run.said()
    assert "not finished (the run stopped; rerun to continue)" in stdout

    crash_run.emulator.clear_faults()  # topped up
    assert crash_run.run_to_end() == 0
    assert_complete(crash_run)


def test_an_outage_longer_than_max_outage_stops_the_run_and_a_rerun_follows_the_tasks_paid_for(
    crash_run: CrashRun,
) -> None:
    emulator = crash_run.emulator
    # Every slot holds a task when the outage begins (on the next request, a poll): 3 s of
    # refused connections against a budget of 0.5 s.
    emulator.control("POST", "/__emulator/outage", {"seconds": 3, "after": CONCURRENCY})
    crash_run.finish(crash_run.start("--max-outage", "0.5", debug=False))
    line = stop_line(crash_run)
    assert "the API has been unreachable for" in line
    assert "(OUTAGE): check the network or the service's status" in line
    assert f"{CONCURRENCY} tasks submitted" in line

    deadline = time.monotonic() + 60
    while not listening(emulator):  # the outage ends by itself: look until it has
        assert time.monotonic() < deadline, "the emulator never listened again"
        time.sleep(WATCH_INTERVAL)
    assert len(paid_and_unrecorded(crash_run)) == CONCURRENCY
    assert crash_run.run_to_end() == 0
    assert_complete(crash_run)  # the tasks paid for were followed, never submitted again


def test_a_day_long_retry_after_on_submissions_pauses_the_run_only_for_the_cap(
    crash_run: CrashRun,
) -> None:
    day = ["429:86400", "429date:86400", "429:86400"]  # delta-seconds and an HTTP date
    crash_run.emulator.set_faults("submit", script=day)
    assert crash_run.run_to_end("--retry-after-cap", str(CAP)) == 0
    stdout, _ = crash_run.said()
    pauses = [line for line in stdout.splitlines() if "submissions paused" in line]
    assert len(pauses) == len(day), stdout
    for pause in pauses:
        assert f"paused for {CAP:.1f}s" in pause and f"capped at {CAP:g}s" in pause, pause
    assert crash_run.emulator.stats()["faults"]["rate_429"] == len(day)
    assert_complete(crash_run)


def test_a_long_retry_after_on_polls_is_capped_by_retry_after_cap_too(
    crash_run: CrashRun,
) -> None:
    crash_run.emulator.set_faults("result", script=["429:2"])  # 2 s: cheap while this fails
    assert crash_run.run_to_end("--retry-after-cap", str(CAP)) == 0
    _, stderr = crash_run.said()
    delays = [float(d) for d in re.findall(r"status=429 .*delay=([0-9.]+)", stderr)]
    assert delays, stderr
    assert max(delays) <= CAP
