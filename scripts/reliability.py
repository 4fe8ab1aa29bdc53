"""The reliability suite at full scale; prints its figures and writes them into RELIABILITY.md.

    python scripts/reliability.py                 # 5,000-job chaos run + the kill suite (20 kills)
    python scripts/reliability.py --no-write      # print only
    python scripts/reliability.py --jobs 500 --kills 5 --crash-jobs 60   # a quicker look

Chaos: every per-request fault at once, an outage window (connections refused for ``--outage``
seconds) and an account error (the balance runs out once ``--account-after`` tasks exist), which
stops the run; the fault is then cleared and a plain rerun must finish.

Kill suite: ``novita-async run`` in a subprocess, SIGKILLed ``--kills`` times at seeded moments
without freezing anything (POSTs are genuinely in flight; some kills wait for one, or for a task's
answer on its way), interrupted ``--interrupts`` times, rerun plainly to the end, then with
``--retry-failed`` for the jobs reported ``SUBMIT_OUTCOME_UNKNOWN``. It counts the duplicate
submissions (the emulator's count; 0 is the goal without ``--retry-failed``) and the unknown
outcomes.

It runs the same harness and checks as ``tests/reliability`` (imported from there), so a figure
here and an assertion there mean the same thing. Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # before this folder, which holds a reliability.py too

import anyio  # noqa: E402
from reliability.chaos import figures, run_chaos, verify, write_inputs  # noqa: E402
from reliability.checks import (  # noqa: E402
    API_KEY,
    SIGNATURE_MARK,
    LeakWatch,
    leaks_in_folder,
    read_results,
    results_problems,
    tree_problems,
)
from reliability.crashes import (  # noqa: E402
    CrashRun,
    EmulatorProcess,
    in_flight,
    journal_records,
    write_job_file,
)
from reliability.incidents import Incidents  # noqa: E402

REPORT = ROOT / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
# A submission takes 0.05 s to reach its task and 0.1 s to answer (51 bytes at 500 B/s), as a
# real API's would: a kill can land on either side of the task's creation.
SLOW_SUBMISSIONS = "submit:latency=0.05,bandwidth=500"
# The moments a kill waits for after its journal records: none (any moment), a POST in flight,
# a task created whose answer is on its way.
MOMENTS = (None, "post", "answer")


def chaos(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[str]]:
    inputs = write_inputs(work / "inputs")
    out = work / "chaos-out"

    incidents = None
    if not args.no_incidents:
        incidents = Incidents(
            outage_seconds=args.outage,
            outage_after=args.jobs // 5 if args.outage_after is None else args.outage_after,
            account_after=args.jobs * 3 // 5 if args.account_after is None else args.account_after,
        )

    async def main() -> tuple[Any, LeakWatch]:
        with LeakWatch(API_KEY, SIGNATURE_MARK) as logs:
            run = await run_chaos(
                out,
                inputs,
                jobs=args.jobs,
                seed=args.seed,
                concurrency=args.concurrency,
                retry_after=args.retry_after,
                incidents=incidents,
            )
        return run, logs

    run, logs = anyio.run(main)
    problems = verify(run) + logs.leaks
    numbers = figures(run)
    numbers["log records scanned (DEBUG)"] = logs.records
    numbers["key or signature leaks"] = len(logs.leaks) + sum("appears in" in p for p in problems)
    numbers["problems"] = len(problems)
    return numbers, problems


def crash(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[str]]:
    """The kill suite: unfrozen SIGKILLs and SIGINTs, a plain rerun, then ``--retry-failed``."""
    emulator = EmulatorProcess(
        "--seed", str(args.seed), "--task-seconds", "0.3", "--image-mode", "tiny",
        "--fault", SLOW_SUBMISSIONS,
    )  # fmt: skip
    started = time.monotonic()
    problems: list[str] = []
    jobs = args.crash_jobs
    try:
        run = CrashRun(
            emulator,
            write_job_file(work / "crash-jobs", jobs),
            work / "crash-out",
            work / "crash-logs",
            jobs,
            args.crash_concurrency,
        )
        # Every point, in a seeded order: about three journal records per job, shared out.
        rng = random.Random(args.seed)
        span = max(1, 3 * jobs // (args.kills + args.interrupts + 1))
        plan: list[tuple[str, int, str | None]] = [
            ("kill", rng.randint(1, span), MOMENTS[n % len(MOMENTS)]) for n in range(args.kills)
        ]
        plan += [("interrupt", rng.randint(1, span), None) for _ in range(args.interrupts)]
        rng.shuffle(plan)
        missed = 0
        interrupts: list[int | None] = []
        for kind, more, moment in plan:
            if kind == "kill":
                missed += not run.kill_at(more, None, wait_for=moment)
            else:
                interrupts.append(run.interrupt_at(more))
        orphans = run.unjournaled
        # A plain rerun: it must report the jobs the kills cut off and send none of them again.
        plain = run.run_to_end()
        plain_stats = emulator.stats()
        reported = {
            row["id"]: row["error"]["reason"]
            for row in read_results(run.out)
            if row["status"] == "failed"
        }
        # Told to, it submits them again: those whose task existed are paid twice, knowingly.
        final = run.run_to_end("--retry-failed") if reported else plain
        stats = emulator.stats()
        journal_tasks = len(in_flight(journal_records(run.out))[2])
    finally:
        emulator_exit = emulator.close()

    ids = [f"job{n:04d}" for n in range(jobs)]
    problems += results_problems(run.out, ids)
    rows = read_results(run.out) if not problems else []
    problems += tree_problems(run.out, rows)
    problems += [f"job {r['id']} ended {r['status']}" for r in rows if r["status"] != "succeeded"]
    problems += leaks_in_folder(run.out, API_KEY) + leaks_in_folder(run.logs, API_KEY)
    kills = [k for k in run.kills if k["signal"] == "SIGKILL"]
    if missed:
        problems.append(f"{missed} kill points came after the run had ended")
    for kill in kills:
        if kill["new_unjournaled_tasks"] > kill["posts_cut"]:
            problems.append(f"a task unknown to the journal and to its intents: {kill}")
    if plain_stats["duplicate_submissions"]:
        problems.append(f"{plain_stats['duplicate_submissions']} duplicates with no flag")
    if set(reported) != run.unknown_jobs or set(reported.values()) - {"SUBMIT_OUTCOME_UNKNOWN"}:
        problems.append(
            f"the plain rerun reported {reported}; the kills cut off {sorted(run.unknown_jobs)}"
        )
    if (stats["submissions"], stats["duplicate_submissions"]) != (jobs + orphans, orphans):
        problems.append(
            f"{stats['submissions']} tasks for {jobs} jobs, {stats['duplicate_submissions']} "
            f"duplicates, {orphans} tasks the kills left unjournaled"
        )
    if journal_tasks != stats["submissions"] - orphans:
        problems.append(f"{journal_tasks} tasks in the journal, {stats['submissions']} created")
    if stats["unexpected_auth"]:
        problems.append(f"{stats['unexpected_auth']} requests carried Authorization off the API")
    expected_plain = 1 if run.unknown_jobs else 0
    if plain != expected_plain or final != 0 or emulator_exit != 0:
        problems.append(f"exit codes: plain rerun {plain}, final {final}, emulator {emulator_exit}")
    if any(code != 130 for code in interrupts):
        problems.append(f"SIGINT exit codes {interrupts}")
    numbers = {
        "jobs": jobs,
        "concurrency": args.crash_concurrency,
        "submission": "0.05 s to the task, 0.1 s to the answer",
        "unfrozen SIGKILL points": len(kills),
        "kill moments (any / POST in flight / answer on its way)": [
            sum(k["waited_for"] == (m or "(nothing)") for k in kills) for m in MOMENTS
        ],
        "journal records before each kill": [k["after_records"] for k in kills],
        "kills that cut POSTs off": sum(k["posts_cut"] > 0 for k in kills),
        "POSTs cut off at each kill": [k["posts_cut"] for k in kills],
        "tasks those POSTs created (unknown to the journal)": orphans,
        "SIGINT exit codes": interrupts,
        "plain rerun exit code": plain,
        "unknown outcomes reported (SUBMIT_OUTCOME_UNKNOWN)": len(reported),
        "duplicate submissions with no flag": plain_stats["duplicate_submissions"],
        "--retry-failed: jobs submitted again": len(reported),
        "--retry-failed: duplicates (paid twice, knowingly)": stats["duplicate_submissions"]
        - plain_stats["duplicate_submissions"],
        "final exit code": final,
        "runs": run.runs,
        "tasks created": stats["submissions"],
        "unexpected auth": stats["unexpected_auth"],
        "images valid": sum(len(r["files"]) for r in rows),
        "wall seconds": round(time.monotonic() - started, 1),
        "problems": len(problems),
    }
    return numbers, problems


def render(args: argparse.Namespace, sections: dict[str, dict[str, Any]], ok: bool) -> str:
    command = "python scripts/reliability.py " + " ".join(args.argv)
    lines = [
        START,
        f"Measured {datetime.date.today().isoformat()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        f"Command: `{command.strip()}` — result: **{'all checks held' if ok else 'FAILED'}**.",
        "",
    ]
    for title, numbers in sections.items():
        lines += [f"### {title}", "", "| figure | value |", "|---|---|"]
        for name, value in numbers.items():
            shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
            lines.append(f"| {name} | {shown.replace('|', '/')} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_report(block: str) -> None:
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    REPORT.write_text(head + block + tail, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="chaos run size")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--retry-after", type=float, default=0.0, help="Retry-After of 429s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--outage", type=float, default=15.0, help="seconds of refused connections")
    parser.add_argument("--outage-after", type=int, default=None, help="tasks (default: jobs/5)")
    parser.add_argument(
        "--account-after", type=int, default=None, help="tasks before the balance runs out "
        "(default: 3/5 of the jobs)"
    )  # fmt: skip
    parser.add_argument("--no-incidents", action="store_true", help="no outage, no account error")
    parser.add_argument("--crash-jobs", type=int, default=400)
    parser.add_argument("--crash-concurrency", type=int, default=12)
    parser.add_argument("--kills", type=int, default=20, help="unfrozen SIGKILL points")
    parser.add_argument("--interrupts", type=int, default=3, help="SIGINT points")
    parser.add_argument("--no-chaos", action="store_true")
    parser.add_argument("--no-crash", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not update RELIABILITY.md")
    parser.add_argument("--work", type=Path, default=None, help="keep the run's files here")
    args = parser.parse_args()
    args.argv = sys.argv[1:]

    sections: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="novita-reliability-") as temp:
        work = args.work or Path(temp)
        if not args.no_chaos:
            print(f"chaos run: {args.jobs} jobs ...", flush=True)
            sections[f"Chaos run ({args.jobs} jobs)"], found = chaos(args, work)
            problems += found
        if not args.no_crash:
            print(f"kill suite: {args.crash_jobs} jobs, {args.kills} kills ...", flush=True)
            title = f"Kill suite ({args.kills} unfrozen SIGKILL + {args.interrupts} SIGINT points)"
            sections[title], found = crash(args, work)
            problems += found
    ok = not problems
    block = render(args, sections, ok)
    print(block)
    for problem in problems[:50]:
        print("PROBLEM:", problem)
    if not args.no_write:
        write_report(block)
        print(f"figures written to {REPORT}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
