"""BENCHMARKS.md tables and per-scenario plots from the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def requests_by_route(run: dict[str, Any]) -> dict[str, int]:
    """Requests the emulator counted per route, whatever their status."""
    by_status = run["server"].get("requests", {})
    return {route: sum(counts.values()) for route, counts in by_status.items()}


def _requests_per_job(run: dict[str, Any], jobs: int) -> float:
    routes = requests_by_route(run)
    counted = sum(routes.get(k, 0) for k in ("upload", "submit", "result", "image"))
    return round(counted / jobs, 2)


def _polls_per_task(run: dict[str, Any]) -> float | None:
    submits = run["server"].get("submissions")
    if not submits:
        return None
    return round(requests_by_route(run).get("result", 0) / submits, 2)


def write_markdown(results: list[dict[str, Any]], path: Path) -> None:
    lines = ["# Benchmarks", ""]
    if results:
        first = results[0]
        lines += [
            f"Machine: {first['machine']}. Date: {first['date']}.",
            f"Command: `{first['command']}`",
            "",
        ]
    for result in results:
        floor = next((r for r in result["runs"] if r["contender"] == "floor"), None)
        lines += [
            f"## {result['scenario']}",
            "",
            result["description"]
            + f" (N={result['jobs']}, ideal wall {result['ideal_wall_s']} s).",
            "",
            "| contender | wall s | x ideal | ok | lost | requests/job | polls/task |"
            " CPU s | CPU ms/job | x floor CPU | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in result["runs"]:
            ratio = f"{run['cpu_s'] / floor['cpu_s']:.2f}" if floor and floor["cpu_s"] else ""
            lines.append(
                f"| {run['contender']} | {run['wall_s']} | "
                f"{run['wall_s'] / result['ideal_wall_s']:.2f} | {run['succeeded']} | "
                f"{run['lost']} | {_requests_per_job(run, result['jobs'])} | "
                f"{_polls_per_task(run)} | {run['cpu_s']} | {run['cpu_ms_per_job']} | {ratio} | "
                f"{run['peak_rss_mb']} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def write_plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in result["runs"]:
        times = run["completions_s"]
        ax.step(times, range(1, len(times) + 1), where="post", label=run["contender"])
    ideal = result["ideal_wall_s"]
    ax.plot([result["task_seconds"], ideal], [0, result["jobs"]], "k--", label="ideal")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("completed jobs")
    ax.set_title(f"{result['scenario']} (N={result['jobs']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
