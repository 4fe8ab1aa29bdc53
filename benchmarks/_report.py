"""BENCHMARKS.md from the result files: a table per scenario of each contender's medians, the
targets met or missed, and the notes a scenario exists to show."""

from __future__ import annotations

import textwrap
from pathlib import Path

from benchmarks._summary import END_TO_DISK, Medians, ScenarioResult, medians, write_whole
from benchmarks._targets import cpu_vs_floor, cross_checks, scenario_checks, x_ideal

ANALYSIS = Path(__file__).with_name("ANALYSIS.md")
LEGEND = (
    "Every figure is the median over a contender's runs (the `runs` column: repeated contenders"
    " run interleaved, each run against a fresh emulator), each taken from its own values: the"
    " median wall time of the wall times, the median CPU of the CPU times. `CPU ms/job` and"
    " `requests/job` divide by the N jobs given, which the CPU and the requests were spent on,"
    " done or lost; `polls/task` divides the result requests by the tasks the emulator created."
    " `x ideal` and `x floor CPU/job` are shown only where every run (and the floor's) did every"
    " job, so that both sides of the ratio count the same jobs."
)
_COUNTS = {
    "faults_injected": "injected faults",
    "duplicate_submissions": "duplicate submissions",
    "refused_429": "submissions refused with 429",
}


def write_text_atomic(path: Path, text: str) -> None:
    write_whole(path, text.encode("utf-8"))


def num(value: float | None, digits: int) -> str:
    """A median as the table shows it ("" when not measured)."""
    return "" if value is None else f"{value:,.{digits}f}".replace(",", "")


def _table(result: ScenarioResult) -> list[str]:
    lines = [
        "| contender | runs | wall s | x ideal | ok | lost | requests/job | polls/task |"
        " CPU s | CPU ms/job | x floor CPU/job | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for contender in result.contenders:
        m = medians(contender, result.jobs)
        cells = [
            contender.contender,
            str(m.runs),
            num(m["wall_s"], 3),
            num(x_ideal(result, m), 2),
            num(m["succeeded"], 0 if m.runs % 2 else 1),
            num(m["lost"], 0 if m.runs % 2 else 1),
            num(m["requests_per_job"], 2),
            num(m["polls_per_task"], 2),
            num(m["cpu_s"], 3),
            num(m["cpu_ms_per_job"], 3),
            num(cpu_vs_floor(result, m), 2),
            num(m["peak_rss_mb"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    repeated = [c for c in result.contenders if len(c.runs) > 1]
    if repeated:
        lines += ["", "Each run, in run order:", ""]
        for contender in repeated:
            wall = ", ".join(f"{run.wall_s:.3f}" for run in contender.runs)
            cpu = ", ".join(f"{run.cpu_s:.3f}" for run in contender.runs)
            lines.append(f"- {contender.contender}: wall s {wall}; CPU s {cpu}")
    return lines


def _webhook_table(result: ScenarioResult) -> list[str]:
    """How each contender learnt of its tasks' ends, what that cost, and how soon it had them."""
    lines = [
        "| contender | requests/job, uploads aside | polls/task | webhook events | dropped |"
        " polls/dropped event | end to disk p50 ms | end to disk p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for contender in result.contenders:
        m = medians(contender, result.jobs)
        cells = [
            contender.contender,
            num(m["task_requests_per_job"], 2),
            num(m["polls_per_task"], 2),
            num(m["webhook_events"], 0 if m.runs % 2 else 1),
            num(m["webhooks_dropped"], 0 if m.runs % 2 else 1),
            num(m["polls_per_dropped_event"], 2),
            num(m.own.get("end_to_disk_p50_ms"), 1),
            num(m.own.get("end_to_disk_p95_ms"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    what = (
        "`end to disk`: from the moment the emulator ended a task to the moment its job's image"
        " was on disk (this package: its `SUCCEEDED` event, told as the image is renamed into"
        " place; the floor: after its rename), both Unix times on this machine; the 50th and"
        " 95th percentiles over a run's jobs, each the median over the runs. `polls/dropped"
        " event`: the result requests over the webhook events the emulator dropped."
    )
    return [*lines, "", textwrap.fill(what, width=100)]


def scenario_notes(result: ScenarioResult) -> list[str]:
    """Per-contender medians a scenario exists to show, beyond the table's columns."""
    name, jobs = result.scenario, result.jobs
    notes = []
    for contender in result.contenders:
        m, who = medians(contender, jobs), contender.contender
        if name == "faults":
            notes.append(
                f"- {who}: completion {(m['succeeded'] or 0) / jobs:.3f}"
                + _counts(m, "faults_injected", "duplicate_submissions")
            )
        if name == "rate-limited":
            lost = f"- {who}: lost {num(m['lost'], 0)} of {jobs} jobs"
            notes.append(lost + _counts(m, "refused_429"))
        if contender.emulator_args:
            notes.append(f"- {who}: its emulators also had `{' '.join(contender.emulator_args)}`")
        if own := {k: v for k, v in m.own.items() if k not in END_TO_DISK}:
            notes.append(f"- {who}: " + ", ".join(f"{k} {v:g}" for k, v in own.items()))
        if m.errors:
            shown = ", ".join(f"{k} x{v:g}" for k, v in sorted(m.errors.items()))
            notes.append(f"- {who} failures: {shown}")
        if m.detailed < m.runs:
            notes.append(
                f"- {who}: peak RSS, requests/job and polls/task are of the {m.detailed} of"
                f" {m.runs} runs that recorded them (results converted from before every run"
                " was summarised)"
            )
    return notes


def _counts(m: Medians, *names: str) -> str:
    return "".join(f", {num(m[name], 0)} {_COUNTS[name]}" for name in names if m[name] is not None)


def render_markdown(results: list[ScenarioResult]) -> str:
    lines = ["# Benchmarks", ""]
    runs = list(dict.fromkeys((result.run, result.command) for result in results))
    if results:
        first = results[0]
        lines += [f"Machine: {first.machine}. Date: {first.date}.", ""]
        if len(runs) == 1:
            lines += [f"Command: `{first.command}`", ""]
        else:
            lines += [
                f"These results come from {len(runs)} runs of the harness, not one full run:"
                " each section names its own.",
                "",
            ]
        if first.quick:
            lines += ["Quick run: small scale, the figures only show the harness works.", ""]
        lines += [textwrap.fill(LEGEND, width=100), ""]
    for result in results:
        lines += [f"## {result.scenario}", ""]
        if len(runs) > 1:
            lines += [f"Run {result.run}, by `{result.command}`.", ""]
        ideal = f", ideal wall {result.ideal_wall_s:g} s" if result.ideal_wall_s else ""
        what = result.description[:1].upper() + result.description[1:]
        lines += [f"{what} (N={result.jobs}{ideal}).", "", *_table(result)]
        if result.scenario == "webhooks":
            lines += ["", *_webhook_table(result)]
        if checks := scenario_checks(result):
            label = " (not meaningful at quick scale)" if result.quick else ""
            lines += ["", f"This package's targets{label}:", "", *(c.line() for c in checks)]
        if notes := scenario_notes(result):
            lines += ["", *notes]
        lines.append("")
    if checks := cross_checks(results):
        lines += ["## scale: memory from 10k to 100k jobs", "", *(c.line() for c in checks), ""]
    if not (results and results[0].quick) and ANALYSIS.is_file():
        # How the figures are made and what they mean, written by hand, with no figures of its own.
        lines += [ANALYSIS.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)
