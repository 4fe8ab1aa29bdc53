"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--scenario NAME] [--contender NAME]``.

For each scenario, a fresh emulator process serves each run of each contender (a scenario's
emulators all start before its first run, and idle until their turn); each contender runs in its
own process, so the figures are that process's alone: wall time (spawn to exit), client CPU (user
+ system, start-up included), peak RSS, jobs done and lost, and the HTTP requests the emulator
counted by route; where a scenario asks, how long after the emulator ended each task its image
was on disk. A scenario's repeated contenders run several times, interleaved.

Each scenario's runs are summarised (no per-job data) in ``benchmarks/results/<scenario>.json``,
drawn in ``benchmarks/results/<scenario>.png``; then ``BENCHMARKS.md`` (every figure the median
over a contender's runs, each target met or missed) and the README's figures, between its
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers, are written from the result files.
``--report`` runs nothing and writes those (and the plots) again from the result files.
``--quick`` runs every scenario at small scale (seconds; the figures only show the harness
works) and writes everything, its own BENCHMARKS.md included, to ``benchmarks/results/quick/``
or the ``--results`` folder: never over the full run's files, and never into the README.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._emulator_proc import EmulatorProcess, contender_env, emulators
from benchmarks._inputs import make_inputs, make_masks
from benchmarks._mixed import check_outputs
from benchmarks._plot import write_plot
from benchmarks._readme import with_readme_figures
from benchmarks._report import render_markdown, write_text_atomic
from benchmarks._scale_out import with_scale_out_figures
from benchmarks._scenarios import CONTENDERS, SCENARIOS, Scenario
from benchmarks._spec import RunReport, RunSpec, dump_spec, parse_report
from benchmarks._summary import (
    ContenderResult,
    RunSummary,
    ScenarioResult,
    end_to_disk,
    load_results,
    progress,
    write_result,
)
from benchmarks.contenders.sdk import usable as sdk_unusable

RESULTS = Path(__file__).parent / "results"
BENCHMARKS_MD = Path(__file__).parent.parent / "BENCHMARKS.md"
README = Path(__file__).parent.parent / "README.md"
SCALE_OUT = Path(__file__).parent.parent / "docs" / "scale-out.md"


def run_contender(
    scenario: Scenario,
    contender: str,
    inputs: tuple[list[str], list[str], list[str]],
    work: Path,
    emulator: EmulatorProcess,
) -> RunSummary:
    faces, refs, masks = inputs
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
        webhooks=CONTENDERS[contender].webhooks,
        end_to_disk=scenario.end_to_disk,
        shards=CONTENDERS[contender].shards,
        masks=masks,
    )
    spec_path = work / f"{contender}.json"
    dump_spec(spec, str(spec_path))
    module = scenario.module_of(contender)
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
    stats = emulator.stats()
    report = parse_report(stdout_path.read_text())
    if report is None:
        last = stderr_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        report = RunReport(failed=scenario.jobs, errors={f"no report: {last[0][:200]}": 1})
    if scenario.end_to_disk:
        report.figures.update(end_to_disk(report.on_disk, emulator.task_ends()))
    if scenario.mixed:
        # Checked here, after the contender's exit: opening its images is not its CPU.
        report.figures.update(check_outputs(spec, stats))
        report.figures["images_per_s"] = round(report.figures["images_right"] / wall, 2)
    # The per-job times stay here: the summary keeps a hundred points of progress, percentiles.
    return RunSummary(
        wall_s=round(wall, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        succeeded=report.succeeded,
        failed=report.failed,
        exit_code=os.waitstatus_to_exitcode(status),
        peak_rss_mb=round((report.peak_rss_kib or usage.ru_maxrss) / 1024, 1),
        errors=report.errors,
        figures=report.figures,
        server=stats,
        progress=progress((t - started for t in report.completions), scenario.jobs),
    )


def run_scenario(
    scenario: Scenario, contenders: list[str], work: Path, *, quick: bool = False
) -> list[ContenderResult]:
    """The runs of the scenario's contenders among ``contenders``, in the scenario's order."""
    inputs = (
        *make_inputs(work / "inputs", scenario.faces, scenario.refs),
        make_masks(work / "inputs", scenario.masks),
    )
    chosen = []
    for contender in scenario.contenders:
        if contender not in contenders:
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
    done: dict[str, list[RunSummary]] = {contender: [] for contender in chosen}
    commands = [scenario.emulator_command(contender) for contender, _ in schedule]
    # A fresh emulator for each run, so none inherits another's tasks or counters.
    with emulators(commands, logs, settle=not quick) as fresh:
        for (contender, round_), emulator in zip(schedule, fresh, strict=True):
            label = f"{contender} #{round_ + 1}" if scenario.repeats > 1 else contender
            print(f"  {label} ...", end="", flush=True)
            run = run_contender(scenario, contender, inputs, work / f"run-{round_}", emulator)
            print(
                f" {run.wall_s}s, {run.succeeded}/{scenario.jobs} ok, {run.cpu_s} CPU s",
                flush=True,
            )
            done[contender].append(run)
    return [
        ContenderResult(contender, runs, list(CONTENDERS[contender].emulator_args))
        for contender, runs in done.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario at small scale")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--contender", action="append", choices=sorted(CONTENDERS))
    parser.add_argument(
        "--results",
        type=Path,
        help=f"folder for the JSON and plots (and BENCHMARKS.md, unless it is {RESULTS}); default"
        f" {RESULTS} or, with --quick, {RESULTS / 'quick'}",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="run nothing: write the table, plots and README figures from the results folder",
    )
    args = parser.parse_args(argv)
    results_dir: Path = args.results or (RESULTS / "quick" if args.quick else RESULTS)
    if not args.report:
        results_dir.mkdir(parents=True, exist_ok=True)
        run_all(args, results_dir, argv)
    report(results_dir, quick=args.quick, redraw=args.report)
    return 0


def run_all(args: argparse.Namespace, results_dir: Path, argv: list[str] | None) -> None:
    """Run the chosen scenarios, writing each one's result file and plot as it ends."""
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    now = datetime.datetime.now()
    chosen = args.contender or list(CONTENDERS)
    with tempfile.TemporaryDirectory(prefix="novita-bench-") as tmp:
        for name in args.scenario or list(SCENARIOS):
            scenario = SCENARIOS[name].scaled(args.quick)
            print(f"{scenario.name}: {scenario.description} (N={scenario.jobs})", flush=True)
            started = time.monotonic()
            contenders = run_scenario(scenario, chosen, Path(tmp) / name, quick=args.quick)
            result = ScenarioResult(
                scenario=scenario.name,
                description=scenario.description,
                jobs=scenario.jobs,
                concurrency=scenario.concurrency,
                task_seconds=scenario.fastest_task(),
                rate=scenario.rate,
                ideal_wall_s=round(scenario.ideal_wall(), 3),
                emulator=scenario.emulator_command(),
                contenders=contenders,
                command=command.strip(),
                machine=machine,
                date=now.date().isoformat(),
                run=now.isoformat(" ", "seconds"),
                quick=args.quick,
                elapsed_s=round(time.monotonic() - started, 1),
            )
            write_result(result, results_dir / f"{name}.json")
            if not write_plot(result, results_dir / f"{name}.png"):
                # No picture is better than one of another run's figures.
                (results_dir / f"{name}.png").unlink(missing_ok=True)


def report(results_dir: Path, *, quick: bool, redraw: bool) -> None:
    """The table covers every scenario with results in the folder: those of this run and, when
    only some were run, the others' latest (each section then names its own run). Only the
    repository's full-scale results make its BENCHMARKS.md and the README's figures."""
    results = load_results(results_dir, list(SCENARIOS), quick=quick)
    if redraw:
        for result in results:
            write_plot(result, results_dir / f"{result.scenario}.png")
    into_repo = not quick and results_dir.resolve() == RESULTS.resolve()
    markdown = BENCHMARKS_MD if into_repo else results_dir / "BENCHMARKS.md"
    write_text_atomic(markdown, render_markdown(results))
    where = f"table in {markdown}"
    if into_repo:
        readme = with_readme_figures(README.read_text(encoding="utf-8"), results)
        write_text_atomic(README, readme)
        scale_out = with_scale_out_figures(SCALE_OUT.read_text(encoding="utf-8"), results)
        write_text_atomic(SCALE_OUT, scale_out)
        where += f", figures in {README} and {SCALE_OUT}"
    print(f"results in {results_dir}; {where}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
