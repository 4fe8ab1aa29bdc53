"""Crash and resume at CI scale: ``novita-async run`` killed (SIGKILL) or interrupted (SIGINT) at
seeded moments and rerun until it ends; nothing is submitted twice unasked, nothing is lost."""

from __future__ import annotations

import random

from .checks import API_KEY, leaks_in_folder, read_results, results_problems, tree_problems
from .crashes import CrashRun, kill_points

JOBS = 30
CONCURRENCY = 10
# A task lasts 0.3 s and the CLI polls at eta + margin: a run takes a few seconds.
EMULATOR_OPTIONS = ("--seed", "11", "--task-seconds", "0.3", "--image-mode", "tiny")
# A submission takes 0.05 s to reach its task and 0.25 s to answer (51 bytes at 200 B/s): a kill
# can land on either side of the task's creation.
SLOW_SUBMISSIONS = {"latency": 0.05, "bandwidth": 200}


def assert_complete(run: CrashRun, paid_twice: int = 0) -> None:
    """The run ended with every job submitted once (but ``paid_twice`` of them, resent when told
    to), every image whole, nothing leaked."""
    stats = run.emulator.stats()
    assert stats["duplicate_submissions"] == paid_twice
    assert stats["submissions"] == JOBS + paid_twice  # each job once over all the runs
    assert stats["unexpected_auth"] == 0
    ids = [f"job{n:04d}" for n in range(JOBS)]
    assert results_problems(run.out, ids) == []
    rows = read_results(run.out)
    assert {row["status"] for row in rows} == {"succeeded"}
    assert tree_problems(run.out, rows) == []  # no .part file, no temp file, every image decodes
    assert (run.out / "index.html").is_file()
    # The key is in no output file (journal, results, gallery) and in no log line, DEBUG included.
    assert leaks_in_folder(run.out, API_KEY) == []
    assert leaks_in_folder(run.logs, API_KEY) == []


def test_sigkill_at_seeded_moments_then_rerun_submits_each_job_once(crash_run: CrashRun) -> None:
    kills = 3
    span = 3 * JOBS // (kills + 1)  # about three journal records per job
    for more, route in kill_points(seed=2024, count=kills, span=span):
        assert crash_run.kill_at(more, route), "the run ended before the kill point"
    # The POSTs parked at a kill were sent, unanswered: their intents make the rerun report them
    # as of unknown outcome rather than pay again; told to, it submits them.
    if crash_run.run_to_end() == 1:
        unknown = [r for r in read_results(crash_run.out) if r["status"] == "failed"]
        assert {r["error"]["reason"] for r in unknown} == {"SUBMIT_OUTCOME_UNKNOWN"}  # type: ignore[index]
        assert crash_run.run_to_end("--retry-failed") == 0

    assert crash_run.exit_codes[:kills] == [-9] * kills
    for kill in crash_run.kills:
        # At each kill, every task the emulator had created was already in the journal.
        assert kill["tasks_created"] == kill["tasks_in_journal"], kill
        assert kill["new_unjournaled_tasks"] == 0
    assert {k["parked_on"] for k in crash_run.kills} <= {"result", "image"}
    assert_complete(crash_run)


def test_sigkills_cutting_posts_off_never_make_a_plain_rerun_pay_twice(crash_run: CrashRun) -> None:
    emulator = crash_run.emulator
    emulator.set_faults("submit", spec=SLOW_SUBMISSIONS)
    rng = random.Random(4242)
    # Unfrozen, once a POST is in flight or once a task's answer is on its way: the
    # double-submission window of old, on both sides of the task's creation.
    moments = ("post", "answer", "answer")
    for wait_for in moments:
        assert crash_run.kill_at(rng.randint(1, 10), None, wait_for=wait_for), "the run ended"
    assert crash_run.exit_codes == [-9] * len(moments)
    assert all(kill["posts_cut"] for kill in crash_run.kills), crash_run.kills
    unknown = crash_run.unknown_jobs
    # Tasks the killed POSTs created that the journal never heard of: at most one per job cut off.
    orphans = crash_run.unjournaled
    assert 0 < orphans <= len(unknown)

    # A plain rerun reports exactly the jobs cut off, sends none of them again, ends the rest.
    assert crash_run.run_to_end() == 1
    failed = {r["id"]: r["error"] for r in read_results(crash_run.out) if r["status"] == "failed"}
    assert set(failed) == unknown
    assert {error["reason"] for error in failed.values()} == {"SUBMIT_OUTCOME_UNKNOWN"}
    stats = emulator.stats()
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions"] == JOBS - len(unknown) + orphans
    stdout, _ = crash_run.said()
    assert f"{len(unknown)} SUBMIT_OUTCOME_UNKNOWN (a task may exist and be billed" in stdout

    # Told to, it submits them: those whose task existed are paid twice, knowingly; no other.
    assert crash_run.run_to_end("--retry-failed") == 0
    assert_complete(crash_run, paid_twice=orphans)


def test_sigint_exits_130_and_a_rerun_resumes_cleanly(crash_run: CrashRun) -> None:
    rng = random.Random(7)
    for _ in range(2):
        assert crash_run.interrupt_at(rng.randint(5, 2 * JOBS)) == 130
    assert crash_run.run_to_end() == 0
    assert crash_run.exit_codes == [130, 130, 0]
    assert_complete(crash_run)
