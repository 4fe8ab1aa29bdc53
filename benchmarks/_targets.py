"""This package's targets (issues 6, 11 and 14), checked against the medians of a scenario's runs:
what BENCHMARKS.md says was met or missed, and the ratios behind them."""

from __future__ import annotations

import attrs

from benchmarks._scenarios import WEBHOOKS, WEBHOOKS_DROPPED
from benchmarks._summary import Medians, ScenarioResult, medians

OURS = "novita-async"
SDK = "official-sdk"
FLOOR = "floor"
CPU_VS_FLOOR = 1.5
"""CPU per job at most this many times the bare aiohttp floor's, on throughput."""
WEBHOOK_REQUESTS = 2.1
"""Requests per job with webhooks, uploads aside: a submission and a download, and a poll for
one job in ten at most."""


def medians_of(result: ScenarioResult, contender: str) -> Medians | None:
    found = result.find(contender)
    return medians(found, result.jobs) if found else None


def x_ideal(result: ScenarioResult, figures: Medians) -> float | None:
    """Median wall / ideal wall, where every run did all the jobs the ideal is for."""
    wall = figures["wall_s"]
    if not figures.complete or not result.ideal_wall_s or wall is None:
        return None
    return wall / result.ideal_wall_s


def cpu_vs_floor(result: ScenarioResult, figures: Medians) -> float | None:
    """Median CPU per job / the floor's, where every run of both did every job: the same jobs on
    both sides (a contender that lost jobs spent its CPU on different work)."""
    floor = medians_of(result, FLOOR)
    if floor is None or not (figures.complete and floor.complete):
        return None
    ours, base = figures["cpu_ms_per_job"], floor["cpu_ms_per_job"]
    return ours / base if ours is not None and base else None


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


def scenario_checks(result: ScenarioResult) -> list[Check]:
    """This package's targets in one scenario (none where it did not run)."""
    if result.scenario == "webhooks":
        return webhook_checks(result)
    ours = medians_of(result, OURS)
    if ours is None:
        return []
    name = result.scenario
    if name == "throughput":
        return [
            Check("wall / ideal", x_ideal(result, ours), 1.10),
            Check("HTTP requests per job, uploads included", ours["requests_per_job"], 3.5),
            Check("CPU per job / the floor's", cpu_vs_floor(result, ours), CPU_VS_FLOOR),
        ]
    if name == "rate-limited":
        wall, least = ours["wall_s"], result.jobs / result.rate if result.rate else None
        ratio = wall / least if ours.complete and wall is not None and least else None
        return [Check("wall / (N/R)", ratio, 1.15), Check("failed jobs", ours["lost"], 0)]
    if name == "polling":
        return [Check("polls per task", ours["polls_per_task"], 2)]
    if name.startswith("scale-"):
        return [Check("peak RSS", ours["peak_rss_mb"], 150, unit=" MB")]
    if name == "mixed":
        return mixed_checks(result)
    if name == "big-image":
        growth = ours.own.get("rss_growth_mb")
        return [Check("RSS growth during the download", growth, 16, strict=True, unit=" MB")]
    return []


def worst(result: ScenarioResult, contender: str, figure: str) -> float | None:
    """The largest of a contender's own ``figure`` over its runs: a count that must be 0 in every
    run, which a median would let one bad run hide."""
    found = result.find(contender)
    values = [run.figures[figure] for run in found.runs if figure in run.figures] if found else []
    return max(values) if values else None


def worst_server(result: ScenarioResult, contender: str, counter: str) -> float | None:
    """The largest of one of the emulator's counters over a contender's runs."""
    found = result.find(contender)
    values = [run.counter(counter) for run in found.runs] if found else []
    recorded = [value for value in values if value is not None]
    return max(recorded) if recorded else None


def mixed_checks(result: ScenarioResult) -> list[Check]:
    """Issue 23's "done when", in every run of this package: every image on disk at the size its
    task implies, each endpoint receiving its jobs once, no field the API does not know."""
    if result.find(OURS) is None:
        return []
    return [
        Check(
            "images missing or of a wrong size, worst run", worst(result, OURS, "images_wrong"), 0
        ),
        Check(
            "submissions off one per job on some endpoint, worst run",
            worst(result, OURS, "routes_off"),
            0,
        ),
        Check(
            "duplicate submissions, worst run",
            worst_server(result, OURS, "duplicate_submissions"),
            0,
        ),
        Check("unknown fields sent, worst run", worst(result, OURS, "unknown_fields"), 0),
    ]


def webhook_checks(result: ScenarioResult) -> list[Check]:
    """Issue 14's goals: with webhooks, few requests, images on disk soon after each task's end,
    the wall time close to the ideal; with events lost, every job still ends."""
    checks = []
    if (hooks := medians_of(result, WEBHOOKS)) is not None:
        checks += [
            Check(
                "HTTP requests per job with webhooks, uploads aside",
                hooks["task_requests_per_job"],
                WEBHOOK_REQUESTS,
            ),
            Check(
                "task's end to its image on disk with webhooks, p95",
                hooks.own.get("end_to_disk_p95_ms"),
                50,
                strict=True,
                unit=" ms",
            ),
            Check("wall / ideal with webhooks", x_ideal(result, hooks), 1.05),
        ]
    if (dropped := medians_of(result, WEBHOOKS_DROPPED)) is not None:
        checks.append(Check("failed jobs with 10% of the events dropped", dropped["lost"], 0))
    return checks


def peak_rss(results: list[ScenarioResult], scenario: str) -> float | None:
    """This package's median peak RSS in ``scenario``."""
    result = next((r for r in results if r.scenario == scenario), None)
    ours = medians_of(result, OURS) if result else None
    return ours["peak_rss_mb"] if ours else None


def cross_checks(results: list[ScenarioResult]) -> list[Check]:
    if not any(r.scenario.startswith("scale-") for r in results):
        return []
    small, large = peak_rss(results, "scale-10k"), peak_rss(results, "scale-100k")
    ratio = large / small if small and large is not None else None
    return [Check("peak RSS at 100k jobs / at 10k jobs", ratio, 1.3)]
