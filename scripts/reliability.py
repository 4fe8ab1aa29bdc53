"""The reliability suite at full scale; prints its figures and writes them into RELIABILITY.md.

    python scripts/reliability.py                 # 5,000-job chaos run + crash/resume, 20 kills
    python scripts/reliability.py --no-write      # print only
    python scripts/reliability.py --jobs 500 --kills 5 --crash-jobs 60   # a quicker look

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
from reliability.crashes import CrashRun, EmulatorProcess, kill_points, write_job_file  # noqa: E402

REPORT = ROOT / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def chaos(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[str]]:
    inputs = write_inputs(work / "inputs")
    out = work / "chaos-out"

    async def main() -> tuple[Any, LeakWatch]:
        with LeakWatch(API_KEY, SIGNATURE_MARK) as logs:
            run = await run_chaos(
                out,
                inputs,
                jobs=args.jobs,
                seed=args.seed,
                concurrency=args.concurrency,
                retry_after=args.retry_after,
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
    emulator = EmulatorProcess(
        "--seed", str(args.seed), "--task-seconds", "0.3", "--image-mode", "tiny"
    )
    started = time.monotonic()
    try:
        jobs_file = write_job_file(work / "crash-jobs", args.crash_jobs)
        run = CrashRun(
            emulator,
            jobs_file,
            work / "crash-out",
            work / "crash-logs",
            args.crash_jobs,
            args.crash_concurrency,
        )
        # Every point, in a seeded order: frozen SIGKILLs, unfrozen ones, SIGINTs.
        points = args.kills + args.raw_kills + args.interrupts
        # About three journal records per job; a frozen kill also lets the run go on until every
        # job in flight is parked (up to two records per slot).
        budget = 3 * args.crash_jobs - 2 * args.crash_concurrency * args.kills
        span = max(1, budget // (points + 1))
        plan: list[tuple[str, int, str | None]] = [
            ("kill", more, route) for more, route in kill_points(args.seed, args.kills, span)
        ]
        rng = random.Random(args.seed + 1)
        plan += [("kill", rng.randint(1, span), None) for _ in range(args.raw_kills)]
        plan += [("interrupt", rng.randint(1, span), None) for _ in range(args.interrupts)]
        rng.shuffle(plan)
        missed = 0
        interrupts: list[int | None] = []
        for kind, more, route in plan:
            if kind == "kill":
                missed += not run.kill_at(more, route)
            else:
                interrupts.append(run.interrupt_at(more))
        final = run.run_to_end()
        stats = emulator.stats()
    finally:
        emulator_exit = emulator.close()

    problems: list[str] = []
    ids = [f"job{n:04d}" for n in range(args.crash_jobs)]
    problems += results_problems(run.out, ids)
    rows = read_results(run.out) if not problems else []
    problems += tree_problems(run.out, rows)
    problems += [f"job {r['id']} ended {r['status']}" for r in rows if r["status"] != "succeeded"]
    problems += leaks_in_folder(run.out, API_KEY) + leaks_in_folder(run.logs, API_KEY)
    sigkills = [k for k in run.kills if k["signal"] == "SIGKILL" and k["parked_on"] != "(none)"]
    raw = [k for k in run.kills if k["signal"] == "SIGKILL" and k["parked_on"] == "(none)"]
    # Tasks created by a POST whose answer a kill lost: possible only for unfrozen kills.
    unjournaled = run.unjournaled
    if missed:
        problems.append(f"{missed} kill points came after the run had ended")
    for kill in sigkills:
        if kill["new_unjournaled_tasks"]:
            problems.append(f"a task unknown to the journal after a kill: {kill}")
    expected = (args.crash_jobs + unjournaled, unjournaled)
    if (stats["submissions"], stats["duplicate_submissions"]) != expected:
        problems.append(
            f"{stats['submissions']} tasks for {args.crash_jobs} jobs, "
            f"{stats['duplicate_submissions']} duplicates, {unjournaled} lost to kills"
        )
    if stats["unexpected_auth"]:
        problems.append(f"{stats['unexpected_auth']} requests carried Authorization off the API")
    if final != 0 or any(code != 130 for code in interrupts) or emulator_exit != 0:
        codes = f"interrupts {interrupts}, final {final}, emulator {emulator_exit}"
        problems.append(f"exit codes: {codes}")
    numbers = {
        "jobs": args.crash_jobs,
        "concurrency": args.crash_concurrency,
        "SIGKILL points": len(sigkills),
        "parked on result / image": [
            sum(k["parked_on"] == "result" for k in sigkills),
            sum(k["parked_on"] == "image" for k in sigkills),
        ],
        "journal records before each kill": [k["after_records"] for k in sigkills],
        "jobs in flight at each kill": [k["jobs_in_flight"] for k in sigkills],
        "SIGINT exit codes": interrupts,
        "unfrozen SIGKILL points": len(raw),
        "unfrozen kills that landed in the documented window": sum(
            k["new_unjournaled_tasks"] > 0 for k in raw
        ),
        "tasks left unjournaled by them (each submitted again on resume)": unjournaled,
        "runs": run.runs,
        "final exit code": final,
        "tasks created": stats["submissions"],
        "duplicate submissions": stats["duplicate_submissions"],
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
    parser.add_argument("--crash-jobs", type=int, default=400)
    parser.add_argument("--crash-concurrency", type=int, default=12)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL points")
    parser.add_argument("--interrupts", type=int, default=3, help="SIGINT points")
    parser.add_argument(
        "--raw-kills", type=int, default=10, help="extra SIGKILL points without freezing"
    )
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
            print(f"crash/resume: {args.crash_jobs} jobs, {args.kills} kills ...", flush=True)
            title = f"Crash and resume ({args.kills} SIGKILL + {args.interrupts} SIGINT points)"
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
