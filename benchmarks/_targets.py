"""Figures derived from a scenario's results, and this package's targets (issue 6) checked
against them: what BENCHMARKS.md says was met or missed."""

from __future__ import annotations

from typing import Any

import attrs

OURS = "novita-async"
Result = dict[str, Any]


def requests_by_route(run: dict[str, Any]) -> dict[str, int]:
    """Requests the emulator counted per route, whatever their status."""
    by_status = run["server"].get("requests", {})
    return {route: sum(counts.values()) for route, counts in by_status.items()}


def requests_per_job(run: dict[str, Any], jobs: int) -> float:
    routes = requests_by_route(run)
    counted = sum(routes.get(k, 0) for k in ("upload", "submit", "result", "image"))
    return round(counted / jobs, 2)


def polls_per_task(run: dict[str, Any]) -> float | None:
    submits = run["server"].get("submissions")
    if not submits:
        return None
    return round(requests_by_route(run).get("result", 0) / int(submits), 2)


def find_run(result: Result, contender: str) -> dict[str, Any] | None:
    return next((r for r in result["runs"] if r["contender"] == contender), None)


def cpu_vs_floor(result: Result, run: dict[str, Any]) -> float | None:
    floor = find_run(result, "floor")
    if not floor or not floor["cpu_s"] or not floor["succeeded"]:
        return None
    # Per job done, so a floor that lost jobs is not made to look cheaper than it is.
    ours_per_job = float(run["cpu_s"]) / max(int(run["succeeded"]), 1)
    return ours_per_job / (float(floor["cpu_s"]) / int(floor["succeeded"]))


@attrs.frozen
class Check:
    """One target: ``value`` against ``limit`` (``value <= limit``, or ``<`` when strict)."""

    what: str
    value: float | None
    limit: float
    strict: bool = False
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value < self.limit if self.strict else self.value <= self.limit

    def line(self) -> str:
        sign = "<" if self.strict else "≤"
        shown = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        verdict = {True: "met", False: "**missed**", None: "not measured"}[self.met]
        return f"- {self.what}: {shown} (target {sign} {self.limit:g}{self.unit}): {verdict}"


def scenario_checks(result: Result) -> list[Check]:
    """This package's targets in one scenario (none where it did not run)."""
    ours = find_run(result, OURS)
    if ours is None:
        return []
    jobs, name = result["jobs"], result["scenario"]
    ideal = result["ideal_wall_s"]
    if name == "throughput":
        return [
            Check("wall / ideal", ours["wall_s"] / ideal if ideal else None, 1.10),
            Check("HTTP requests per job, uploads included", requests_per_job(ours, jobs), 3.5),
            Check("CPU per job / the floor's", cpu_vs_floor(result, ours), 1.3),
        ]
    if name == "rate-limited":
        floor_wall = jobs / result["rate"] if result.get("rate") else None
        return [
            Check("wall / (N/R)", ours["wall_s"] / floor_wall if floor_wall else None, 1.15),
            Check("failed jobs", float(ours["lost"]), 0),
        ]
    if name == "polling":
        return [Check("polls per task", polls_per_task(ours), 2)]
    if name.startswith("scale-"):
        return [Check("peak RSS", ours["peak_rss_mb"], 150, unit=" MB")]
    if name == "big-image":
        growth = ours["figures"].get("rss_growth_mb")
        return [Check("RSS growth during the download", growth, 16, strict=True, unit=" MB")]
    return []


def scale_ratio(results: list[Result]) -> float | None:
    """Peak RSS at 100k jobs / at 10k jobs, for this package."""
    by_name = {r["scenario"]: r for r in results}
    small, large = by_name.get("scale-10k"), by_name.get("scale-100k")
    ours_small = find_run(small, OURS) if small else None
    ours_large = find_run(large, OURS) if large else None
    if not ours_small or not ours_large or not ours_small["peak_rss_mb"]:
        return None
    return float(ours_large["peak_rss_mb"]) / float(ours_small["peak_rss_mb"])


def cross_checks(results: list[Result]) -> list[Check]:
    if not any(r["scenario"].startswith("scale-") for r in results):
        return []
    return [Check("peak RSS at 100k jobs / at 10k jobs", scale_ratio(results), 1.3)]


def scenario_notes(result: Result) -> list[str]:
    """Per-contender figures a scenario exists to show, beyond the table's columns."""
    name, jobs = result["scenario"], result["jobs"]
    notes = []
    if name == "faults":
        notes += [
            f"- {run['contender']}: completion {run['succeeded'] / jobs:.3f}, wall {run['wall_s']}"
            f" s, injected faults {sum(run['server'].get('faults', {}).values())},"
            f" duplicate submissions {run['server'].get('duplicate_submissions', 0)}"
            for run in result["runs"]
        ]
    if name == "rate-limited":
        notes += [
            f"- {run['contender']}: lost {run['lost']} of {jobs} jobs, "
            f"{run['server'].get('rate_limited', 0)} submissions refused with 429"
            for run in result["runs"]
        ]
    for run in result["runs"]:
        if run.get("figures"):
            shown = ", ".join(f"{k} {v:g}" for k, v in run["figures"].items())
            notes.append(f"- {run['contender']}: {shown}")
        if run["errors"]:
            shown = ", ".join(f"{k} x{v}" for k, v in sorted(run["errors"].items()))
            notes.append(f"- {run['contender']} failures: {shown}")
    return notes
