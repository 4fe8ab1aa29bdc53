"""What a result file holds, and the medians the report prints.

A result file (``benchmarks/results/<scenario>.json``) is one :class:`ScenarioResult`: the
scenario's settings and, per contender, one :class:`RunSummary` per run, in run order. A summary
holds a run's own totals and the emulator's counters, never per-job data: the completion times a
contender reports are reduced to :attr:`RunSummary.progress`, a hundred points at most, and the
moments each task's images were on disk to percentiles of their lag behind the task's end
(:func:`end_to_disk`).

Every figure the report prints for a contender is the median over its runs, each figure taken
from its own values (the median wall time from the wall times, the median CPU from the CPU
times), so a figure never comes from whichever run had the median of another.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import cattrs

from novita_async.emulator import V3_ROUTES

_converter = cattrs.Converter(forbid_extra_keys=True)  # an older format is refused
ROUTES = ("upload", "submit", *V3_ROUTES, "result", "image")
"""The routes a batch uses: the requests counted per job (``submit`` is InstantID's, the v3
image tasks each have their own)."""
PER_TASK = ("submit", *V3_ROUTES, "result", "image")
"""The routes a task's requests go to (uploads are per file, shared by many jobs)."""
PROGRESS_POINTS = 100
MIXED_FIGURES = (
    "images_expected",
    "images_right",
    "images_wrong",
    "routes_off",
    "unknown_fields",
    "images_per_s",
)
"""The figures the harness adds to a mixed-task run (``benchmarks._mixed.check_outputs``)."""
END_TO_DISK = ("end_to_disk_p50_ms", "end_to_disk_p95_ms", "end_to_disk_jobs")
"""The figures :func:`end_to_disk` makes, in :attr:`RunSummary.figures`."""


@attrs.frozen
class RunSummary:
    """One run of one contender, against its own fresh emulator."""

    wall_s: float
    """Spawn to exit of the contender's process."""
    cpu_s: float
    """User + system CPU of the contender's process, start-up included."""
    succeeded: int
    failed: int
    exit_code: int | None = None
    peak_rss_mb: float | None = None
    errors: dict[str, int] = attrs.field(factory=dict)
    """Failed jobs by reason."""
    figures: dict[str, float] = attrs.field(factory=dict)
    """A contender's own measurements, by name (the big-image download's memory)."""
    server: dict[str, Any] | None = None
    """The emulator's counters after the run (``EmulatorStats.to_dict()``)."""
    progress: list[tuple[int, float]] | None = None
    """(jobs done, seconds since the start) at each hundredth of the jobs, as far as they got
    (None: not recorded, in results converted from an older format)."""

    def requests(self, routes: Iterable[str] = ROUTES) -> int | None:
        """Requests the emulator counted on these routes, whatever their outcome."""
        if self.server is None:
            return None
        by_route = self.server.get("requests", {})
        return sum(sum(by_route.get(route, {}).values()) for route in routes)

    def counter(self, name: str) -> float | None:
        """One of the emulator's counters; a dict of counters (``faults``) is summed."""
        if self.server is None:
            return None
        value = self.server.get(name, 0)
        return float(sum(value.values()) if isinstance(value, dict) else value)

    def webhooks(self, name: str) -> float | None:
        """One of the emulator's webhook counters (``events``, ``delivered``, ``dropped``...)."""
        if self.server is None or "webhooks" not in self.server:
            return None
        return float(self.server["webhooks"].get(name, 0))


@attrs.frozen
class ContenderResult:
    contender: str
    runs: list[RunSummary]
    emulator_args: list[str] = attrs.field(factory=list)
    """Options its emulators had on top of the scenario's (``ScenarioResult.emulator``)."""


@attrs.frozen
class ScenarioResult:
    scenario: str
    description: str
    jobs: int
    concurrency: int
    task_seconds: float
    rate: float | None
    ideal_wall_s: float
    emulator: list[str]
    contenders: list[ContenderResult]
    command: str
    machine: str
    date: str
    run: str
    """Which run of the harness produced this file (its start time), so a report can tell
    results of one full run from results put together from several."""
    quick: bool = False
    elapsed_s: float | None = None
    """The scenario's time in the harness, emulator start-ups included."""

    def find(self, contender: str) -> ContenderResult | None:
        return next((c for c in self.contenders if c.contender == contender), None)


def progress(completions: Iterable[float], jobs: int) -> list[tuple[int, float]]:
    """From the seconds since the start at which each job completed: (jobs done, seconds) at
    each hundredth of ``jobs``, as far as the completions go."""
    times = sorted(completions)
    levels = sorted({math.ceil(k * jobs / PROGRESS_POINTS) for k in range(1, PROGRESS_POINTS + 1)})
    return [(done, round(times[done - 1], 3)) for done in levels if done <= len(times)]


def end_to_disk(on_disk: dict[str, float], task_ends: dict[str, float]) -> dict[str, float]:
    """From when each task's images were on disk and when the emulator ended it (both Unix times,
    one machine's clock): the lag's 50th and 95th percentiles in ms (nearest rank), and over how
    many tasks; nothing if no task is in both."""
    lags = sorted(saved - task_ends[task] for task, saved in on_disk.items() if task in task_ends)
    if not lags:
        return {}

    def percentile(p: int) -> float:
        return round(1000 * lags[max(math.ceil(p / 100 * len(lags)) - 1, 0)], 1)

    return dict(zip(END_TO_DISK, (percentile(50), percentile(95), len(lags)), strict=True))


