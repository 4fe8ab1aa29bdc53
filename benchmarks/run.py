"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--scenario NAME] [--contender NAME]``.

For each scenario, a fresh emulator process serves each contender in turn (a scenario's emulators
all start before its first contender runs, and idle until their turn); each contender runs in its
own process, so the figures below are that process's alone: wall time (spawn to exit), client CPU
(user + system, start-up included), peak RSS, jobs done and lost, and the HTTP requests the
emulator counted by route. Results go to ``benchmarks/results/<scenario>.json``, a plot per scenario
to ``benchmarks/results/<scenario>.png`` and a table, with this package's targets met or missed, to
``BENCHMARKS.md``. ``--quick`` runs every scenario at small scale (seconds; the figures only show
the harness works) and writes everything, its own BENCHMARKS.md included, to
``benchmarks/results/quick/`` or the ``--results`` folder: never over the full run's files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._emulator_proc import EmulatorProcess, contender_env, emulators
from benchmarks._inputs import make_inputs
from benchmarks._report import load_results, write_markdown, write_plot, write_text_atomic
from benchmarks._scenarios import SCENARIOS, Scenario
from benchmarks._spec import RunReport, RunSpec, dump_spec, parse_report
from benchmarks.contenders.sdk import usable as sdk_unusable

RESULTS = Path(__file__).parent / "results"
BENCHMARKS_MD = Path(__file__).parent.parent / "BENCHMARKS.md"
MODULES = {
    "novita-async": "benchmarks.contenders.ours",
    "official-sdk": "benchmarks.contenders.sdk",
    "naive-asyncio": "benchmarks.contenders.naive",
    "floor": "benchmarks.contenders.floor",
}


def run_contender(
    scenario: Scenario,
    contender: str,
    inputs: tuple[list[str], list[str]],
    work: Path,
    emulator: EmulatorProcess,
) -> dict[str, Any]:
    faces, refs = inputs
    work.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(
        jobs=scenario.jobs,
        faces=faces,
        refs=refs,
        out_dir=str(work / f"out-{contender}"),
        concurrency=scenario.concurrency,
        task_seconds_hint=scenario.fastest_task(),
        rate=scenario.rate,
        width=scenario.width,
        height=scenario.height,
        steps_range=scenario.steps_range,
    )
    spec_path = work / f"{contender}.json"
    dump_spec(spec, str(spec_path))
    module = scenario.module or MODULES[contender]
    stdout_path, stderr_path = work / f"{contender}.stdout", work / f"{contender}.stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(spec_path)],
            env=contender_env(emulator),
            stdout=stdout,
            stderr=stderr,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    stats = emulator.stats()
    report = parse_report(stdout_path.read_text())
    if report is None:
        last = stderr_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        report = RunReport(failed=scenario.jobs, errors={f"no report: {last[0][:200]}": 1})
    return {
        "contender": contender,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "cpu_ms_per_job": round(1000 * (usage.ru_utime + usage.ru_stime) / scenario.jobs, 3),
        "peak_rss_mb": round((report.peak_rss_kib or usage.ru_maxrss) / 1024, 1),
        "succeeded": report.succeeded,
        "failed": report.failed,
        "lost": scenario.jobs - report.succeeded,
        "errors": report.errors,
        "figures": report.figures,
        "completions_s": sorted(round(t - started, 3) for t in report.completions),
        "server": stats,
    }


def run_scenario(scenario: Scenario, contenders: list[str], work: Path) -> dict[str, Any]:
    inputs = make_inputs(work / "inputs", scenario.faces, scenario.refs)
    chosen = []
    for contender in contenders:
        if contender not in scenario.contenders:
            continue
        if contender == "official-sdk" and (why := sdk_unusable()):
            print(f"  {contender}: skipped ({why})", flush=True)
            continue
        chosen.append(contender)
    # Every contender once, then the repeated ones again, interleaved: A B C D, A D, A D...
    schedule = [
        (contender, round_)
        for round_ in range(scenario.repeats)
        for contender in chosen
        if round_ == 0 or contender in scenario.repeated
    ]
    logs = [work / f"{contender}-{round_}.emulator.log" for contender, round_ in schedule]
    done: dict[str, list[dict[str, Any]]] = {contender: [] for contender in chosen}
    # A fresh emulator for each run, so none inherits another's tasks or counters.
    with emulators(scenario.emulator_command(), logs) as fresh:
        for (contender, round_), emulator in zip(schedule, fresh, strict=True):
            label = f"{contender} #{round_ + 1}" if scenario.repeats > 1 else contender
            print(f"  {label} ...", end="", flush=True)
            result = run_contender(scenario, contender, inputs, work / f"run-{round_}", emulator)
            print(
                f" {result['wall_s']}s, {result['succeeded']}/{scenario.jobs} ok,"
                f" {result['cpu_s']} CPU s",
                flush=True,
            )
            done[contender].append(result)
    runs = [_median_run(done[contender]) for contender in chosen]
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "jobs": scenario.jobs,
        "concurrency": scenario.concurrency,
        "task_seconds": scenario.fastest_task(),
        "rate": scenario.rate,
        "ideal_wall_s": round(scenario.ideal_wall(), 3),
        "emulator": scenario.emulator_command(),
        "runs": runs,
    }


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU, listing every run's CPU and wall time (in run order)."""
    if len(results) == 1:
        return results[0]
    chosen = sorted(results, key=lambda r: r["cpu_s"])[(len(results) - 1) // 2]
    repeats = [{k: r[k] for k in ("cpu_s", "wall_s", "succeeded")} for r in results]
    return {**chosen, "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario at small scale")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--contender", action="append", choices=sorted(MODULES))
    parser.add_argument(
        "--results",
        type=Path,
        help=f"folder for the JSON, plots (and, with --quick, BENCHMARKS.md); default {RESULTS}"
        f" or, with --quick, {RESULTS / 'quick'}",
    )
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    contenders = args.contender or list(MODULES)
    results_dir: Path = args.results or (RESULTS / "quick" if args.quick else RESULTS)
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.quick and args.results is None:
        write_text_atomic(results_dir / ".gitignore", "*\n")  # quick figures are never kept
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    with tempfile.TemporaryDirectory(prefix="novita-bench-") as tmp:
        for name in names:
            scenario = SCENARIOS[name].scaled(args.quick)
            print(f"{scenario.name}: {scenario.description} (N={scenario.jobs})", flush=True)
            result = run_scenario(scenario, contenders, Path(tmp) / name)
            result.update(
                command=command.strip(),
                machine=machine,
                date=datetime.date.today().isoformat(),
                quick=args.quick,
            )
            write_text_atomic(results_dir / f"{name}.json", json.dumps(result, indent=1))
            write_plot(result, results_dir / f"{name}.png")
    # The table covers every scenario with results in the folder: those of this run and,
    # when only some were run, the others' latest (each section names its own command).
    markdown = results_dir / "BENCHMARKS.md" if args.quick else BENCHMARKS_MD
    write_markdown(load_results(results_dir, list(SCENARIOS), quick=args.quick), markdown)
    print(f"results in {results_dir}; table in {markdown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
