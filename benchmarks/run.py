"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--scenario NAME] [--contender NAME]``.

For each scenario, a fresh emulator process serves each contender in turn; each contender runs in
its own process, so the figures below are that process's alone: wall time (spawn to exit), client
CPU (user + system, start-up included), peak RSS, jobs done and lost, and the HTTP requests the
emulator counted by route. Results go to ``benchmarks/results/<scenario>.json``, a plot per scenario
to ``benchmarks/results/<scenario>.png`` and a table to ``BENCHMARKS.md``.
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

from benchmarks._emulator_proc import EmulatorProcess, contender_env
from benchmarks._inputs import make_inputs
from benchmarks._report import write_markdown, write_plot
from benchmarks._scenarios import SCENARIOS, Scenario
from benchmarks._spec import RunSpec, dump_spec, parse_report

RESULTS = Path(__file__).parent / "results"
MODULES = {
    "novita-async": "benchmarks.contenders.ours",
    "official-sdk": "benchmarks.contenders.sdk",
    "naive-asyncio": "benchmarks.contenders.naive",
    "floor": "benchmarks.contenders.floor",
}


def sdk_available() -> bool:
    try:
        import novita_client  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def run_contender(
    scenario: Scenario, contender: str, inputs: tuple[list[str], list[str]], work: Path
) -> dict[str, Any]:
    faces, refs = inputs
    out_dir = work / f"out-{contender}"
    spec = RunSpec(
        jobs=scenario.jobs,
        faces=faces,
        refs=refs,
        out_dir=str(out_dir),
        concurrency=scenario.concurrency,
        task_seconds_hint=scenario.task_seconds,
        rate=scenario.rate,
    )
    spec_path = work / f"{contender}.json"
    dump_spec(spec, str(spec_path))
    emulator_args = [
        "--image-mode",
        "tiny",
        "--workers",
        str(max(scenario.concurrency, 16) * 2),
        "--task-seconds",
        str(scenario.task_seconds),
        *scenario.emulator_args,
    ]
    with EmulatorProcess(*emulator_args) as emulator:
        stdout_path = work / f"{contender}.stdout"
        with open(stdout_path, "w") as stdout:
            started = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULES[contender], str(spec_path)],
                env=contender_env(emulator),
                stdout=stdout,
                stderr=subprocess.DEVNULL,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.time() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        stats = emulator.stats()
    report = parse_report(stdout_path.read_text())
    succeeded = report.succeeded if report else 0
    return {
        "contender": contender,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "cpu_ms_per_job": round(1000 * (usage.ru_utime + usage.ru_stime) / scenario.jobs, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "succeeded": succeeded,
        "failed": report.failed if report else scenario.jobs,
        "lost": scenario.jobs - succeeded,
        "errors": report.errors if report else {"no report": 1},
        "completions_s": sorted(round(t - started, 3) for t in report.completions)
        if report
        else [],
        "server": stats,
    }


def run_scenario(scenario: Scenario, contenders: list[str], work: Path) -> dict[str, Any]:
    inputs = make_inputs(work / "inputs", scenario.faces, scenario.refs)
    ideal = scenario.jobs * scenario.task_seconds / scenario.concurrency + scenario.task_seconds
    if scenario.rate:
        ideal = max(ideal, scenario.jobs / scenario.rate)
    runs = []
    for contender in contenders:
        if contender not in scenario.contenders:
            continue
        if contender == "official-sdk" and not sdk_available():
            print(f"  {contender}: skipped (pip install -e '.[bench]')", flush=True)
            continue
        print(f"  {contender} ...", end="", flush=True)
        result = run_contender(scenario, contender, inputs, work)
        print(f" {result['wall_s']}s, {result['succeeded']}/{scenario.jobs} ok", flush=True)
        runs.append(result)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "jobs": scenario.jobs,
        "concurrency": scenario.concurrency,
        "task_seconds": scenario.task_seconds,
        "ideal_wall_s": round(ideal, 3),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario at small scale")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--contender", action="append", choices=sorted(MODULES))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    contenders = args.contender or list(MODULES)
    args.results.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    all_results = []
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
            (args.results / f"{name}.json").write_text(json.dumps(result, indent=1))
            write_plot(result, args.results / f"{name}.png")
            all_results.append(result)
    write_markdown(
        all_results,
        args.results / "BENCHMARKS.md"
        if args.quick
        else Path(__file__).parent.parent / "BENCHMARKS.md",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