def median_progress(runs: list[RunSummary]) -> list[tuple[int, float]]:
    """The median time to each level of jobs done; a run that never got there counts as never,
    so a level shows only where most runs reached it."""
    at = [dict(run.progress) for run in runs if run.progress is not None]
    levels = sorted({done for points in at for done in points})
    medians = ((done, statistics.median(p.get(done, math.inf) for p in at)) for done in levels)
    return [(done, seconds) for done, seconds in medians if math.isfinite(seconds)]


@attrs.frozen
class Medians:
    """A contender's figures in one scenario, each the median over its runs."""

    runs: int
    detailed: int
    """Runs that recorded more than wall, CPU and jobs done: all of them, except in results
    converted from before every run was summarised."""
    complete: bool
    """Every run finished every job: only then do ratios to the ideal or the floor count the
    same jobs on both sides."""
    figures: dict[str, float | None]
    errors: dict[str, float]
    own: dict[str, float]
    """The contender's own measurements (``RunSummary.figures``)."""

    def __getitem__(self, name: str) -> float | None:
        return self.figures[name]


# Each figure of a run; the count in a ratio's denominator is the one its numerator covers.
RUN_FIGURES: dict[str, Callable[[RunSummary, int], float | None]] = {
    "wall_s": lambda run, jobs: run.wall_s,
    "cpu_s": lambda run, jobs: run.cpu_s,
    # The process's CPU covers all the jobs it was given, done or failed.
    "cpu_ms_per_job": lambda run, jobs: 1000 * run.cpu_s / jobs,
    "succeeded": lambda run, jobs: run.succeeded,
    "lost": lambda run, jobs: jobs - run.succeeded,
    "peak_rss_mb": lambda run, jobs: run.peak_rss_mb,
    # Requests made for all the jobs given, done or failed.
    "requests_per_job": lambda run, jobs: _ratio(run.requests(), jobs),
    "task_requests_per_job": lambda run, jobs: _ratio(run.requests(PER_TASK), jobs),
    # Result requests over the tasks the emulator created: polls are only made for those.
    "polls_per_task": lambda run, _: _ratio(run.requests(["result"]), run.counter("submissions")),
    "faults_injected": lambda run, jobs: run.counter("faults"),
    "duplicate_submissions": lambda run, jobs: run.counter("duplicate_submissions"),
    "refused_429": lambda run, jobs: run.counter("rate_limited"),
    "webhook_events": lambda run, _: run.webhooks("events"),
    "webhooks_dropped": lambda run, _: run.webhooks("dropped"),
    # What a lost event costs: the polls made, over the events lost (None if none was).
    "polls_per_dropped_event": lambda run, _: _ratio(
        run.requests(["result"]), run.webhooks("dropped")
    ),
}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the values recorded (None: none was)."""
    recorded = [v for v in values if v is not None]
    return statistics.median(recorded) if recorded else None


def median_by_key(dicts: list[dict[str, Any]]) -> dict[str, float]:
    """Per key, the median over all the dicts, a missing key counting as 0."""
    keys = sorted({key for d in dicts for key in d})
    return {key: statistics.median(float(d.get(key, 0)) for d in dicts) for key in keys}


def medians(contender: ContenderResult, jobs: int) -> Medians:
    runs = contender.runs
    return Medians(
        runs=len(runs),
        detailed=sum(run.server is not None for run in runs),
        complete=all(run.succeeded == jobs for run in runs),
        figures={
            name: _median(figure(run, jobs) for run in runs) for name, figure in RUN_FIGURES.items()
        },
        errors={k: v for k, v in median_by_key([run.errors for run in runs]).items() if v},
        own=median_by_key([run.figures for run in runs]),
    )


def load_result(path: Path) -> ScenarioResult:
    return _converter.structure(json.loads(path.read_text(encoding="utf-8")), ScenarioResult)


def write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a reader never finds half a result file or table."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_bytes(data)
    os.replace(part, path)


def write_result(result: ScenarioResult, path: Path) -> None:
    """Indented, with each run on one line: a reader can scan the runs, a diff follows them."""
    data = _converter.unstructure(result)
    runs: dict[str, str] = {}
    for contender in data["contenders"]:
        for i, run in enumerate(contender["runs"]):
            contender["runs"][i] = key = f"@run {len(runs)}@"
            runs[json.dumps(key)] = json.dumps(run)
    text = json.dumps(data, indent=1)
    for key, run in runs.items():
        text = text.replace(key, run, 1)
    write_whole(path, (text + "\n").encode("utf-8"))


def load_results(folder: Path, names: Iterable[str], *, quick: bool) -> list[ScenarioResult]:
    """The results in ``folder`` of these scenarios (in this order) run at this scale."""
    paths = [folder / f"{name}.json" for name in names]
    found = [load_result(path) for path in paths if path.is_file()]
    return [result for result in found if result.quick == quick]
