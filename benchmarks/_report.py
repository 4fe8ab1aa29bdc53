"""BENCHMARKS.md from the result files: a table per scenario of each contender's medians, the
targets met or missed, and the notes a scenario exists to show."""

from __future__ import annotations

import textwrap
from pathlib import Path

from benchmarks._summary import (
    END_TO_DISK,
    MIXED_FIGURES,
    Medians,
    ScenarioResult,
    median_by_key,
    medians,
    write_whole,
)
from benchmarks._targets import (
    OURS,
    SDK,
    cpu_vs_floor,
    cross_checks,
    medians_of,
    scenario_checks,
    x_ideal,
)

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


def _mixed_table(result: ScenarioResult) -> list[str]:
    """What each contender's runs got right: images on disk at their task's size, and what each
    endpoint received (medians over the runs; the targets below take the worst run)."""
    lines = [
        "| contender | images right / expected | images/s | CPU ms/image | submissions by endpoint"
        " | duplicate submissions | unknown fields sent |",
        "|---|---|---|---|---|---|---|",
    ]
    for contender in result.contenders:
        m = medians(contender, result.jobs)
        servers = [run.server for run in contender.runs if run.server is not None]
        routes = median_by_key([server.get("submissions_by_route", {}) for server in servers])
        unknown = median_by_key(
            [
                {
                    f"{path} ({route})": n
                    for route, fields in server.get("unknown_fields", {}).items()
                    for path, n in fields.items()
                }
                for server in servers
            ]
        )
        expected, right = m.own.get("images_expected"), m.own.get("images_right")
        cpu = m["cpu_s"]
        cells = [
            contender.contender,
            f"{num(right, 0)} / {num(expected, 0)}",
            num(m.own.get("images_per_s"), 1),
            num(1000 * cpu / expected if cpu is not None and expected else None, 2),
            ", ".join(f"{_ENDPOINTS.get(r, r)} {n:g}" for r, n in routes.items()),
            num(m["duplicate_submissions"], 0),
            ", ".join(f"`{path}` x{n:g}" for path, n in unknown.items()) or "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    what = (
        "`images right`: the images the harness found on disk after the run, each at the size its"
        " task implies (txt2img and img2img their width x height, inpainting the input's,"
        " upscale the input's times its scale factor), opened outside the contender's process."
        " `images/s` divides them by the wall time; `CPU ms/image` divides the CPU by the images"
        " expected. The endpoint counts are the emulator's tasks created per route (InstantID's"
        " is `instant-id`)."
    )
    lines += ["", textwrap.fill(what, width=100)]
    ours, sdk = medians_of(result, OURS), medians_of(result, SDK)
    if ours is not None and sdk is not None and ours.complete and sdk.complete:
        lines += [
            "",
            f"- {SDK} / {OURS}: wall {_over(sdk, ours, 'wall_s')} x, CPU per job"
            f" {_over(sdk, ours, 'cpu_ms_per_job')} x, requests per job"
            f" {num(sdk['requests_per_job'], 2)} against {num(ours['requests_per_job'], 2)},"
            f" peak RSS {num(sdk['peak_rss_mb'], 1)} MB against {num(ours['peak_rss_mb'], 1)} MB",
        ]
    return lines


_ENDPOINTS = {"submit": "instant-id"}


def _over(a: Medians, b: Medians, figure: str) -> str:
    top, bottom = a[figure], b[figure]
    return num(top / bottom if top is not None and bottom else None, 2)


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
        if own := {k: v for k, v in m.own.items() if k not in END_TO_DISK + MIXED_FIGURES}:
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
        if result.scenario == "mixed":
            lines += ["", *_mixed_table(result)]
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
