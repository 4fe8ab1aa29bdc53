"""BENCHMARKS.md tables and per-scenario plots from the results."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from benchmarks._targets import (
    cpu_vs_floor,
    cross_checks,
    polls_per_task,
    requests_per_job,
    scenario_checks,
    scenario_notes,
)
from novita_async._atomic import write_atomically

Result = dict[str, Any]


ANALYSIS = Path(__file__).with_name("ANALYSIS.md")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (the package's own temp-name-then-rename writer)."""
    write_atomically(path, [text.encode("utf-8")], fsync=False)


def load_results(folder: Path, names: list[str], *, quick: bool) -> list[Result]:
    """The results in ``folder`` of these scenarios (in this order) run at this scale."""
    results = []
    for name in names:
        path = folder / f"{name}.json"
        if path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
            if result.get("quick") == quick:
                results.append(result)
    return results


def _table(result: Result) -> list[str]:
    ideal = result["ideal_wall_s"]
    lines = [
        "| contender | wall s | x ideal | ok | lost | requests/job | polls/task |"
        " CPU s | CPU ms/job | x floor CPU/job | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        ratio = cpu_vs_floor(result, run)
        x_ideal = f"{run['wall_s'] / ideal:.2f}" if ideal else ""
        x_floor = f"{ratio:.2f}" if ratio is not None else ""
        lines.append(
            f"| {run['contender']} | {run['wall_s']} | {x_ideal} | {run['succeeded']} | "
            f"{run['lost']} | {requests_per_job(run, result['jobs'])} | "
            f"{polls_per_task(run)} | {run['cpu_s']} | {run['cpu_ms_per_job']} | "
            f"{x_floor} | {run['peak_rss_mb']} |"
        )
    repeated = [run for run in result["runs"] if run.get("repeats")]
    if repeated:
        lines += ["", "Runs repeated, interleaved, each against a fresh emulator; the table shows"
                  " the run with the median CPU:", ""]  # fmt: skip
        for run in repeated:
            cpu = ", ".join(f"{r['cpu_s']}" for r in run["repeats"])
            wall = ", ".join(f"{r['wall_s']}" for r in run["repeats"])
            lines.append(f"- {run['contender']}: CPU s {cpu}; wall s {wall}")
    return lines


def write_markdown(results: list[Result], path: Path) -> None:
    lines = ["# Benchmarks", ""]
    if results:
        first = results[0]
        lines += [
            f"Machine: {first['machine']}. Date: {first['date']}.",
            f"Command: `{first['command']}`",
            "",
        ]
        if first.get("quick"):
            lines += ["Quick run: small scale, the figures only show the harness works.", ""]
    for result in results:
        lines += [f"## {result['scenario']}", ""]
        if result["command"] != results[0]["command"]:
            lines += [f"Run on {result['date']} by `{result['command']}`.", ""]
        ideal = f", ideal wall {result['ideal_wall_s']} s" if result["ideal_wall_s"] else ""
        lines += [f"{result['description']} (N={result['jobs']}{ideal}).", "", *_table(result)]
        if checks := scenario_checks(result):
            label = " (not meaningful at quick scale)" if result.get("quick") else ""
            lines += ["", f"This package's targets{label}:", "", *(c.line() for c in checks)]
        if notes := scenario_notes(result):
            lines += ["", *notes]
        lines.append("")
    if checks := cross_checks(results):
        lines += ["## scale: memory from 10k to 100k jobs", "", *(c.line() for c in checks), ""]
    if not (results and results[0].get("quick")) and ANALYSIS.is_file():
        # The hand-written profile of the targets this package misses, kept beside the figures.
        lines += ["", ANALYSIS.read_text().strip(), ""]
    write_text_atomic(path, "\n".join(lines))


def write_plot(result: Result, path: Path) -> None:
    """Completed jobs over time per contender, with the ideal line (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in result["runs"]:
        times = run["completions_s"]
        ax.step([0, *times], range(len(times) + 1), where="post", label=run["contender"])
    ideal = result["ideal_wall_s"]
    ax.plot([result["task_seconds"], ideal], [0, result["jobs"]], "k--", label="ideal")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("completed jobs")
    ax.set_title(f"{result['scenario']} (N={result['jobs']})")
    ax.legend()
    fig.tight_layout()
    picture = io.BytesIO()
    try:
        fig.savefig(picture, dpi=90, format="png")
    finally:
        plt.close(fig)
    write_atomically(path, [picture.getvalue()], fsync=False)
